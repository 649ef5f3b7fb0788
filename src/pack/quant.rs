//! Block quantisation of pack weights (`q8`, `q4`): smaller downloads for the browser.
//!
//! A quantised tensor keeps its name; its values are stored in blocks of 32 consecutive
//! elements (row-major order), each with one f16 scale under `<name>.q_scale`:
//! - `q8`: `I8` values, the tensor's own shape; w ≈ q · s with s = max|w| / 127.
//! - `q4`: `U8` bytes of shape `[n / 2]`, two values per byte (low nibble first), each
//!   q + 8 with q ∈ [−8, 7] (stored as 0..15); w ≈ q · s with s near max|w| / 7, the block's
//!   least-squares choice ([`quantize_q4`]).
//!
//! This is the symmetric per-block scheme of GGML's Q8_0/Q4_0 and of burn's `Q8S`/`Q4S`
//! block-32 quantisation. Tensors whose element count is not a multiple of 32, and small
//! tensors (norms, biases), stay in the pack's float type.
//! Loading either expands them to f32 or keeps the blocks on the device as burn's own
//! block-quantised tensors (`crate::pack::weights::QuantizedWeights`).

use half::f16;

/// Elements per quantisation block.
pub const BLOCK: usize = 32;

/// Suffix of the scale tensor that accompanies a quantised tensor.
pub const SCALE_SUFFIX: &str = ".q_scale";

/// Whether a tensor of `n` elements is stored quantised (the rest stay float).
pub fn quantizable(n: usize) -> bool {
    n.is_multiple_of(BLOCK) && n >= 4096
}

fn block_scale(block: &[f32], max_q: f32) -> f16 {
    let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
    f16::from_f32(max / max_q)
}

/// `q8` values and per-block scales.
pub fn quantize_q8(values: &[f32]) -> (Vec<i8>, Vec<f16>) {
    assert!(values.len().is_multiple_of(BLOCK), "q8 needs a multiple of {BLOCK} values");
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(values.len() / BLOCK);
    for block in values.chunks_exact(BLOCK) {
        let s = block_scale(block, 127.0);
        let sf = s.to_f32();
        for &v in block {
            q.push(if sf == 0.0 { 0 } else { (v / sf).round().clamp(-127.0, 127.0) as i8 });
        }
        scales.push(s);
    }
    (q, scales)
}

/// `q4` bytes (two values each) and per-block scales.
///
/// With 16 levels the scale matters: max|w| / 7 keeps the block's largest value exact but leaves
/// the outer levels nearly empty for the bell-shaped rest. Each block takes, of 23 scales from
/// 0.6 to 1.15 × max|w| / 7 (the f16 that is stored), the one with the least squared error
/// (the q4 text encoder's outputs moved 11–14 % less; BENCHMARKS.md 2026-12-07). The format is
/// unchanged: any scale reads back the same way.
pub fn quantize_q4(values: &[f32]) -> (Vec<u8>, Vec<f16>) {
    assert!(values.len().is_multiple_of(BLOCK), "q4 needs a multiple of {BLOCK} values");
    let code = |v: f32, s: f32| -> i32 { if s == 0.0 { 0 } else { (v / s).round().clamp(-8.0, 7.0) as i32 } };
    let mut packed = Vec::with_capacity(values.len() / 2);
    let mut scales = Vec::with_capacity(values.len() / BLOCK);
    for block in values.chunks_exact(BLOCK) {
        let max = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let error = |s: f32| -> f32 { block.iter().map(|&v| (code(v, s) as f32 * s - v).powi(2)).sum() };
        let mut best = f16::from_f32(max / 7.0);
        let mut best_error = error(best.to_f32());
        for i in 0..23 {
            let candidate = f16::from_f32(max / 7.0 * (0.6 + 0.025 * i as f32));
            let e = error(candidate.to_f32());
            if e < best_error {
                (best, best_error) = (candidate, e);
            }
        }
        let sf = best.to_f32();
        for pair in block.chunks_exact(2) {
            packed.push((code(pair[0], sf) + 8) as u8 | (((code(pair[1], sf) + 8) as u8) << 4));
        }
        scales.push(best);
    }
    (packed, scales)
}

/// Dequantises `q8` bytes; `None` when the sizes do not agree.
pub fn dequantize_q8(q: &[u8], scales: &[f16]) -> Option<Vec<f32>> {
    if q.len() != scales.len() * BLOCK {
        return None;
    }
    Some(
        q.chunks_exact(BLOCK)
            .zip(scales)
            .flat_map(|(block, s)| {
                let s = s.to_f32();
                block.iter().map(move |&b| (b as i8) as f32 * s)
            })
            .collect(),
    )
}

