//! `adcanvas bench`: each of our kernels beside the stock burn tensor ops it replaces, at the
//! default model's and Stable Diffusion 1.5's shapes, on one device in one run.
//!
//! Printed as a table and JSON; BENCHMARKS.md records them with the machine and date. Nothing
//! here is asserted: correctness is tests/kernels.rs.

use std::time::Instant;

use adcanvas::kernels;
use adcanvas::nn::kernel_check::{conv2d_layer, quantized_linear_layer};
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

/// `(what, [n, c_in, h, w], c_out)` of 3×3, stride-1 convolutions: the default model's at a
/// 256² ad (UNet at batch 2, its tiny VAE decoder at full size) and SD 1.5's at 512².
const CONVS: [(&str, [usize; 4], usize); 6] = [
    ("default UNet, 32² latent", [2, 32, 32, 32], 32),
    ("default UNet, 8² latent", [2, 128, 8, 8], 128),
    ("default VAE decoder, 256²", [1, 64, 256, 256], 64),
    ("SD 1.5 UNet, 64² latent", [2, 320, 64, 64], 320),
    ("SD 1.5 UNet, 16² latent", [2, 1280, 16, 16], 1280),
    ("SD 1.5 VAE decoder, 128²", [1, 512, 128, 128], 512),
];

/// `(what, [batch, tokens, d_in], d_out)` of linear layers: the default model's attention
/// projections at a 256² ad and its text encoder's feed-forward, SD 1.5's at 512² (batch 2),
/// each with q8 and q4 weights.
const LINEARS: [(&str, [usize; 3], usize); 5] = [
    ("default UNet attention, 32²", [2, 1024, 32], 32),
    ("default text encoder FF", [2, 77, 384], 1536),
    ("SD 1.5 attention, 64²", [2, 4096, 320], 320),
    ("SD 1.5 GEGLU, 64²", [2, 4096, 320], 2560),
    ("SD 1.5 cross-attn k/v", [2, 77, 768], 320),
];

/// `(what, [batch, queries, keys], heads, head width)` of attention: the default model's self-
/// and cross-attention (77 text tokens) at a 256² ad's 16² latent and a 512² ad's 32², SD 1.5's
/// at 512² (batch 2).
const ATTENTIONS: [(&str, [usize; 3], usize, usize); 5] = [
    ("default UNet self-attention, 16² latent", [2, 256, 256], 8, 8),
    ("default UNet cross-attention, 16² latent", [2, 256, 77], 8, 8),
    ("default UNet self-attention, 32² latent", [2, 1024, 1024], 8, 8),
    ("SD 1.5 self-attention, 64² latent", [2, 4096, 4096], 8, 40),
    ("SD 1.5 cross-attention, 64² latent", [2, 4096, 77], 8, 40),
];

fn header(kernel: &str, shape: &str, rate: &str) {
    println!("{kernel:<28} {shape:>22} {:>12} {:>12} {:>9} {rate:>13}", "stock ms", "ours ms", "speed-up");
}

/// One shape's timings: `work` is what `rate` divides by the time (GB moved or GFLOP done).
struct Row<'a> {
    kernel: &'a str,
    what: &'a str,
    shape: String,
    stock: f64,
    ours: f64,
    work: f64,
    rate: &'a str,
}

impl Row<'_> {
    /// Prints the table line and returns the JSON record.
    fn print(self) -> serde_json::Value {
        let rate = |ms: f64| self.work / (ms * 1e-3);
        println!(
            "{:<28} {:>22} {:>12.3} {:>12.3} {:>8.2}× {:>13.1}",
            self.what,
            self.shape,
            self.stock,
            self.ours,
            self.stock / self.ours,
            rate(self.ours)
        );
        serde_json::json!({
            "kernel": self.kernel, "what": self.what, "shape": self.shape, "stock_ms": self.stock,
            "ours_ms": self.ours, "speedup": self.stock / self.ours,
            format!("stock_{}", self.rate): rate(self.stock), format!("ours_{}", self.rate): rate(self.ours),
        })
    }
}

