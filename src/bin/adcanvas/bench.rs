//! `adcanvas bench`: each of our kernels beside the stock burn tensor ops it replaces, at the
//! default model's and Stable Diffusion 1.5's shapes, on one device in one run.
//!
//! Printed as a table and JSON; BENCHMARKS.md records them with the machine and date. Nothing
//! here is asserted: correctness is tests/kernels.rs.

use std::time::Instant;

use adcanvas::kernels;
use adcanvas::nn::{GroupNorm, silu};
use adcanvas::pack::weights::Weights;
use burn::tensor::{Device, Distribution, Tensor};

/// `(what, [b, c, h, w], groups, eps)`: the GroupNorms a 256² default-model ad and a 512² SD 1.5
/// step run (batch 2 for classifier-free guidance), and SD's VAE decoder at 512².
const GROUP_NORMS: [(&str, [usize; 4], usize, f64); 7] = [
    ("default UNet, 32² latent", [2, 32, 32, 32], 8, 1e-5),
    ("default UNet, 8² latent", [2, 128, 8, 8], 8, 1e-5),
    ("SD 1.5 UNet, 64² latent", [2, 320, 64, 64], 32, 1e-5),
    ("SD 1.5 UNet, 32² latent", [2, 640, 32, 32], 32, 1e-5),
    ("SD 1.5 UNet, 8² latent", [2, 1280, 8, 8], 32, 1e-5),
    ("SD 1.5 VAE decoder, 128²", [1, 512, 128, 128], 32, 1e-6),
    ("SD 1.5 VAE decoder, 512²", [1, 128, 512, 512], 32, 1e-6),
];

/// Median milliseconds of `repeats` runs of `f`, after one untimed run (kernel compilation).
fn time(device: &Device, repeats: usize, mut f: impl FnMut() -> Tensor<4>) -> f64 {
    let finish = |t: Tensor<4>| {
        let _ = t.into_data();
        device.sync().expect("the device finished its work");
    };
    finish(f());
    let mut ms: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            finish(f());
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms[ms.len() / 2]
}

pub fn run(device: &Device, adapter: &str, repeats: usize) -> Result<(), String> {
    let repeats = repeats.max(1);
    let probe = Tensor::<4>::zeros([1, 1, 1, 1], device);
    let one = Tensor::<1>::ones([1], device);
    if kernels::group_norm(probe, &one, &one, 1, 1e-5, false).is_err() {
        return Err(format!("our kernels run on a GPU device only; {adapter} is not one (try --device gpu)"));
    }
    println!("adapter: {adapter}; median of {repeats} runs after a first (compiling) run");
    println!(
        "{:<28} {:>18} {:>12} {:>12} {:>9} {:>10}",
        "GroupNorm + SiLU", "shape", "stock ms", "ours ms", "speed-up", "ours GB/s"
    );
    let mut rows = Vec::new();
    for (what, shape, groups, eps) in GROUP_NORMS {
        let [_, c, _, _] = shape;
        let (w, _) = Weights::random(1, device);
        let norm = GroupNorm::load(&w, groups, c, eps).map_err(|e| e.to_string())?;
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
        let stock = time(device, repeats, || silu(norm.forward_ops(x.clone())));
        let ours = time(device, repeats, || norm.forward_silu(x.clone()));
        // Ours reads the input twice for the statistics and once more to write: 4 passes.
        let bytes = 4.0 * shape.iter().product::<usize>() as f64 * 4.0;
        let gbs = bytes / (ours * 1e-3) / 1e9;
        println!(
            "{what:<28} {:>18} {stock:>12.3} {ours:>12.3} {:>8.2}× {gbs:>10.1}",
            format!("{shape:?}/{groups}"),
            stock / ours
        );
        rows.push(serde_json::json!({
            "kernel": "group_norm_silu", "what": what, "shape": shape, "groups": groups,
            "stock_ms": stock, "ours_ms": ours, "speedup": stock / ours, "ours_gb_per_s": gbs,
        }));
    }
    println!("{}", serde_json::json!({ "adapter": adapter, "repeats": repeats, "kernels": rows }));
    Ok(())
}
