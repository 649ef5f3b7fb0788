//! `adcanvas batch`: a whole catalogue's ads from one manifest, in one process per shard.
//!
//! Each row is a `generate` command line written as columns, parsed by the same clap definition,
//! so a row means exactly what the same options mean to `generate` and makes the same ad. The
//! model is loaded once. An ad's file name comes from its row's content (and its photo's bytes),
//! and a file under that name is only ever complete (written beside it, then renamed), so a run
//! killed and started again skips what is done and makes nothing twice. `--shard I/N` keeps the
//! rows whose content hash is I modulo N: N processes share a manifest with no coordination but
//! the output folder.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::{Args, FromArgMatches};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{AdArgs, ModelArgs, Photo, ad_report, segmented, web_time_now};
use adcanvas::pipeline::{GenerateOptions, generate};

/// This process's share of the rows: those whose hash is `index` modulo `count`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Shard {
    pub index: u64,
    pub count: u64,
}

impl Shard {
    /// `I/N` with 0 ≤ I < N (a Kubernetes `JOB_COMPLETION_INDEX` or a Slurm array task id is I).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a shard: write I/N with 0 ≤ I < N, e.g. 0/4");
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (i.trim().parse::<u64>().map_err(|_| bad())?, n.trim().parse::<u64>().map_err(|_| bad())?);
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Self { index, count })
    }
}

impl fmt::Display for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-of-{}", self.index, self.count)
    }
}

/// One manifest row: its columns in order, and its number (1 = the first data row).
struct Row {
    number: usize,
    columns: Vec<(String, String)>,
}

impl Row {
    /// A stable hash of the row's text (column names and values, in column order, names
    /// normalised): decides its shard, so a bad row is reported by exactly one shard too.
    fn text_hash(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for (k, v) in &self.columns {
            h.update(option_name(k).as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
        h.finalize().into()
    }

    fn shard_of(&self, count: u64) -> u64 {
        let h = self.text_hash();
        u64::from_le_bytes(h[..8].try_into().expect("8 bytes")) % count
    }
}

/// `fill_holes` → `fill-holes`: the manifest may write options either way.
fn option_name(column: &str) -> String {
    column.trim().trim_start_matches("--").replace('_', "-").to_lowercase()
}

/// A manifest row as read: the row, or its number and why it is not one.
type RowRead = Result<Row, (usize, String)>;

/// Reads a `.csv` (header row of option names) or `.jsonl` manifest; a line that is not a row
/// (bad JSON, a value that is an object) is a row error, reported with its number.
fn read_manifest(path: &Path) -> Result<Vec<RowRead>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("cannot read the manifest {}: {e}", path.display()))?;
    let is_csv = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let mut rows = Vec::new();
    if is_csv {
        let mut reader = csv::ReaderBuilder::new().flexible(false).trim(csv::Trim::All).from_reader(text.as_bytes());
        let header: Vec<String> = reader
            .headers()
            .map_err(|e| format!("{}: no header row of option names: {e}", path.display()))?
            .iter()
            .map(str::to_string)
            .collect();
        for (i, record) in reader.records().enumerate() {
            let number = i + 1;
            rows.push(match record {
                Ok(r) => Ok(Row {
                    number,
                    columns: header
                        .iter()
                        .cloned()
                        .zip(r.iter().map(str::to_string))
                        .filter(|(_, v)| !v.is_empty())
                        .collect(),
                }),
                Err(e) => Err((number, format!("not a CSV row: {e}"))),
            });
        }
    } else {
        for (i, line) in text.lines().filter(|l| !l.trim().is_empty()).enumerate() {
            let number = i + 1;
            let row = serde_json::from_str::<serde_json::Map<String, Value>>(line)
                .map_err(|e| format!("not a JSON object: {e}"))
                .and_then(|object| {
                    object
                        .into_iter()
                        .filter(|(_, v)| !v.is_null())
                        .map(|(k, v)| match v {
                            Value::String(s) => Ok((k, s)),
                            Value::Number(n) => Ok((k, n.to_string())),
                            Value::Bool(b) => Ok((k, b.to_string())),
                            _ => Err(format!("column '{k}' is not a string, number or true/false")),
                        })
                        .collect::<Result<Vec<_>, _>>()
                });
            rows.push(row.map(|columns| Row { number, columns }).map_err(|e| (number, e)));
        }
    }
    Ok(rows)
}

/// Options a row may not set: they belong to the whole batch (one model, one device) or are
/// decided by it (the output's name).
const BATCH_WIDE: &[&str] = &[
    "out",
    "model",
    "device",
    "gpu-binding-limit-mb",
    "gpu-timeout",
    "quantized-weights",
    "mask-out",
    "reference-seen-out",
];

