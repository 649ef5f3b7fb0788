//! Several ads in one `.zip` (the page's "Download all"): stored, not deflated, since PNGs are
//! compressed already. The `zip` crate writes it; names are made safe and unique here.

use std::collections::HashSet;
use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// A zip archive of `files` (name, bytes), in order. Each name loses any folder part and
/// characters file systems refuse, and a repeated name gets `-2`, `-3`… before its extension,
/// so every ad is kept.
pub fn zip_files<'a>(files: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Vec<u8>, String> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored).large_file(false);
    let mut taken = HashSet::new();
    for (name, bytes) in files {
        let name = unique(safe_name(name), &mut taken);
        zip.start_file(name.as_str(), options).map_err(|e| format!("could not add {name} to the zip: {e}"))?;
        zip.write_all(bytes).map_err(|e| format!("could not add {name} to the zip: {e}"))?;
    }
    let out = zip.finish().map_err(|e| format!("could not finish the zip: {e}"))?;
    Ok(out.into_inner())
}

/// The last path segment, with control characters and `<>:"|?*` replaced by `_`.
fn safe_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or(name).trim();
    let cleaned: String =
        base.chars().map(|c| if c.is_control() || "<>:\"|?*".contains(c) { '_' } else { c }).collect();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." { "ad.png".to_string() } else { cleaned }
}

fn unique(name: String, taken: &mut HashSet<String>) -> String {
    if taken.insert(name.to_lowercase()) {
        return name;
    }
    let (stem, ext) = match name.rfind('.') {
        Some(dot) if dot > 0 => (&name[..dot], &name[dot..]),
        _ => (name.as_str(), ""),
    };
    (2..)
        .map(|n| format!("{stem}-{n}{ext}"))
        .find(|candidate| taken.insert(candidate.to_lowercase()))
        .expect("some suffix is free")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// Every file comes back byte for byte, stored, under a safe and unique name.
    #[test]
    fn files_round_trip_under_unique_safe_names() {
        let a = vec![0x89, b'P', b'N', b'G', 1, 2, 3];
        let b: Vec<u8> = (0..=255).collect();
        let files = [
            ("kettle-ad.png", &a[..]),
            ("../x/kettle-ad.png", &b[..]),
            ("Kettle-ad.png", &a[..]),
            ("a:b?.png", &b[..]),
        ];
        let bytes = zip_files(files).unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).unwrap();
        let mut sorted: Vec<String> = archive.file_names().map(|n| n.unwrap().into_owned()).collect();
        sorted.sort();
        assert_eq!(sorted, ["Kettle-ad-3.png", "a_b_.png", "kettle-ad-2.png", "kettle-ad.png"]);
        for (i, (_, want)) in files.iter().enumerate() {
            let mut entry = archive.by_index(i).unwrap();
            assert_eq!(entry.compression(), CompressionMethod::Stored);
            let mut got = Vec::new();
            entry.read_to_end(&mut got).unwrap();
            assert_eq!(&got[..], *want, "entry {i} ({}) changed", entry.name().unwrap());
        }
        assert!(zip_files([]).is_ok(), "an empty archive is still a zip");
    }
}