/// Median milliseconds of `repeats` runs of `f`, after one untimed run (kernel compilation).
fn time<const D: usize>(device: &Device, repeats: usize, mut f: impl FnMut() -> Tensor<D>) -> f64 {
    let finish = |t: Tensor<D>| {
        // Each result read tells the watchdog the GPU still answers.
        adcanvas::gpu::watchdog::beat("kernel benchmark");
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

/// `sd` too: SD 1.5's shapes take minutes per run on a software adapter. `only`: the kernel
/// families to time (`group_norm`, `conv2d`, `linear`, `matmul`, `attention`), all when empty.
pub fn run(device: &Device, adapter: &str, repeats: usize, sd: bool, only: &[String]) -> Result<(), String> {
    const FAMILIES: [&str; 5] = ["group_norm", "conv2d", "linear", "matmul", "attention"];
    if let Some(unknown) = only.iter().find(|k| !FAMILIES.contains(&k.as_str())) {
        return Err(format!("--only {unknown}: the kernels are {}", FAMILIES.join(", ")));
    }
    let family = |name: &str| only.is_empty() || only.iter().any(|k| k == name);
    let wanted = |what: &str| sd || what.starts_with("default");
    let repeats = repeats.max(1);
    let probe = Tensor::<4>::zeros([1, 1, 1, 1], device);
    let one = Tensor::<1>::ones([1], device);
    if kernels::group_norm(probe, &one, &one, 1, 1e-5, false).is_err() {
        return Err(format!("our kernels run on a GPU device only; {adapter} is not one (try --device gpu)"));
    }
    println!("adapter: {adapter}; median of {repeats} runs after a first (compiling) run");
    let mut rows = Vec::new();
    if family("group_norm") {
        header("GroupNorm + SiLU", "shape / groups", "ours GB/s");
    }
    for (what, shape, groups, eps) in GROUP_NORMS.into_iter().filter(|row| family("group_norm") && wanted(row.0)) {
        let [_, c, _, _] = shape;
        let (w, _) = Weights::random(1, device);
        let norm = GroupNorm::load(&w, groups, c, eps).map_err(|e| e.to_string())?;
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
        let stock = time(device, repeats, || silu(norm.forward_ops(x.clone())));
        let ours = time(device, repeats, || norm.forward_silu(x.clone()));
        // Ours reads the input twice for the statistics and once more to write: 4 passes.
        let gb = 4.0 * shape.iter().product::<usize>() as f64 * 4.0 / 1e9;
        let label = format!("{shape:?}/{groups}");
        let row = Row { kernel: "group_norm_silu", what, shape: label, stock, ours, work: gb, rate: "gb_per_s" };
        rows.push(row.print());
    }
    println!();
    if family("conv2d") {
        header("conv 3×3 + bias", "shape → c_out", "ours GFLOP/s");
    }
    for (what, shape, c_out) in CONVS.into_iter().filter(|row| family("conv2d") && wanted(row.0)) {
        let [n, c_in, h, w] = shape;
        let conv = conv2d_layer(c_in, c_out, 3, 1, [1, 1, 1, 1], true, device);
        let x = Tensor::<4>::random(shape, Distribution::Normal(0.0, 1.0), device);
        let stock = time(device, repeats, || conv.forward_ops(x.clone()));
        let ours = time(device, repeats, || {
            kernels::conv2d(x.clone(), conv.weight(), conv.bias(), 1, [1; 4]).expect("on the GPU")
        });
        let gflop = 2.0 * (n * h * w * c_out * c_in * 9) as f64 / 1e9;
        let label = format!("{shape:?}→{c_out}");
        let row = Row { kernel: "conv2d_3x3", what, shape: label, stock, ours, work: gflop, rate: "gflop_per_s" };
        rows.push(row.print());
    }
    println!();
    if family("linear") {
        header("linear, quantised weight", "shape → d_out", "ours GFLOP/s");
    }
    for (what, shape, d_out) in LINEARS.into_iter().filter(|row| family("linear") && wanted(row.0)) {
        let [b, t, d_in] = shape;
        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), device);
        for q4 in [false, true] {
            let layer = quantized_linear_layer(d_in, d_out, q4, true, device);
            // Stock: the weight expanded to f32 by burn's dequantise kernel, then burn's matmul.
            let stock = time(device, repeats, || layer.forward_ops(x.clone()));
            let ours = time(device, repeats, || layer.forward_quantized(x.clone()).expect("on the GPU"));
            let gflop = 2.0 * (b * t * d_in * d_out) as f64 / 1e9;
            let label = format!("{}{shape:?}→{d_out}", if q4 { "q4 " } else { "q8 " });
            let row =
                Row { kernel: "quantized_linear", what, shape: label, stock, ours, work: gflop, rate: "gflop_per_s" };
            rows.push(row.print());
        }
    }
    println!();
    if family("matmul") {
        header("matmul, f32 weight", "shape → d_out", "ours GFLOP/s");
    }
    for (what, shape, d_out) in LINEARS.into_iter().filter(|row| family("matmul") && wanted(row.0)) {
        let [b, t, d_in] = shape;
        let x = Tensor::<3>::random(shape, Distribution::Normal(0.0, 1.0), device);
        // A weight as the layers hold it, [d_out, d_in], read transposed through a view.
        let w =
            Tensor::<2>::random([d_out, d_in], Distribution::Normal(0.0, 0.05), device).transpose().unsqueeze::<3>();
        // Stock: burn's matmul (natively its autotuner's pick; in a build without one, `Auto`).
        let stock = time(device, repeats, || x.clone().matmul(w.clone()));
        let ours = time(device, repeats, || kernels::gemm(x.clone(), &w).expect("on the GPU"));
        let gflop = 2.0 * (b * t * d_in * d_out) as f64 / 1e9;
        let label = format!("{shape:?}→{d_out}");
        let row = Row { kernel: "matmul_gemm", what, shape: label, stock, ours, work: gflop, rate: "gflop_per_s" };
        rows.push(row.print());
    }
    println!();
    if family("attention") {
        header("attention, heads in place", "[b, queries, keys] heads × width", "ours GFLOP/s");
    }
    for (what, [b, nq, nk], heads, d) in ATTENTIONS.into_iter().filter(|row| family("attention") && wanted(row.0)) {
        let t = |n: usize| Tensor::<3>::random([b, n, heads * d], Distribution::Normal(0.0, 1.0), device);
        let (q, k, v) = (t(nq), t(nk), t(nk));
        let split = |x: Tensor<3>| {
            let [b, n, _] = x.dims();
            x.reshape([b, n, heads, d]).swap_dims(1, 2)
        };
        // Stock: the heads split by a copy, burn's attention (or, where the layers take cubek's
        // Gemm, the explicit product), the heads merged by another copy, as the layer does.
        let stock = time(device, repeats, || {
            let out = adcanvas::nn::attention::scaled_dot_product_attention(
                split(q.clone()),
                split(k.clone()),
                split(v.clone()),
            );
            out.swap_dims(1, 2).reshape([b, nq, heads * d])
        });
        let ours =
            time(device, repeats, || kernels::attention(q.clone(), &k, &v, heads, None, 1.0).expect("on the GPU"));
        let gflop = 4.0 * (b * heads * nq * nk * d) as f64 / 1e9;
        let label = format!("[{b}, {nq}, {nk}] {heads}×{d}");
        let row = Row { kernel: "attention", what, shape: label, stock, ours, work: gflop, rate: "gflop_per_s" };
        rows.push(row.print());
    }
    println!("{}", serde_json::json!({ "adapter": adapter, "repeats": repeats, "kernels": rows }));
    Ok(())
}
