//! The `adcanvas` binary: report, output file, determinism, and clear failures.

use std::path::PathBuf;

use crate::common::{Cli, fixture, tmp};

#[test]
fn generate_writes_png_and_json_report() {
    let out = tmp("ad.png");
    let mask = tmp("mask.png");
    let product = fixture("product_alpha_32.png");
    let small_ad = |out: &PathBuf| Cli::small_ad(&product, out).args(&["--seed", "5", "--device", "cpu"]);
    let run = small_ad(&out).args(&["--mask-out", mask.to_str().unwrap()]).run();
    assert!(run.success(), "{run:?}");
    let report = run.report();
    assert_eq!(report["width"], 64);
    assert_eq!(report["mask_source"], "alpha");
    assert_eq!(report["trained"], true);
    assert_eq!(report["prompt_used"], true);
    assert_eq!(report["scheduler"], "ddim");
    // Centred across; standing on the floor line, row round(0.8 · 64) = 51.
    assert_eq!((report["placement"]["x"].as_u64(), report["placement"]["y"].as_u64()), (Some(16), Some(51 - 32)));
    // Half the ad's height: within the default model's training sizes, so no note.
    assert_eq!(report["notes"], serde_json::json!([]), "{report}");
    for stage in ["load_model", "layout", "encode", "text", "denoise", "decode", "composite", "total"] {
        assert!(report["timings_ms"][stage].is_number(), "timing {stage} missing: {report}");
    }
    assert!(!run.stderr.contains("untrained"), "{run:?}");
    assert!(!run.stderr.contains("prompt is not used"), "{run:?}");

    // The product's pixels are in the PNG unchanged, at the reported placement.
    let ad = image::open(&out).unwrap().to_rgba8();
    let src = image::open(&product).unwrap().to_rgba8();
    for (x, y, px) in src.enumerate_pixels() {
        if px.0[3] == 255 {
            assert_eq!(ad.get_pixel(16 + x, 19 + y).0[..3], px.0[..3]);
        }
    }
    let mask_img = image::open(&mask).unwrap();
    assert_eq!((mask_img.width(), mask_img.height()), (32, 32));

    // Same seed, same bytes.
    let out2 = tmp("ad2.png");
    assert!(small_ad(&out2).run().success());
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out2).unwrap());

    // The default model is small: its q8 weights are expanded unless asked; kept, the device
    // holds under a third of the bytes and the image is the same.
    assert_eq!(report["quantized_weights"], "expand");
    let out3 = tmp("ad3.png");
    let run = small_ad(&out3).args(&["--quantized-weights", "keep"]).run();
    assert!(run.success(), "{run:?}");
    let kept = run.report();
    assert_eq!(kept["quantized_weights"], "keep");
    let (kept_mb, expanded_mb) =
        (kept["device_weights_mb"].as_f64().unwrap(), report["device_weights_mb"].as_f64().unwrap());
    assert!(kept_mb < expanded_mb / 3.0, "device weights kept {kept_mb} MB vs expanded {expanded_mb} MB");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&out3).unwrap());
}

/// `--count 2 --seed 4` in one process writes ad-1.png and ad-2.png, the same bytes as two
/// separate runs with seeds 4 and 5 (what the same process keeps warm changes no pixel).
#[test]
fn count_generates_consecutive_seeds_in_one_process() {
    let product = fixture("product_alpha_32.png");
    let run_with = |out: &PathBuf, seed: &str, count: &str| {
        let run = Cli::small_ad(&product, out).args(&["--seed", seed, "--count", count, "--device", "cpu"]).run();
        assert!(run.success(), "{run:?}");
        run
    };
    let batch = tmp("batch.png");
    let reports = run_with(&batch, "4", "2").reports();
    assert_eq!(reports.len(), 2);
    assert_eq!((reports[0]["seed"].as_u64(), reports[1]["seed"].as_u64()), (Some(4), Some(5)));
    assert!(reports[0]["timings_ms"]["load_model"].is_number() && reports[1]["timings_ms"]["load_model"].is_null());
    for (i, seed) in [(1, "4"), (2, "5")] {
        let numbered = tmp(&format!("batch-{i}.png"));
        assert_eq!(reports[i - 1]["output"], numbered.to_str().unwrap());
        let single = tmp(&format!("single-{seed}.png"));
        run_with(&single, seed, "1");
        assert_eq!(std::fs::read(&numbered).unwrap(), std::fs::read(&single).unwrap(), "seed {seed}");
    }
    assert_ne!(std::fs::read(tmp("batch-1.png")).unwrap(), std::fs::read(tmp("batch-2.png")).unwrap());
    let refused = Cli::generate(&product, &batch).args(&["--count", "0"]).run();
    assert!(!refused.success() && refused.stderr.contains("--count"), "{refused:?}");
}

