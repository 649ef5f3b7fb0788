//! Classifier-free guidance shared between two instances of the pipeline. wasm has no threads
//! here (shared memory needs a standard library rebuilt with atomics, which this project's stable
//! toolchain does not ship), so on the browser's CPU path a second worker with its own copy of
//! the model runs the same generation in lockstep: each instance computes one half of every
//! guided step (the partner's "helper" the unconditional one), they swap halves, and both
//! combine them identically. The halves are two UNet calls anyway when the prompt's token count
//! differs from the empty prompt's, so the two instances compute exactly what one would, in
//! 0.6–0.75× the denoising time on two cores (BENCHMARKS.md, 2026-12-07 03:45).
//!
//! The swap carries a fingerprint of the step's input: a partner whose photo, options or model
//! differ is caught at the first step, and any failure of the partner (stopped, crashed,
//! diverged) makes this instance compute the missing half itself and go on alone.

use std::future::Future;
use std::pin::Pin;

/// Which guidance half an instance computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    /// The empty prompt's half; its instance is the helper, whose own ad is never used.
    Unconditional,
    /// The prompt's half; its instance makes the ad.
    Conditional,
}

/// The other instance of a lockstep pair.
pub trait GuidancePartner {
    /// The half this instance computes (the partner computes the other).
    fn half(&self) -> Half;
    /// Sends this instance's half of `step` (and the fingerprint of that step's input) and
    /// resolves to the partner's `(fingerprint, half)`, or to why the partner gave none.
    fn exchange(&self, step: usize, fingerprint: u32, mine: Vec<f32>) -> SwapFuture<'_>;
}

/// What [`GuidancePartner::exchange`] resolves to.
pub type SwapFuture<'a> = Pin<Box<dyn Future<Output = Result<(u32, Vec<f32>), String>> + 'a>>;

/// FNV-1a over the values' bits: equal inputs on both instances give equal fingerprints.
pub fn fingerprint(values: &[f32]) -> u32 {
    values.iter().fold(0x811c_9dc5u32, |h, v| {
        v.to_bits().to_le_bytes().iter().fold(h, |h, &b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_inputs_apart() {
        let a = [0.5f32, -1.0, 3.25];
        assert_eq!(fingerprint(&a), fingerprint(&[0.5, -1.0, 3.25]));
        assert_ne!(fingerprint(&a), fingerprint(&[0.5, -1.0, 3.2500002]));
        assert_ne!(fingerprint(&a), fingerprint(&[-1.0, 0.5, 3.25]));
        assert_eq!(fingerprint(&[]), 0x811c_9dc5);
    }
}
