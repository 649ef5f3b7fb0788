//! `adcanvas batch`: a 12-row manifest (2 bad rows) run as two shards side by side on one output
//! folder, one of them killed midway and started again: every good row's ads exist exactly once,
//! equal what `generate` makes for the same inputs and seed, the bad rows are reported with their
//! reasons, and no temporary file is left.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{Cli, fixture, tmp};

/// The manifest's rows: product, prompt, seed, count, fill (empty = the default).
const ROWS: &[(&str, &str, u64, &str, &str)] = &[
    ("jar.png", "a jar on marble", 1, "", ""),
    ("jar.png", "a jar on a wooden table", 2, "", ""),
    ("bottle.jpg", "a bottle on a beach", 3, "", ""),
    ("bottle.jpg", "a bottle on concrete", 4, "2", ""),
    ("jar.png", "a jar in the snow", 5, "", "0.8"),
    ("bottle.jpg", "a bottle by a pool", 6, "", ""),
    ("jar.png", "a jar among leaves", 7, "", ""),
    ("bottle.jpg", "a bottle in a kitchen", 8, "", ""),
    ("jar.png", "a jar on linen", 9, "", ""),
    ("bottle.jpg", "a bottle at sunset", 10, "", ""),
    ("missing.png", "a product that is not there", 11, "", ""),
    ("jar.png", "a product too large", 12, "", "2"),
];
const BAD_ROWS: [usize; 2] = [11, 12];

fn report_lines(out: &Path) -> Vec<serde_json::Value> {
    let mut lines = Vec::new();
    for shard in ["0-of-2", "1-of-2"] {
        let text = std::fs::read_to_string(out.join(format!("report-{shard}.jsonl"))).unwrap_or_default();
        lines.extend(text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()));
    }
    lines
}

#[test]
fn two_shards_one_killed_midway_make_every_ad_once() {
    let dir = tmp("batch");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(fixture("product_alpha_32.png"), dir.join("jar.png")).unwrap();
    std::fs::copy(fixture("product_white.jpg"), dir.join("bottle.jpg")).unwrap();
    let mut csv = String::from("product,prompt,size,steps,seed,count,fill\n");
    for (product, prompt, seed, count, fill) in ROWS {
        csv.push_str(&format!("{product},{prompt},64,2,{seed},{count},{fill}\n"));
    }
    let manifest = dir.join("manifest.csv");
    std::fs::write(&manifest, csv).unwrap();
    let out = dir.join("ads");
    let shard = |i: u32| {
        Cli::new(&["batch", manifest.to_str().unwrap(), "--out", out.to_str().unwrap()]).args(&[
            "--shard",
            &format!("{i}/2"),
            "--device",
            "cpu",
        ])
    };

    // Both shards side by side; shard 0 is killed once it has made its first ad.
    let mut first = shard(0).spawn();
    let mut second = shard(1).spawn();
    let started = Instant::now();
    let shard0_made =
        || std::fs::read_to_string(out.join("report-0-of-2.jsonl")).unwrap_or_default().contains("\"status\":\"made\"");
    while !shard0_made() {
        assert!(started.elapsed() < Duration::from_secs(600), "shard 0 made no ad in 10 minutes");
        if first.try_wait().unwrap().is_some() {
            break; // finished before it could be killed: the restart below then only skips
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = first.kill();
    first.wait().unwrap();
    let killed_at = report_lines(&out).iter().filter(|l| l["status"] == "made").count();
    // Started again while the other shard may still run: it finishes the rest.
    let restarted = shard(0).run();
    let other = second.wait().unwrap();
    assert!(!restarted.success() || !other.success(), "a bad row fails its shard's exit status");

    let lines = report_lines(&out);
    let mut made: BTreeMap<String, usize> = BTreeMap::new();
    let mut written: BTreeSet<String> = BTreeSet::new();
    let mut rows_done: BTreeSet<u64> = BTreeSet::new();
    let mut failed: BTreeMap<u64, String> = BTreeMap::new();
    for line in &lines {
        match line["status"].as_str() {
            Some("made") => {
                *made.entry(line["output"].as_str().unwrap().to_string()).or_default() += 1;
                written.insert(line["output"].as_str().unwrap().to_string());
                rows_done.insert(line["row"].as_u64().unwrap());
            }
            Some("skipped") => {
                // An ad the killed run finished just before its report line.
                written.insert(line["output"].as_str().unwrap().to_string());
                rows_done.insert(line["row"].as_u64().unwrap());
            }
            Some("failed") => {
                failed.insert(line["row"].as_u64().unwrap(), line["reason"].as_str().unwrap().to_string());
            }
            _ => assert!(line.get("summary").is_some(), "{line}"),
        }
    }
    // Every good row's ads, each made exactly once (the restart skipped what was done).
    let good: BTreeSet<u64> = (1..=ROWS.len() as u64).filter(|r| !BAD_ROWS.contains(&(*r as usize))).collect();
    assert_eq!(rows_done, good, "rows with their ads: {lines:#?}");
    assert_eq!(written.len(), 11, "10 good rows, one of them with 2 ads: {written:?}");
    assert!(made.values().all(|&n| n == 1), "an ad made twice: {made:?} (killed after {killed_at})");
    // The bad rows, with their reasons.
    assert_eq!(failed.keys().copied().collect::<Vec<_>>(), vec![11, 12], "{failed:?}");
    assert!(failed[&11].contains("missing.png"), "{}", failed[&11]);
    assert!(failed[&12].contains("The product size 2 is not valid"), "{}", failed[&12]);
    // Only the ads and the two reports in the folder: no temporary file left.
    let files: BTreeSet<String> =
        std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    let mut expected: BTreeSet<String> =
        written.iter().map(|p| Path::new(p).file_name().unwrap().to_string_lossy().into_owned()).collect();
    expected.extend(["report-0-of-2.jsonl".to_string(), "report-1-of-2.jsonl".to_string()]);
    assert_eq!(files, expected);

    // Each ad is the one `generate` makes for the same inputs and seed (rows 3 and 4's two ads).
    for (row, index, seed) in [(3usize, None, 3u64), (4, Some(1), 4), (4, Some(2), 5)] {
        let (product, prompt, ..) = ROWS[row - 1];
        let line = lines
            .iter()
            .find(|l| {
                l["row"] == row as u64
                    && (l["status"] == "made" || l["status"] == "skipped")
                    && l["seed"] == seed
                    && index.is_none_or(|i| l["output"].as_str().unwrap().ends_with(&format!("-{i}.png")))
            })
            .unwrap_or_else(|| panic!("row {row} seed {seed} written: {lines:#?}"));
        let reference: PathBuf = tmp(&format!("batch_generate_{row}_{seed}.png"));
        let run = Cli::generate(&dir.join(product), &reference)
            .args(&["--prompt", prompt, "--size", "64", "--steps", "2", "--seed", &seed.to_string(), "--device", "cpu"])
            .run();
        assert!(run.success(), "{run:?}");
        let (a, b) = (image::open(line["output"].as_str().unwrap()).unwrap(), image::open(&reference).unwrap());
        assert_eq!(a.to_rgba8(), b.to_rgba8(), "row {row} seed {seed} differs from generate's ad");
    }
}