/// A row's ad options, parsed by `generate`'s own definition; paths relative to the manifest.
fn parse_row(row: &Row, base: &Path) -> Result<AdArgs, String> {
    let command = AdArgs::augment_args(clap::Command::new("row").no_binary_name(true));
    let mut argv: Vec<String> = vec!["--out".into(), "unused.png".into()];
    for (column, value) in &row.columns {
        let name = option_name(column);
        if BATCH_WIDE.contains(&name.as_str()) {
            return Err(format!("'{name}' is set for the whole batch (on the command line), not per row"));
        }
        let arg = command.get_arguments().find(|a| a.get_long() == Some(name.as_str())).ok_or_else(|| {
            format!("unknown column '{column}' (columns are generate's options, e.g. product, prompt, size, seed)")
        })?;
        let value = if ["product", "mask", "reference", "reference-mask"].contains(&name.as_str()) {
            base.join(value).display().to_string()
        } else {
            value.clone()
        };
        if arg.get_action().takes_values() {
            argv.extend([format!("--{name}"), value]);
        } else {
            match value.to_lowercase().as_str() {
                "true" | "1" | "yes" => argv.push(format!("--{name}")),
                "false" | "0" | "no" => {}
                other => return Err(format!("column '{column}' is a switch: true or false, not '{other}'")),
            }
        }
    }
    let matches = command.try_get_matches_from(&argv).map_err(|e| {
        // clap's message without its usage and help lines, on one line.
        let text = e.to_string();
        let lines: Vec<&str> =
            text.lines().take_while(|l| !l.starts_with("Usage:")).map(str::trim).filter(|l| !l.is_empty()).collect();
        lines.join(" ").trim_start_matches("error: ").to_string()
    })?;
    AdArgs::from_arg_matches(&matches).map_err(|e| e.to_string())
}

/// The row's ads' file names: the photo's stem and a hash of the row and of every file it
/// names, so a changed photo or prompt is a new ad and an unchanged one is found again.
fn ad_names(row: &Row, ad: &AdArgs) -> Result<Vec<String>, String> {
    let mut h = Sha256::new();
    h.update(row.text_hash());
    let files = [
        Some(&ad.product),
        ad.mask.mask.as_ref(),
        ad.reference.reference.as_ref(),
        ad.reference.reference_mask.as_ref(),
    ];
    for path in files.into_iter().flatten() {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        h.update(Sha256::digest(&bytes));
    }
    let hash: String = h.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect();
    let stem: String = ad
        .product
        .file_stem()
        .map(|s| {
            s.to_string_lossy().chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect()
        })
        .unwrap_or_else(|| "ad".into());
    Ok((0..ad.count)
        .map(|i| if ad.count == 1 { format!("{stem}-{hash}.png") } else { format!("{stem}-{hash}-{}.png", i + 1) })
        .collect())
}

/// An ad on disk is done when it decodes whole at the size it should have.
fn complete(path: &Path, width: u32, height: u32) -> bool {
    image::open(path).is_ok_and(|img| (img.width(), img.height()) == (width, height))
}

/// Where an ad is written before it is renamed to its name (a dot file beside it).
fn part_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.part"))
}

/// Writes the PNG beside `path`, syncs it, then renames it into place: a reader never sees a
/// partial file under the final name, and a killed run leaves at most a `.part` file, which the
/// shard that owns the row removes when it runs again.
fn write_atomically(path: &Path, image: &image::RgbaImage) -> Result<(), String> {
    let part = part_path(path);
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).map_err(|e| format!("PNG encoding failed: {e}"))?;
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&part)?;
        f.write_all(bytes.get_ref())?;
        f.sync_all()?;
        std::fs::rename(&part, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&part);
        format!("cannot write {}: {e}", path.display())
    })
}

/// Counts for the summary.
#[derive(Default)]
struct Tally {
    made: usize,
    skipped: usize,
    failed: Vec<Value>,
}

