//! Attention in one launch that never writes the score matrix: softmax(Q Kᵀ/√d) V per head,
//! read from and written to `[batch, tokens, heads × width]` as the projections make them.
//!
//! The stock GPU path splits the heads with a copy, runs burn's attention (or, where the
//! layers take cubek's `Gemm`, three ops: Q Kᵀ, softmax, P V, the scores a queries × keys
//! matrix per head written to memory and read twice), then merges the heads with another
//! copy. Here, as in FlashAttention, one cube of 64 units owns up to 64 × 16 queries of one
//! head, each unit a few of them ([`rows_per_unit`]), their rows (pre-scaled by 1/√d) and output
//! rows in registers. The cube walks the keys in blocks: its units stage a block of K and V rows
//! in shared memory, each unit scores its queries against the block, and folds the block into
//! its rows with the online softmax (the running maximum `m` and sum `l`; a row rescaled by
//! exp(m_old − m_new) when a block raises its maximum). Each row is divided by `l` at the end,
//! and multiplied by the prompt's weight λ and, for MEPA's image prompt, its region mask at that
//! query (docs/METHOD.md), so a region prompt's term needs no launch of its own.
//!
//! A block holds 8 keys ([`block_keys`]; fewer only where their rows would not fit 16 KiB of
//! shared memory, every WebGPU adapter's minimum). Heads wider than 256 (SD's VAE attends in one
//! 512-wide head) are declined: the layer runs its tensor ops there.

use burn::backend::wgpu::CubeTensor;
use burn::tensor::{DType, Shape};
use burn_cubecl::ops::numeric::empty_device_dtype;
use cubecl::prelude::*;

/// Units per cube; each holds [`rows_per_unit`] queries.
const UNITS: u32 = 64;

/// The widest head (query/key or value) the kernel takes: its row lives in registers.
pub const MAX_HEAD_WIDTH: usize = 256;

/// Stands in for −∞ in the running maximum: exp of it minus any real score is 0, with no
/// infinities to propagate NaNs.
const FAR_BELOW: f32 = -1.0e30;