/// Dequantises `q4` bytes; `None` when the sizes do not agree.
pub fn dequantize_q4(packed: &[u8], scales: &[f16]) -> Option<Vec<f32>> {
    if packed.len() * 2 != scales.len() * BLOCK {
        return None;
    }
    Some(
        packed
            .chunks_exact(BLOCK / 2)
            .zip(scales)
            .flat_map(|(block, s)| {
                let s = s.to_f32();
                block.iter().flat_map(move |&b| [((b & 0xf) as i32 - 8) as f32 * s, ((b >> 4) as i32 - 8) as f32 * s])
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(n: usize) -> Vec<f32> {
        (0..n).map(|i| ((i * 7919) % 201) as f32 / 100.0 - 1.0).collect()
    }

    #[test]
    fn q8_round_trip_error_is_within_half_a_step() {
        let v = ramp(4096);
        let (q, s) = quantize_q8(&v);
        let bytes: Vec<u8> = q.iter().map(|&x| x as u8).collect();
        let back = dequantize_q8(&bytes, &s).unwrap();
        for (i, (a, b)) in v.iter().zip(&back).enumerate() {
            let step = s[i / BLOCK].to_f32();
            assert!((a - b).abs() <= 0.5 * step + 1e-3 * a.abs(), "{i}: {a} vs {b}");
        }
    }

    #[test]
    fn q4_packs_low_nibble_first_and_round_trips() {
        // One block whose values are whole numbers in [-8, 7]: the scale 1 stores it exactly
        // (max|w| / 7 would not: 7 → 6.125 steps).
        let mut v = vec![0f32; BLOCK];
        v[0] = -8.0;
        v[1] = 7.0;
        v[2] = 3.0;
        let (p, s) = quantize_q4(&v);
        assert_eq!(p.len(), BLOCK / 2);
        assert_eq!(s[0].to_f32(), 1.0);
        // -8 → code 0, 7 → code 15, low nibble first.
        assert_eq!(p[0], 15 << 4);
        assert_eq!(dequantize_q4(&p, &s).unwrap(), v);
        let v = ramp(4096);
        let (p, s) = quantize_q4(&v);
        let back = dequantize_q4(&p, &s).unwrap();
        for (i, (a, b)) in v.iter().zip(&back).enumerate() {
            let step = s[i / BLOCK].to_f32();
            // Within half a step, except a clipped value, which is still within 1.5 steps.
            assert!((a - b).abs() <= 1.5 * step + 1e-3, "{i}: {a} vs {b}");
        }
    }

    #[test]
    fn q4_scale_search_beats_absmax_scaling() {
        // Bell-shaped values, as weights are: the chosen scales' error is no larger in any block
        // than max|w| / 7's, and clearly smaller overall.
        let mut state = 12345u32;
        let mut uniform = || {
            state = state.wrapping_mul(1664525).wrapping_add(1013904223);
            (state >> 8) as f32 / (1u32 << 24) as f32
        };
        let v: Vec<f32> = (0..BLOCK * 256).map(|_| (0..4).map(|_| uniform()).sum::<f32>() - 2.0).collect();
        let (p, s) = quantize_q4(&v);
        let back = dequantize_q4(&p, &s).unwrap();
        let (mut searched, mut absmax) = (0f32, 0f32);
        for (block, got) in v.chunks_exact(BLOCK).zip(back.chunks_exact(BLOCK)) {
            let a = f16::from_f32(block.iter().fold(0f32, |m, x| m.max(x.abs())) / 7.0).to_f32();
            let e_abs: f32 = block.iter().map(|&x| ((x / a).round().clamp(-8.0, 7.0) * a - x).powi(2)).sum();
            let e: f32 = block.iter().zip(got).map(|(x, y)| (x - y).powi(2)).sum();
            assert!(e <= e_abs + 1e-6, "{e} > {e_abs}");
            (searched, absmax) = (searched + e, absmax + e_abs);
        }
        assert!(searched < 0.9 * absmax, "{searched} vs {absmax}");
    }

    #[test]
    fn zero_blocks_and_size_mismatches() {
        let (q, s) = quantize_q8(&[0.0; BLOCK]);
        assert!(q.iter().all(|&x| x == 0) && s[0].to_f32() == 0.0);
        assert!(dequantize_q8(&[0; 31], &s).is_none());
        assert!(dequantize_q4(&[0; 15], &s).is_none());
        assert!(quantizable(4096) && !quantizable(4097) && !quantizable(320));
    }
}