/// Runs this shard's rows of `manifest` into `out`: one model load, each ad made or skipped, each
/// bad row reported and passed over; a report line per ad (stdout and the report file) and a
/// summary at the end. Fails (exit 1) only when the batch cannot run at all, or a row failed.
pub fn run(manifest: &Path, out: &Path, shard: Shard, report: Option<PathBuf>, run: &ModelArgs) -> Result<(), String> {
    let started = web_time_now();
    let base = manifest.parent().unwrap_or(Path::new(".")).to_path_buf();
    let rows = read_manifest(manifest)?;
    std::fs::create_dir_all(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let report_path = report.unwrap_or_else(|| out.join(format!("report-{shard}.jsonl")));
    let mut report_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&report_path)
        .map_err(|e| format!("cannot open the report {}: {e}", report_path.display()))?;
    let mut tally = Tally::default();
    let mut record = |line: Value, tally: &mut Tally| {
        match line["status"].as_str() {
            Some("made") => tally.made += 1,
            Some("skipped") => tally.skipped += 1,
            _ => tally.failed.push(json!({ "row": line["row"], "reason": line["reason"] })),
        }
        println!("{line}");
        let _ = writeln!(report_file, "{line}");
    };

    // This shard's rows, parsed; bad rows are reported at once.
    let mut work: Vec<(usize, AdArgs, Vec<PathBuf>)> = Vec::new();
    for row in rows {
        let row = match row {
            Ok(row) => row,
            Err((number, reason)) => {
                // Unreadable rows have no content to hash: shard 0 reports them.
                if shard.index == 0 {
                    record(json!({ "row": number, "status": "failed", "reason": reason }), &mut tally);
                }
                continue;
            }
        };
        if row.shard_of(shard.count) != shard.index {
            continue;
        }
        match parse_row(&row, &base).and_then(|ad| ad_names(&row, &ad).map(|names| (ad, names))) {
            Ok((ad, names)) => {
                let paths: Vec<PathBuf> = names.iter().map(|n| out.join(n)).collect();
                for path in &paths {
                    let _ = std::fs::remove_file(part_path(path)); // left by a killed run of this shard
                }
                work.push((row.number, ad, paths));
            }
            Err(reason) => record(json!({ "row": row.number, "status": "failed", "reason": reason }), &mut tally),
        }
    }
    let total: usize = work.iter().map(|(_, _, paths)| paths.len()).sum();
    eprintln!("adcanvas batch: shard {shard}: {} rows, {total} ads", work.len());

    let progress = indicatif::ProgressBar::new(total as u64);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{bar:32} {pos}/{len} ads · {per_sec} · ETA {eta} · {msg}")
            .expect("a valid template"),
    );
    let mut loaded = None;
    let batch_started = Instant::now();
    let mut done = 0usize;
    for (number, ad, paths) in &work {
        let mut tick = |name: &Path, tally: &Tally| {
            done += 1;
            progress.set_message(name.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default());
            progress.inc(1);
            if progress.is_hidden() {
                let rate = tally.made as f64 / batch_started.elapsed().as_secs_f64().max(1e-9) * 60.0;
                let eta =
                    if tally.made > 0 { format!("{:.0} s", (total - done) as f64 / rate * 60.0) } else { "?".into() };
                eprintln!("adcanvas batch: {done}/{total} {} · {rate:.1} ads/min · ETA {eta}", name.display());
            }
        };
        // The model loads with the first ad that must be made, so a finished batch loads nothing.
        let product = ad.mask.product(&ad.product);
        let reference = ad.reference.load();
        let (mut photo, reference) = match (product, reference) {
            (Ok(p), Ok(r)) => (p, r),
            (Err(reason), _) | (_, Err(reason)) => {
                record(json!({ "row": number, "status": "failed", "reason": reason }), &mut tally);
                for path in paths {
                    tick(path, &tally);
                }
                continue;
            }
        };
        for (i, path) in paths.iter().enumerate() {
            let seed = ad.seed + i as u64;
            let size = ad.size.or_else(|| {
                loaded.as_ref().map(|l: &super::Loaded| {
                    let s = l.model.native_size() as u32;
                    (s, s)
                })
            });
            if let Some((w, h)) = size
                && complete(path, w, h)
            {
                record(json!({ "row": number, "status": "skipped", "output": path, "seed": seed }), &mut tally);
                tick(path, &tally);
                continue;
            }
            if loaded.is_none() {
                loaded = Some(progress.suspend(|| run.load("batch"))?);
            }
            let model = loaded.as_ref().expect("loaded above");
            if let Photo::Busy(bytes) = &photo {
                // A busy background: the cut-out network finds the product, once for the row.
                match segmented(bytes, &model.model) {
                    Ok(product) => photo = Photo::Ready(product),
                    Err(reason) => {
                        record(json!({ "row": number, "status": "failed", "reason": reason }), &mut tally);
                        for path in &paths[i..] {
                            tick(path, &tally);
                        }
                        break;
                    }
                }
            }
            let Photo::Ready(product) = &photo else { unreachable!("masked above") };
            let options = model.sized(GenerateOptions { seed, ..ad.options() });
            if complete(path, options.width, options.height) {
                record(json!({ "row": number, "status": "skipped", "output": path, "seed": seed }), &mut tally);
                tick(path, &tally);
                continue;
            }
            let ad_started = web_time_now();
            let result =
                pollster::block_on(generate(&model.model, product, reference.as_ref(), &options, &mut |_, _| true))
                    .map_err(|e| e.to_string())
                    .and_then(|generated| write_atomically(path, &generated.image).map(|()| generated));
            match result {
                Ok(generated) => {
                    let mut line =
                        ad_report(path, &options, &generated, product, model, run.device.device, None, ad_started);
                    line["row"] = json!(number);
                    line["status"] = json!("made");
                    record(line, &mut tally);
                }
                Err(reason) => {
                    record(json!({ "row": number, "status": "failed", "reason": reason, "seed": seed }), &mut tally)
                }
            }
            tick(path, &tally);
        }
    }
    progress.finish_and_clear();

    let minutes = batch_started.elapsed().as_secs_f64() / 60.0;
    let summary = json!({
        "summary": {
            "shard": shard.to_string(),
            "made": tally.made,
            "skipped": tally.skipped,
            "failed": tally.failed.len(),
            "failures": tally.failed,
            "ads_per_minute": if tally.made > 0 { (tally.made as f64 / minutes * 10.0).round() / 10.0 } else { 0.0 },
            "load_model_ms": loaded.as_ref().map(|l| (l.load_ms * 10.0).round() / 10.0),
            "total_s": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            "report": report_path,
        }
    });
    println!("{summary}");
    let _ = writeln!(report_file, "{summary}");
    eprintln!(
        "adcanvas batch: shard {shard}: {} made, {} skipped, {} failed (report: {})",
        tally.made,
        tally.skipped,
        tally.failed.len(),
        report_path.display()
    );
    for failure in &tally.failed {
        eprintln!("adcanvas batch:   row {}: {}", failure["row"], failure["reason"].as_str().unwrap_or(""));
    }
    if tally.failed.is_empty() { Ok(()) } else { Err(format!("{} rows failed (see above)", tally.failed.len())) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shards_parse_and_refuse_what_is_not_one() {
        assert_eq!(Shard::parse("1/4"), Ok(Shard { index: 1, count: 4 }));
        assert_eq!(Shard::parse("0/1").unwrap().to_string(), "0-of-1");
        for bad in ["4/4", "1/0", "a/2", "3", ""] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn every_row_falls_in_exactly_one_shard() {
        let rows: Vec<Row> = (0..200)
            .map(|i| Row {
                number: i,
                columns: vec![("prompt".into(), format!("scene {i}")), ("seed".into(), i.to_string())],
            })
            .collect();
        let mut per_shard = [0usize; 3];
        for row in &rows {
            per_shard[row.shard_of(3) as usize] += 1;
        }
        assert_eq!(per_shard.iter().sum::<usize>(), 200);
        assert!(per_shard.iter().all(|&n| n > 40), "{per_shard:?}");
        // Column spelling does not move a row: `fill_holes` and `fill-holes` are one option.
        let a = Row { number: 1, columns: vec![("text_weight".into(), "1".into())] };
        let b = Row { number: 9, columns: vec![("text-weight".into(), "1".into())] };
        assert_eq!(a.text_hash(), b.text_hash());
    }

    #[test]
    fn rows_parse_as_generate_options() {
        let row = Row {
            number: 1,
            columns: vec![
                ("product".into(), "photo.png".into()),
                ("size".into(), "384x256".into()),
                ("seed".into(), "7".into()),
                ("no_pfv".into(), "true".into()),
            ],
        };
        let ad = parse_row(&row, Path::new("/shop")).unwrap();
        assert_eq!(ad.product, Path::new("/shop/photo.png"));
        assert_eq!((ad.size, ad.seed, ad.reference.no_pfv), (Some((384, 256)), 7, true));
        let bad = |columns: Vec<(&str, &str)>| {
            let row = Row { number: 2, columns: columns.into_iter().map(|(k, v)| (k.into(), v.into())).collect() };
            parse_row(&row, Path::new(".")).err().unwrap_or_default()
        };
        assert!(
            bad(vec![("product", "p.png"), ("size", "12x")]).contains("12x"),
            "{}",
            bad(vec![("product", "p.png"), ("size", "12x")])
        );
        assert!(bad(vec![("product", "p.png"), ("colour", "red")]).contains("unknown column 'colour'"));
        assert!(bad(vec![("product", "p.png"), ("model", "m")]).contains("for the whole batch"));
        let no_product = bad(vec![("prompt", "a beach")]);
        assert!(no_product.contains("product"), "{no_product}");
    }
}