/// One cube: `rows` × [`UNITS`] queries of one (batch, head) (`CUBE_POS_Y`) against every key.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
fn attention_kernel(
    q: &Tensor<f32>,
    k: &Tensor<f32>,
    v: &Tensor<f32>,
    mask: &Tensor<f32>,
    output: &mut Tensor<f32>,
    queries: u32,
    keys: u32,
    heads: u32,
    scale: f32,
    weight: f32,
    mask_batch_stride: u32,
    #[comptime] has_mask: bool,
    #[comptime] width: u32,
    #[comptime] value_width: u32,
    #[comptime] block: u32,
    #[comptime] rows: u32,
) {
    let batch = CUBE_POS_Y / heads;
    let head = CUBE_POS_Y % heads;
    let unit = UNIT_POS_X;
    // This unit's queries: `first + r · UNITS` for r < rows.
    let first = CUBE_POS_X * UNITS * rows + unit;

    // The queries, scaled, in registers (zeros past the last query: such a unit still stages
    // its share of every block).
    let mut q_rows = Array::<f32>::new(comptime!((rows * width) as usize));
    #[unroll]
    for r in 0..rows {
        let query = first + r * UNITS;
        let q_at = (batch * queries + query) * heads * width + head * width;
        #[unroll]
        for c in 0..width {
            let mut x = f32::new(0.0);
            if query < queries {
                x = q[(q_at + c) as usize] * scale;
            }
            q_rows[(r * width + c) as usize] = x;
        }
    }
    let mut out_rows = Array::<f32>::new(comptime!((rows * value_width) as usize));
    #[unroll]
    for i in 0..rows * value_width {
        out_rows[i as usize] = f32::new(0.0);
    }
    let mut running_max = Array::<f32>::new(comptime!(rows as usize));
    let mut running_sum = Array::<f32>::new(comptime!(rows as usize));
    #[unroll]
    for r in 0..rows {
        running_max[r as usize] = f32::new(FAR_BELOW);
        running_sum[r as usize] = f32::new(0.0);
    }
    let mut scores = Array::<f32>::new(comptime!((rows * block) as usize));
    let mut k_block = Shared::<[f32]>::new_slice(comptime!((block * width) as usize));
    let mut v_block = Shared::<[f32]>::new_slice(comptime!((block * value_width) as usize));

    let k_row = heads * width;
    let v_row = heads * value_width;
    let k_head = batch * keys * k_row + head * width;
    let v_head = batch * keys * v_row + head * value_width;

    for key0 in range_stepped(0u32, keys, block) {
        // Stage the block's keys and values (zeros past the last key).
        let mut e = unit;
        while e < comptime!(block * width) {
            let key = key0 + e / width;
            let mut x = f32::new(0.0);
            if key < keys {
                x = k[(k_head + key * k_row + e % width) as usize];
            }
            k_block[e as usize] = x;
            e += UNITS;
        }
        let mut e = unit;
        while e < comptime!(block * value_width) {
            let key = key0 + e / value_width;
            let mut x = f32::new(0.0);
            if key < keys {
                x = v[(v_head + key * v_row + e % value_width) as usize];
            }
            v_block[e as usize] = x;
            e += UNITS;
        }
        sync_cube();

        // Score the block, each key read once for all of the unit's queries; keys past the
        // last one score FAR_BELOW (weight 0). Unrolled, so that the register arrays are
        // indexed by constants.
        #[unroll]
        for j in 0..block {
            #[unroll]
            for r in 0..rows {
                scores[(r * block + j) as usize] = f32::new(0.0);
            }
            #[unroll]
            for c in 0..width {
                let key_value = k_block[(j * width + c) as usize];
                #[unroll]
                for r in 0..rows {
                    scores[(r * block + j) as usize] += q_rows[(r * width + c) as usize] * key_value;
                }
            }
            if key0 + j >= keys {
                #[unroll]
                for r in 0..rows {
                    scores[(r * block + j) as usize] = f32::new(FAR_BELOW);
                }
            }
        }

        // Fold the block into each row: rescale what came before to the new maximum. Every
        // block starts at a real key, so its maximum is a real score.
        let mut weights = Array::<f32>::new(comptime!((rows * block) as usize));
        #[unroll]
        for r in 0..rows {
            let mut new_max = running_max[r as usize];
            #[unroll]
            for j in 0..block {
                let s = scores[(r * block + j) as usize];
                if s > new_max {
                    new_max = s;
                }
            }
            let rescale = f32::exp(running_max[r as usize] - new_max);
            let mut sum = running_sum[r as usize] * rescale;
            #[unroll]
            for c in 0..value_width {
                out_rows[(r * value_width + c) as usize] *= rescale;
            }
            #[unroll]
            for j in 0..block {
                let p = f32::exp(scores[(r * block + j) as usize] - new_max);
                weights[(r * block + j) as usize] = p;
                sum += p;
            }
            running_max[r as usize] = new_max;
            running_sum[r as usize] = sum;
        }
        #[unroll]
        for j in 0..block {
            #[unroll]
            for c in 0..value_width {
                let value = v_block[(j * value_width + c) as usize];
                #[unroll]
                for r in 0..rows {
                    out_rows[(r * value_width + c) as usize] += weights[(r * block + j) as usize] * value;
                }
            }
        }
        // Every unit is done with the block before the next is staged over it.
        sync_cube();
    }

    #[unroll]
    for r in 0..rows {
        let query = first + r * UNITS;
        if query < queries {
            let out_at = (batch * queries + query) * heads * value_width + head * value_width;
            // The prompt's weight λ and, for a region prompt, its mask at this query (MEPA).
            let mut inv_sum = weight / running_sum[r as usize];
            if has_mask {
                inv_sum *= mask[(batch * mask_batch_stride + query) as usize];
            }
            #[unroll]
            for c in 0..value_width {
                output[(out_at + c) as usize] = out_rows[(r * value_width + c) as usize] * inv_sum;
            }
        }
    }
}

