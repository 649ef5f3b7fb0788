//! The CLI never hangs: `--device auto` takes a hardware GPU that passes its self-test or the CPU,
//! `--device gpu` a GPU or a clear error, and every path ends within a bounded time.
//!
//! Each run is a child process with a deadline: a run still going at the deadline is killed and
//! the test fails as a hang.

use crate::common::{Cli, fixture, tmp};

/// A small, fast ad; the device is the CLI's default (`auto`) unless a test adds one.
fn small_ad(out: &std::path::Path) -> Cli {
    Cli::small_ad(&fixture("product_alpha_32.png"), out)
}

/// `cli` on a machine without any Vulkan driver: the loader finds no ICD in an empty folder.
fn without_vulkan_driver(cli: Cli) -> Cli {
    let empty = tmp("no-icd");
    std::fs::create_dir_all(&empty).unwrap();
    let empty = empty.to_str().unwrap();
    cli.env("VK_ICD_FILENAMES", empty).env("VK_DRIVER_FILES", empty).env("VK_ADD_DRIVER_FILES", empty)
}

#[test]
fn auto_without_a_gpu_driver_makes_the_ad_on_the_cpu_and_says_why() {
    let out = tmp("no-driver.png");
    let run = without_vulkan_driver(small_ad(&out)).run_within(120);
    assert_eq!(run.code, Some(0), "{run:?}");
    let report = run.report();
    assert_eq!(report["device"], "cpu", "{run:?}");
    assert_eq!(report["device_detail"]["asked"], "auto");
    let note = report["device_detail"]["note"].as_str().expect("a note saying why the CPU");
    assert!(note.contains("no hardware GPU adapter was found"), "{note}");
    assert!(run.stderr.contains("note: running on the CPU"), "{run:?}");
    assert!(image::open(&out).is_ok(), "the ad was written");
}

#[test]
fn gpu_without_a_gpu_driver_is_a_clear_error_not_a_hang() {
    let out = tmp("no-driver-gpu.png");
    let run = without_vulkan_driver(small_ad(&out).args(&["--device", "gpu"])).run_within(60);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert!(run.stderr.contains("No GPU could be used (no GPU adapter was found"), "{run:?}");
    assert!(run.stderr.contains("--device cpu"), "the message says what to do: {run:?}");
    assert!(!out.exists());
}

#[test]
fn auto_skips_a_software_adapter_and_gpu_takes_it_naming_it() {
    // CI has Mesa lavapipe (scripts/setup.sh): a software Vulkan adapter.
    let auto = Cli::new(&["device"]).run_within(120);
    assert_eq!(auto.code, Some(0), "{auto:?}");
    let report = auto.report();
    assert_eq!(report["used"], "cpu", "{auto:?}");
    let note = report["note"].as_str().unwrap();
    assert!(note.contains("llvmpipe") && note.contains("software adapter"), "{note}");

    let gpu = Cli::new(&["device", "--device", "gpu"]).run_within(120);
    assert_eq!(gpu.code, Some(0), "{gpu:?}");
    let adapter = &gpu.report()["adapter"];
    assert!(adapter["name"].as_str().unwrap().contains("llvmpipe"), "{gpu:?}");
    assert_eq!(adapter["backend"], "vulkan");
    assert_eq!(adapter["software"], true);
    assert!(gpu.stderr.contains("software rasterizer"), "the run says it will be slow: {gpu:?}");
}

#[test]
fn generate_report_names_the_software_adapter_it_ran_on() {
    let out = tmp("lavapipe.png");
    let run = Cli::generate(&fixture("product_alpha_32.png"), &out)
        // The fewest kernels to compile on lavapipe: one UNet batch, no ControlNet (95 s here).
        .args(&["--prompt", "a jar", "--size", "32", "--steps", "1", "--guidance", "1", "--depth-scale", "0"])
        .args(&["--device", "gpu"])
        .run();
    assert_eq!(run.code, Some(0), "{run:?}");
    let report = run.report();
    assert_eq!(report["device"], "gpu");
    let adapter = &report["device_detail"]["adapter"];
    assert!(adapter["name"].as_str().unwrap().contains("llvmpipe"), "{report}");
    assert_eq!(adapter["software"], true);
}

/// What a forced self-test failure does: `auto` falls back to the CPU, `gpu` is an error.
fn forced_failure(mode: &str, expect: &str) {
    // Only the hang waits for the time limit; the others fail as soon as the self-test has run.
    let timeout = if mode == "hang" { "3" } else { "120" };
    let forced = |cli: Cli| {
        cli.env("ADCANVAS_SELF_TEST", mode)
            .env("ADCANVAS_SELF_TEST_TIMEOUT", timeout)
            // lavapipe is what this machine has: let `auto` try it as if it were hardware.
            .env("ADCANVAS_TEST_SOFTWARE_AS_HARDWARE", "1")
    };
    let out = tmp(&format!("forced-{mode}.png"));
    let auto = forced(small_ad(&out)).run_within(300);
    assert_eq!(auto.code, Some(0), "{auto:?}");
    let report = auto.report();
    assert_eq!(report["device"], "cpu", "{auto:?}");
    let note = report["device_detail"]["note"].as_str().unwrap();
    assert!(note.contains("llvmpipe") && note.contains(expect), "{note}");
    assert!(image::open(&out).is_ok());

    let gpu = forced(small_ad(&out).args(&["--device", "gpu"])).run_within(300);
    assert_eq!(gpu.code, Some(1), "{gpu:?}");
    assert!(gpu.stderr.contains("No GPU could be used") && gpu.stderr.contains(expect), "{gpu:?}");
}

#[test]
fn self_test_with_a_wrong_result_falls_back_or_fails() {
    forced_failure("wrong", "failed its self-test: an 8×8 matrix product came back wrong");
}

#[test]
fn self_test_that_panics_falls_back_or_fails() {
    forced_failure("panic", "failed its self-test: it panicked: forced self-test panic");
}

#[test]
fn self_test_that_never_answers_falls_back_or_fails_in_bounded_time() {
    forced_failure("hang", "did not answer within 3 s");
}

#[test]
fn a_gpu_that_stops_answering_mid_run_ends_it_with_a_message() {
    // The self-test passes on lavapipe; then the run stalls after loading the model (a test hook
    // that stands for a kernel that never finishes), and the watchdog must end it.
    let out = tmp("stall.png");
    let run = small_ad(&out)
        .args(&["--device", "gpu", "--gpu-timeout", "2"])
        .env("ADCANVAS_TEST_STALL_AFTER_LOAD", "1")
        .run_within(300);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(run.stderr.contains("the generation stopped answering: nothing moved for 2 s"), "{run:?}");
    assert!(!out.exists());
}