#[test]
fn unknown_scheduler_is_refused_with_the_choices() {
    let product = fixture("product_alpha_32.png");
    let out = tmp("never4.png");
    let run = Cli::generate(&product, &out).args(&["--scheduler", "plms"]).run();
    assert!(!run.success());
    assert!(run.stderr.contains("ddim, euler, euler-karras, dpm++2m, dpm++2m-karras, lcm"), "{run:?}");
    assert!(!out.exists());
}

#[test]
fn size_takes_width_by_height_and_refuses_anything_else() {
    let product = fixture("product_alpha_32.png");
    let out = tmp("wide.png");
    let base = Cli::generate(&product, &out).args(&["--device", "cpu"]);
    let run = base.clone().args(&["--size", "96x64", "--steps", "1"]).run();
    assert!(run.success(), "{run:?}");
    let report = run.report();
    assert_eq!((report["width"].as_u64(), report["height"].as_u64()), (Some(96), Some(64)), "{report}");
    let png = image::open(&out).expect("the ad is a PNG");
    assert_eq!((png.width(), png.height()), (96, 64));

    let never = tmp("never5.png");
    let bad = Cli::generate(&product, &never).args(&["--size", "96y64"]).run();
    assert!(!bad.success());
    assert!(bad.stderr.contains("\"96y64\" is not a size") && bad.stderr.contains("WIDTHxHEIGHT"), "{bad:?}");
    let odd = base.args(&["--size", "96x40"]).run();
    assert!(!odd.success());
    assert!(odd.stderr.contains("height must be a positive multiple of 32"), "{odd:?}");
}

#[test]
fn position_and_fill_lay_the_product_out_and_bad_values_are_refused() {
    let product = fixture("product_alpha_32.png");
    let out = tmp("left.png");
    let base = Cli::generate(&product, &out).args(&["--device", "cpu"]);
    let run = base.clone().args(&["--size", "96x64", "--steps", "1", "--position", "left", "--fill", "0.25"]).run();
    assert!(run.success(), "{run:?}");
    let report = run.report();
    // fill 0.25 of 64 px: the 32-px product at half size; left: 15 % of the free 80 px; standing on
    // the floor line, row round(0.8 · 64) = 51.
    assert_eq!(
        (report["placement"]["w"].as_u64(), report["placement"]["x"].as_u64(), report["placement"]["y"].as_u64()),
        (Some(16), Some(12), Some(51 - 16)),
        "{report}"
    );
    // 25 % of the height, scaled down by the fill: smaller than any product the default model saw
    // (its pack's smallest_product), so the report says so, with the remedy that applies.
    let notes = report["notes"].as_array().expect("the report lists notes");
    assert!(
        notes.len() == 1
            && notes[0].as_str().is_some_and(|n| n.starts_with("The product is 25 % of the ad's height")
                && n.ends_with("choose a larger product size.")),
        "{report}"
    );
    assert!(run.stderr.contains("choose a larger product size"), "the note is printed too: {run:?}");

    let refused = |extra: &[&str], message: &str| {
        let run = base.clone().args(extra).run();
        assert!(!run.success() && run.stderr.contains(message), "{extra:?}: {run:?}");
    };
    refused(&["--position", "middle"], "use left, center, right or a number from 0 to 1");
    refused(&["--position", "1.5", "--size", "64", "--steps", "1"], "from 0 (left) to 1 (right)");
    refused(&["--fill", "1.2", "--size", "64", "--steps", "1"], "product size 1.2 is not valid");
}

#[test]
fn corrupt_photo_fails_with_a_message() {
    let out = tmp("never.png");
    let run = Cli::generate(&fixture("corrupt.png"), &out).args(&["--device", "cpu"]).run();
    assert!(!run.success());
    assert!(run.stderr.starts_with("adcanvas: ") && !run.stderr.contains("panicked"), "{run:?}");
    assert!(!out.exists());
}

#[test]
fn missing_model_fails_with_a_message() {
    let out = tmp("never2.png");
    let run = Cli::generate(&fixture("product_alpha_32.png"), &out)
        .args(&["--device", "cpu", "--model", "/nonexistent/pack"])
        .run();
    assert!(!run.success());
    assert!(run.stderr.contains("/nonexistent/pack/manifest.json"), "{run:?}");
}

/// The CLI memory-maps packs; a truncated weight file is still refused by name before use.
#[test]
fn truncated_model_file_fails_with_a_message() {
    let pack = tmp("truncated-pack");
    std::fs::create_dir_all(&pack).unwrap();
    let default = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/default");
    for entry in std::fs::read_dir(&default).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), pack.join(entry.file_name())).unwrap();
    }
    let vae = pack.join("vae.safetensors");
    let bytes = std::fs::read(&vae).unwrap();
    std::fs::write(&vae, &bytes[..bytes.len() / 2]).unwrap();
    let out = tmp("never5.png");
    let run = Cli::generate(&fixture("product_alpha_32.png"), &out)
        .args(&["--device", "cpu", "--model", pack.to_str().unwrap()])
        .run();
    assert!(!run.success());
    assert!(run.stderr.contains("vae.safetensors"), "{run:?}");
    assert!(!out.exists());
}