/// Keys per block: 8 (measured best beside 4 and 16 on lavapipe and SwiftShader), fewer where
/// the K and V rows of 8 keys would not fit 16 KiB.
pub fn block_keys(width: usize, value_width: usize) -> usize {
    let fit = 16 * 1024 / (4 * (width + value_width));
    let mut block = 8;
    while block > fit && block > 1 {
        block /= 2;
    }
    block
}

/// Queries per unit: enough for one cube to cover a head's queries, at most 16, and at most 512
/// registers of query and output rows. Each key staged is then read once for all of a unit's
/// queries: on lavapipe one query per unit ran at 1.1 GFLOP/s, 16 at 15 (BENCHMARKS.md).
pub fn rows_per_unit(queries: usize, width: usize, value_width: usize) -> usize {
    let mut rows = queries.div_ceil(UNITS as usize).next_power_of_two().min(16);
    while rows > 1 && rows * (width + value_width) > 512 {
        rows /= 2;
    }
    rows
}

/// Whether the kernel takes heads of these widths.
pub fn takes(width: usize, value_width: usize) -> bool {
    (1..=MAX_HEAD_WIDTH).contains(&width) && (1..=MAX_HEAD_WIDTH).contains(&value_width)
}

/// `q` `[batch, queries, heads × d]`, `k` `[batch, keys, heads × d]`, `v` `[batch, keys, heads
/// × d_v]`, f32: `weight · mask ⊙ softmax(Q Kᵀ/√d) V` per head, `[batch, queries, heads × d_v]`,
/// with `mask` `[batch or 1, queries, 1]` read only when `has_mask` (MEPA's region prompt: its
/// λ and region mask applied as each row is written). The caller has checked [`takes`].
/// Non-contiguous inputs are made contiguous first.
pub fn launch(
    q: CubeTensor,
    k: CubeTensor,
    v: CubeTensor,
    mask: CubeTensor,
    heads: usize,
    has_mask: bool,
    weight: f32,
) -> CubeTensor {
    let q = burn_cubecl::kernel::into_contiguous(q);
    let k = burn_cubecl::kernel::into_contiguous(k);
    let v = burn_cubecl::kernel::into_contiguous(v);
    let mask = burn_cubecl::kernel::into_contiguous(mask);
    let (qs, ks, vs) = (q.meta.shape().clone(), k.meta.shape().clone(), v.meta.shape().clone());
    let [batch, queries, c] = [qs[0], qs[1], qs[2]];
    let keys = ks[1];
    let (width, value_width) = (c / heads, vs[2] / heads);
    assert!(takes(width, value_width), "attention: heads of {width}/{value_width} are not taken");
    assert!(ks[2] == c && vs[1] == keys && ks[0] == batch && vs[0] == batch, "attention: shapes {qs:?} {ks:?} {vs:?}");
    let output =
        empty_device_dtype(q.client.clone(), q.device.clone(), Shape::new([batch, queries, vs[2]]), DType::F32);
    if queries == 0 {
        return output;
    }
    let mask_batch_stride = match has_mask {
        true => {
            let ms = mask.meta.shape().clone();
            assert!(ms.num_elements() == queries || ms.num_elements() == batch * queries, "attention: mask {ms:?}");
            if ms.num_elements() == queries { 0 } else { queries as u32 }
        }
        false => 0,
    };
    let rows = rows_per_unit(queries, width, value_width) as u32;
    let block = block_keys(width, value_width) as u32;
    attention_kernel::launch(
        &output.client.clone(),
        CubeCount::Static(queries.div_ceil((UNITS * rows) as usize) as u32, (batch * heads) as u32, 1),
        CubeDim::new_1d(UNITS),
        q.into_tensor_arg(),
        k.into_tensor_arg(),
        v.into_tensor_arg(),
        mask.into_tensor_arg(),
        output.clone().into_tensor_arg(),
        queries as u32,
        keys as u32,
        heads as u32,
        1.0 / (width as f32).sqrt(),
        weight,
        mask_batch_stride,
        has_mask,
        width as u32,
        value_width as u32,
        block,
        rows,
    );
    output
}
