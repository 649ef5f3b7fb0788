//! Block quantisation of pack weights (`q8`, `q4`): smaller downloads for the browser.
//!
//! A quantised tensor keeps its name; its values are stored in blocks of 32 consecutive
//! elements (row-major order), each with one f16 scale under `<name>.q_scale`:
//! - `q8`: `I8` values, the tensor's own shape; w ≈ q · s with s = max|w| / 127.
//! - `q4`: `U8` bytes of shape `[n / 2]`, two values per byte (low nibble first), each
//!   q + 8 with q ∈ [−8, 7] (stored as 0..15); w ≈ q · s with s = max|w| / 7.
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
pub fn quantize_q4(values: &[f32]) -> (Vec<u8>, Vec<f16>) {
    assert!(values.len().is_multiple_of(BLOCK), "q4 needs a multiple of {BLOCK} values");
    let mut packed = Vec::with_capacity(values.len() / 2);
    let mut scales = Vec::with_capacity(values.len() / BLOCK);
    for block in values.chunks_exact(BLOCK) {
        let s = block_scale(block, 7.0);
        let sf = s.to_f32();
        let code = |v: f32| -> u8 { if sf == 0.0 { 8 } else { ((v / sf).round().clamp(-8.0, 7.0) as i32 + 8) as u8 } };
        for pair in block.chunks_exact(2) {
            packed.push(code(pair[0]) | (code(pair[1]) << 4));
        }
        scales.push(s);
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
        // One block with max |w| = 8, so s = 8/7.
        let mut v = vec![0f32; BLOCK];
        v[0] = -8.0;
        v[1] = 7.0;
        let (p, s) = quantize_q4(&v);
        assert_eq!(p.len(), BLOCK / 2);
        let sf = s[0].to_f32();
        assert!((sf - 8.0 / 7.0).abs() < 1e-3);
        // -8 / (8/7) = -7 → code 1; 7 / (8/7) = 6.125 → 6 → code 14.
        assert_eq!(p[0], 1 | (14 << 4));
        let back = dequantize_q4(&p, &s).unwrap();
        assert!((back[0] + 8.0).abs() < 1e-2 && (back[1] - 6.0 * sf).abs() < 1e-3);
        let v = ramp(4096);
        let (p, s) = quantize_q4(&v);
        let back = dequantize_q4(&p, &s).unwrap();
        for (i, (a, b)) in v.iter().zip(&back).enumerate() {
            assert!((a - b).abs() <= 0.5 * s[i / BLOCK].to_f32() + 1e-3, "{i}: {a} vs {b}");
        }
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
