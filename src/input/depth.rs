//! The product's depth: the control image a depth ControlNet reads (docs/METHOD.md §6).
//!
//! A product photo carries no depth, so it is estimated from the mask's shape: the product is
//! taken to be a rounded solid whose thickness grows with the distance to its silhouette, like
//! a sphere seen head-on (z = √(R² − r²), with e = R − r the distance to the edge):
//!
//! `depth(p) = a(p) · (½ + ½ √(1 − (1 − e(p)/e_max)²))`, and 0 outside the product,
//!
//! where a is the product's alpha, e(p) the Euclidean distance from p to the nearest pixel
//! outside the product, and e_max its largest value. Near is bright, as in MiDaS-style depth
//! maps: the silhouette sits at ½, well in front of the far background (0), and the thickest
//! point at 1. Procedural training products use their rendered depth instead.

/// Pseudo-depth in [0, 1] for a `w × h` alpha mask (row-major, 1 = product).
pub fn pseudo_depth(alpha: &[f32], w: usize, h: usize) -> Vec<f32> {
    assert_eq!(alpha.len(), w * h, "mask must be {w}×{h}");
    let inside: Vec<bool> = alpha.iter().map(|&a| a > 0.5).collect();
    let dist = distance_to_outside(&inside, w, h);
    let e_max = dist.iter().copied().fold(0.0f32, f32::max);
    if e_max == 0.0 {
        return vec![0.0; w * h];
    }
    alpha
        .iter()
        .zip(&dist)
        .map(|(&a, &e)| {
            if e == 0.0 {
                return 0.0;
            }
            let s = 1.0 - e / e_max;
            a.clamp(0.0, 1.0) * (0.5 + 0.5 * (1.0 - s * s).max(0.0).sqrt())
        })
        .collect()
}

/// Euclidean distance from each pixel inside to the nearest pixel outside (0 outside), with
/// the image border counting as outside. Exact: Felzenszwalb and Huttenlocher's separable
/// squared-distance transform, rows then columns.
fn distance_to_outside(inside: &[bool], w: usize, h: usize) -> Vec<f32> {
    // Squared distances, with one ring of "outside" around the image so that products
    // touching the border still have an edge there.
    let (pw, ph) = (w + 2, h + 2);
    let big = ((pw * pw + ph * ph) as f64) * 4.0;
    let mut d: Vec<f64> = vec![0.0; pw * ph];
    for y in 0..h {
        for x in 0..w {
            if inside[y * w + x] {
                d[(y + 1) * pw + x + 1] = big;
            }
        }
    }
    let mut line = Vec::new();
    for y in 0..ph {
        line.clear();
        line.extend_from_slice(&d[y * pw..(y + 1) * pw]);
        let out = squared_distance_1d(&line);
        d[y * pw..(y + 1) * pw].copy_from_slice(&out);
    }
    for x in 0..pw {
        line.clear();
        line.extend((0..ph).map(|y| d[y * pw + x]));
        for (y, v) in squared_distance_1d(&line).into_iter().enumerate() {
            d[y * pw + x] = v;
        }
    }
    let mut out = vec![0f32; w * h];
    for y in 0..h {
        for x in 0..w {
            out[y * w + x] = d[(y + 1) * pw + x + 1].sqrt() as f32;
        }
    }
    out
}

/// min_q (f(q) + (p − q)²) for every p: the lower envelope of parabolas.
fn squared_distance_1d(f: &[f64]) -> Vec<f64> {
    let n = f.len();
    let mut v = vec![0usize; n];
    let mut z = vec![0f64; n + 1];
    let mut k = 0;
    z[0] = f64::NEG_INFINITY;
    z[1] = f64::INFINITY;
    let intersection =
        |q: usize, p: usize| ((f[q] + (q * q) as f64) - (f[p] + (p * p) as f64)) / (2.0 * (q as f64 - p as f64));
    for q in 1..n {
        // z[0] = −∞ ends the loop at k = 0 at the latest (every f is finite).
        let mut s = intersection(q, v[k]);
        while s <= z[k] {
            k -= 1;
            s = intersection(q, v[k]);
        }
        k += 1;
        v[k] = q;
        z[k] = s;
        z[k + 1] = f64::INFINITY;
    }
    let mut out = vec![0f64; n];
    let mut k = 0;
    for (q, o) in out.iter_mut().enumerate() {
        while z[k + 1] < q as f64 {
            k += 1;
        }
        let p = v[k];
        *o = (q as f64 - p as f64).powi(2) + f[p];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn square(w: usize, h: usize, x0: usize, y0: usize, side: usize) -> Vec<f32> {
        let mut m = vec![0.0; w * h];
        for y in y0..y0 + side {
            for x in x0..x0 + side {
                m[y * w + x] = 1.0;
            }
        }
        m
    }

    #[test]
    fn distances_are_euclidean_and_exact() {
        // A 5×5 square: distances to the nearest outside pixel are 1 at the rim, 2 one in,
        // 3 at the centre (Chebyshev rings are Euclidean here, along the axes).
        let inside: Vec<bool> = square(7, 7, 1, 1, 5).iter().map(|&v| v > 0.5).collect();
        let d = distance_to_outside(&inside, 7, 7);
        assert_eq!(d[3 * 7 + 3], 3.0);
        assert_eq!(d[2 * 7 + 3], 2.0);
        assert_eq!(d[7 + 1], 1.0);
        assert_eq!(d[0], 0.0);
        // Against brute force on an irregular shape touching the border.
        let (w, h) = (9, 6);
        let inside: Vec<bool> = (0..w * h).map(|i| (i * 7 + i / 3) % 5 != 0).collect();
        let d = distance_to_outside(&inside, w, h);
        for y in 0..h {
            for x in 0..w {
                let mut best = f32::INFINITY;
                for yy in -1..=h as i64 {
                    for xx in -1..=w as i64 {
                        let out = xx < 0
                            || yy < 0
                            || xx >= w as i64
                            || yy >= h as i64
                            || !inside[yy as usize * w + xx as usize];
                        if out {
                            best = best.min((((xx - x as i64).pow(2) + (yy - y as i64).pow(2)) as f32).sqrt());
                        }
                    }
                }
                let want = if inside[y * w + x] { best } else { 0.0 };
                assert!((d[y * w + x] - want).abs() < 1e-5, "({x},{y}): {} vs {want}", d[y * w + x]);
            }
        }
    }

    #[test]
    fn depth_is_a_rounded_solid_in_front_of_the_background() {
        let m = square(9, 9, 2, 2, 5);
        let d = pseudo_depth(&m, 9, 9);
        assert_eq!(d[0], 0.0, "background is far");
        assert_eq!(d[4 * 9 + 4], 1.0, "the thickest point is nearest");
        let rim = d[2 * 9 + 4];
        assert!((0.5..0.9).contains(&rim), "the silhouette is in front of the background: {rim}");
        assert!(d[3 * 9 + 4] > rim && d[3 * 9 + 4] < 1.0);
        // Symmetric like the square.
        assert_eq!(d[4 * 9 + 2], rim);
        assert_eq!(d[6 * 9 + 4], rim);
    }

    #[test]
    fn empty_and_soft_masks() {
        assert!(pseudo_depth(&[0.0; 16], 4, 4).iter().all(|&v| v == 0.0));
        // A soft (0.8) product is scaled by its alpha.
        let m: Vec<f32> = square(9, 9, 2, 2, 5).iter().map(|v| v * 0.8).collect();
        assert!((pseudo_depth(&m, 9, 9)[4 * 9 + 4] - 0.8).abs() < 1e-6);
    }
}
