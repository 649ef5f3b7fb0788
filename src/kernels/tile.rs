//! The register block both of our GEMM kernels ([`super::conv2d`], [`super::quantized_linear`])
//! compute: a cube stages 16-deep slices of its 64 × 64 tile's two operands in shared memory,
//! and each of its 64 units multiplies them into an 8 × 8 block of the tile held in registers.

use cubecl::prelude::*;

/// One 16-deep step into a unit's 8 × 8 block `acc` (row-major): rows `row + 8i` of `a_tile`
/// times columns `col + 8j` of `b_tile`, both stored K-major (`[16][64]`).
#[cube]
pub fn multiply_tiles(a_tile: &Shared<[f32]>, b_tile: &Shared<[f32]>, acc: &mut Array<f32>, row: u32, col: u32) {
    #[unroll]
    for kk in 0..16u32 {
        let mut b = Array::<f32>::new(8usize);
        #[unroll]
        for j in 0..8u32 {
            b[j as usize] = b_tile[(kk * 64 + col + 8 * j) as usize];
        }
        #[unroll]
        for i in 0..8u32 {
            let a = a_tile[(kk * 64 + row + 8 * i) as usize];
            #[unroll]
            for j in 0..8u32 {
                acc[(i * 8 + j) as usize] += a * b[j as usize];
            }
        }
    }
}