#[test]
fn busy_photo_is_refused_with_advice() {
    let run = Cli::generate(&fixture("busy.jpg"), &tmp("never3.png")).args(&["--device", "cpu"]).run();
    assert!(!run.success());
    assert!(run.stderr.to_lowercase().contains("background"), "{run:?}");
}

/// A photo the automatic mask refuses goes through with the user's own mask (`--mask`): the report
/// says so, `--mask-out` shows that mask, and a mask of another size is refused with the sizes.
#[test]
fn a_given_mask_replaces_the_automatic_one() {
    let photo = fixture("busy.jpg"); // 96×72, not plain enough for the automatic mask
    let mask = tmp("given_mask.png");
    let inside = |x: u32, y: u32| (30..66).contains(&x) && (20..60).contains(&y);
    image::GrayImage::from_fn(96, 72, |x, y| image::Luma([if inside(x, y) { 255 } else { 0 }])).save(&mask).unwrap();
    let shown = tmp("given_mask_out.png");
    let run = Cli::small_ad(&photo, &tmp("given.png"))
        .args(&[
            "--device",
            "cpu",
            "--seed",
            "3",
            "--mask",
            mask.to_str().unwrap(),
            "--mask-out",
            shown.to_str().unwrap(),
        ])
        .run();
    assert!(run.success(), "{run:?}");
    assert_eq!(run.report()["mask_source"], "given");
    let preview = image::open(&shown).unwrap().to_luma8();
    for (x, y, p) in preview.enumerate_pixels() {
        assert_eq!(p.0[0], if inside(x, y) { 255 } else { 40 }, "mask preview at ({x},{y})");
    }

    let small = tmp("small_mask.png");
    image::GrayImage::from_pixel(48, 36, image::Luma([255])).save(&small).unwrap();
    let run = Cli::small_ad(&photo, &tmp("never_given.png"))
        .args(&["--device", "cpu", "--mask", small.to_str().unwrap()])
        .run();
    assert!(!run.success());
    assert!(run.stderr.contains("The mask is 48×36 pixels but the photo is 96×72"), "{run:?}");
}

/// `adcanvas mask` writes the mask `generate` would use, and that mask, given back with `--mask`
/// (as a seller would after touching it up), gives the same mask as the automatic run.
#[test]
fn the_mask_command_round_trips_through_generate() {
    let photo = fixture("product_white.jpg");
    let (mask, cutout) = (tmp("mask_cmd.png"), tmp("mask_cmd_cutout.png"));
    let run = Cli::new(&["mask", "--product", photo.to_str().unwrap(), "--out", mask.to_str().unwrap()])
        .args(&["--cutout", cutout.to_str().unwrap()])
        .run();
    assert!(run.success(), "{run:?}");
    assert_eq!(run.report()["mask_source"], "background");
    let written = image::open(&mask).unwrap().to_luma8();
    let cut = image::open(&cutout).unwrap().to_rgba8();
    assert_eq!(written.dimensions(), cut.dimensions());
    assert!(written.pixels().zip(cut.pixels()).all(|(m, c)| m.0[0] == c.0[3]), "the cut-out's alpha is the mask");
    // The page's cut-out preview is held to the same file (tests/e2e: "the page's cut-out is the
    // CLI's mask"); a change to the mask updates it with `adcanvas mask --product
    // tests/fixtures/product_white.jpg --out tests/fixtures/product_white_mask.png`.
    assert_eq!(written, image::open(fixture("product_white_mask.png")).unwrap().to_luma8(), "the CLI's mask changed");

    let previews: Vec<image::GrayImage> = [None, Some(&mask)]
        .iter()
        .enumerate()
        .map(|(i, given)| {
            let shown = tmp(&format!("round_trip_{i}.png"));
            let mut cli = Cli::small_ad(&photo, &tmp(&format!("round_trip_ad_{i}.png"))).args(&[
                "--device",
                "cpu",
                "--seed",
                "1",
                "--mask-out",
                shown.to_str().unwrap(),
            ]);
            if let Some(m) = given {
                cli = cli.args(&["--mask", m.to_str().unwrap()]);
            }
            let run = cli.run();
            assert!(run.success(), "{run:?}");
            assert_eq!(run.report()["mask_source"], if given.is_some() { "given" } else { "background" });
            image::open(&shown).unwrap().to_luma8()
        })
        .collect();
    let worst = previews[0].pixels().zip(previews[1].pixels()).map(|(a, b)| a.0[0].abs_diff(b.0[0])).max();
    assert!(worst <= Some(1), "the given mask's preview differs by {worst:?} levels");
}
