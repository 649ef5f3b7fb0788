//! Every fuzz target's seed corpus and every input a fuzzer ever crashed on (`tests/fuzz/TARGET/`)
//! run through the target's code (`fuzz/targets.rs`): the regression tests for what fuzzing found,
//! and the CI check that the targets still run. The long runs are `scripts/fuzz.sh TARGET SECONDS`.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::Path;

#[test]
fn every_fuzz_input_on_record_runs_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut ran = Vec::new();
    for (name, target) in targets::TARGETS {
        let dir = root.join(name);
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e} (each target needs a seed corpus)", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{}: an empty seed corpus", dir.display());
        for file in &files {
            let data = std::fs::read(file).unwrap();
            // A panic names the file, so the failure says which recorded input broke.
            let caught = std::panic::catch_unwind(|| target(&data));
            assert!(caught.is_ok(), "fuzz target {name} panicked on {}", file.display());
        }
        ran.push(format!("{name}: {}", files.len()));
    }
    println!("fuzz inputs replayed: {}", ran.join(", "));
}

/// CI's brief fuzzing run: every target's recorded inputs mutated for a second each by a
/// fixed-seed generator (bit flips, bytes overwritten with edge values, runs inserted, removed or
/// repeated, truncation, splices of two inputs), in seconds and with nothing more to build. It is
/// not coverage-guided: the long runs are libFuzzer's (`scripts/fuzz.sh`, docs/RELIABILITY.md).
/// An input that panics is written to the temporary folder and named in the failure, to be added
/// to `tests/fuzz/TARGET/` with its fix.
#[test]
fn every_fuzz_target_survives_a_brief_mutation_run() {
    use rand::{Rng, SeedableRng};
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let mut ran = Vec::new();
    for (index, (name, target)) in targets::TARGETS.iter().enumerate() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21 + index as u64);
        let mut paths: Vec<_> = std::fs::read_dir(root.join(name)).unwrap().map(|e| e.unwrap().path()).collect();
        paths.sort();
        let inputs: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
        // One second a target: thousands of runs for most, fewer for a photo (~14 ms when it
        // decodes). The generator's sequence is fixed; only where it stops depends on the machine.
        let started = std::time::Instant::now();
        let mut runs = 0;
        while started.elapsed() < std::time::Duration::from_secs(1) {
            let run = runs;
            runs += 1;
            let mut data = inputs[rng.random_range(0..inputs.len())].clone();
            for _ in 0..rng.random_range(1..=4) {
                mutate(&mut data, &inputs, &mut rng);
            }
            if std::panic::catch_unwind(|| target(&data)).is_err() {
                let keep = std::env::temp_dir().join(format!("adcanvas-fuzz-{name}-{run}.bin"));
                std::fs::write(&keep, &data).unwrap();
                panic!("fuzz target {name} panicked on mutation {run}, kept in {}", keep.display());
            }
        }
        ran.push(format!("{name}: {runs} in {:.1} s", started.elapsed().as_secs_f32()));
    }
    println!("mutated inputs run: {}", ran.join(", "));
}

/// One of libFuzzer's simple mutations, at a random place in `data`.
fn mutate(data: &mut Vec<u8>, inputs: &[Vec<u8>], rng: &mut impl rand::Rng) {
    const EDGES: [u8; 6] = [0, 1, 0x7f, 0x80, 0xfe, 0xff];
    match rng.random_range(0..7) {
        0 if !data.is_empty() => {
            let i = rng.random_range(0..data.len());
            data[i] ^= 1 << rng.random_range(0..8);
        }
        1 if !data.is_empty() => {
            let i = rng.random_range(0..data.len());
            data[i] = EDGES[rng.random_range(0..EDGES.len())];
        }
        2 => {
            let i = rng.random_range(0..data.len() + 1);
            let n = rng.random_range(1..=16);
            let bytes: Vec<u8> = (0..n).map(|_| rng.random()).collect();
            data.splice(i..i, bytes);
        }
        3 if !data.is_empty() => {
            let i = rng.random_range(0..data.len());
            let n = rng.random_range(1..=64).min(data.len() - i);
            data.drain(i..i + n);
        }
        4 if !data.is_empty() => {
            let i = rng.random_range(0..data.len());
            let n = rng.random_range(1..=64).min(data.len() - i);
            let run = data[i..i + n].to_vec();
            data.splice(i..i, run);
        }
        5 => {
            let keep = rng.random_range(0..data.len() + 1);
            data.truncate(keep);
        }
        _ => {
            let other = &inputs[rng.random_range(0..inputs.len())];
            let cut = rng.random_range(0..data.len() + 1);
            let from = rng.random_range(0..other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
    }
}

#[test]
fn the_fuzz_targets_are_the_ones_the_script_and_the_fuzz_crate_name() {
    let manifest = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/Cargo.toml")).unwrap();
    for (name, _) in targets::TARGETS {
        assert!(manifest.contains(&format!("name = \"{name}\"")), "fuzz/Cargo.toml has no [[bin]] for {name}");
        let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("fuzz/fuzz_targets/{name}.rs"));
        assert!(bin.exists(), "{} is missing", bin.display());
    }
}

/// Writes the seeds that only the crate can make (the tiny pack's manifest and UNet file) into
/// `tests/fuzz/`: `cargo test --release --test integration -- --ignored fuzz_corpus::write_pack_seeds`.
#[test]
#[ignore]
fn write_pack_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz");
    let (manifest, files) = targets::tiny_pack();
    std::fs::create_dir_all(root.join("manifest")).unwrap();
    std::fs::create_dir_all(root.join("weights")).unwrap();
    std::fs::write(root.join("manifest/tiny_pack.json"), manifest.to_json()).unwrap();
    std::fs::write(root.join("weights/tiny_unet.safetensors"), &files["unet"]).unwrap();
    std::fs::write(root.join("weights/tiny_vae.safetensors"), &files["vae"]).unwrap();
}

/// The seeds a fuzzer starts from are valid inputs, so its mutations begin deep in each path
/// (a seed the parser refuses would leave the loaders behind it unexplored).
#[test]
fn the_seeds_reach_past_the_parsers() {
    use adcanvas::encoders::text::PromptTokenizer;
    use adcanvas::model::Model;
    use adcanvas::pack::Manifest;
    let seed = |path: &str| std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz").join(path)).unwrap();
    let (_, files) = targets::tiny_pack();
    let manifest = Manifest::parse(&seed("manifest/tiny_pack.json")).unwrap();
    Model::from_pack(manifest, files, &burn::tensor::Device::flex()).expect("the tiny pack's manifest loads its files");
    assert_eq!(seed("weights/tiny_unet.safetensors"), files["unet"], "the weights seed is the tiny pack's UNet");
    PromptTokenizer::from_bytes(&seed("tokenizer/wordpiece.json")).unwrap().encode("a teapot").unwrap();
    PromptTokenizer::fixed_length(&seed("tokenizer/bpe_fixed77.json"), 77).unwrap().encode("a teapot").unwrap();
    adcanvas::pipeline::prepare_product(&seed("photo/product_white.jpg")).expect("a studio photo is cut out");
    adcanvas::pipeline::prepare_product(&seed("photo/product_alpha_32.png")).expect("a cut-out is taken");
    let both = seed("photo_with_mask/white_and_mask.bin");
    let n = u32::from_le_bytes(both[..4].try_into().unwrap()) as usize;
    adcanvas::pipeline::prepare_product_with_mask(&both[4..4 + n], &both[4 + n..]).expect("a photo with its mask");
}
