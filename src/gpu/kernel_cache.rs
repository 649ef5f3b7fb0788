//! Where natively the autotuner's choices and the device's measured throughput are kept
//! between processes: cubecl's persistence (burn's `persistence` feature), one small database
//! per directory.
//!
//! Without it every process measures the device's memory and compute throughput again (the
//! autotuner's roofline bounds: 10-15 s a process on lavapipe) and tunes every shape again.
//! Entries are keyed by the device and by the candidate kernels' checksum, so a new driver or
//! a changed kernel set is measured afresh. The browser build keeps nothing: it has no
//! autotuner.

use std::path::{Path, PathBuf};

/// The directory, checked: `ADCANVAS_KERNEL_CACHE` when set, else `$XDG_CACHE_HOME/adcanvas/kernels`
/// or `~/.cache/adcanvas/kernels`, else one under the system's temporary directory. A database
/// in it that is not whole is moved aside first (see [`set_aside_if_damaged`]).
pub fn open() -> PathBuf {
    let dir = directory();
    set_aside_damaged_in(&dir);
    dir
}

/// [`set_aside_if_damaged`] for every database in `dir`.
fn set_aside_damaged_in(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for path in entries.flatten().map(|e| e.path()) {
        if path.extension().is_some_and(|e| e == "db") {
            set_aside_if_damaged(&path);
        }
    }
}

fn directory() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    var("ADCANVAS_KERNEL_CACHE")
        .or_else(|| var("XDG_CACHE_HOME").map(|c| c.join("adcanvas").join("kernels")))
        .or_else(|| var("HOME").map(|h| h.join(".cache").join("adcanvas").join("kernels")))
        .unwrap_or_else(|| std::env::temp_dir().join("adcanvas-kernels"))
}

/// Moves a database file that is not a whole SQLite file (not one at all, or cut short by a
/// full disk or a killed process) to `NAME.db.damaged`, with its journal files, and says so.
///
/// cubecl reads such a file without complaint, but then records an entry only once it has been
/// written, so every lookup misses and every autotune measures the device again: a 32² ad on
/// lavapipe took 146 s instead of 34 s (6 s with a whole cache). Set aside, the next run
/// starts a new cache and loses only the time to fill it; the old file is kept to look at.
fn set_aside_if_damaged(db: &Path) {
    let Some(problem) = damage(db) else { return };
    let aside = db.with_extension("db.damaged");
    let moved = std::fs::rename(db, &aside);
    for journal in ["db-wal", "db-shm", "db-tshm"] {
        let _ = std::fs::remove_file(db.with_extension(journal));
    }
    match moved {
        Ok(()) => eprintln!(
            "adcanvas: note: the kernel cache {} {problem}; moved it to {} and starting a new one.",
            db.display(),
            aside.display()
        ),
        Err(e) => eprintln!(
            "adcanvas: note: the kernel cache {} {problem}, and could not be moved aside ({e}); \
             kernels will be measured again in every run until it is removed.",
            db.display()
        ),
    }
}

/// What is wrong with the database file at `db`, if anything can be told from its header and
/// size: SQLite's 16-byte magic, a page size that is a power of two from 512 to 65536, and a
/// length that is a whole number of pages.
fn damage(db: &Path) -> Option<&'static str> {
    use std::io::Read;
    let mut header = [0u8; 100];
    let len = std::fs::metadata(db).ok()?.len();
    if len == 0 {
        return None; // created and not yet written: cubecl fills it
    }
    let mut file = std::fs::File::open(db).ok()?;
    if file.read_exact(&mut header).is_err() {
        return Some("is cut short");
    }
    if &header[..16] != b"SQLite format 3\0" {
        return Some("is not a database");
    }
    let page = match u16::from_be_bytes([header[16], header[17]]) {
        1 => 65536,
        n => u64::from(n),
    };
    if !(512..=65536).contains(&page) || !page.is_power_of_two() {
        return Some("has a damaged header");
    }
    if len % page != 0 {
        return Some("is cut short");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite_header(page: u16) -> Vec<u8> {
        let mut h = vec![0u8; 100];
        h[..16].copy_from_slice(b"SQLite format 3\0");
        h[16..18].copy_from_slice(&page.to_be_bytes());
        h
    }

    #[test]
    fn whole_files_are_kept_and_damaged_ones_are_named() {
        let dir = std::env::temp_dir().join(format!("adcanvas-kernel-cache-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("default.db");
        let mut whole = sqlite_header(4096);
        whole.resize(3 * 4096, 0);
        std::fs::write(&db, &whole).unwrap();
        assert_eq!(damage(&db), None);
        std::fs::write(&db, &whole[..3 * 4096 - 100]).unwrap();
        assert_eq!(damage(&db), Some("is cut short"));
        std::fs::write(&db, &whole[..50]).unwrap();
        assert_eq!(damage(&db), Some("is cut short"));
        std::fs::write(&db, vec![7u8; 8192]).unwrap();
        assert_eq!(damage(&db), Some("is not a database"));
        let mut odd = sqlite_header(1000);
        odd.resize(8000, 0);
        std::fs::write(&db, &odd).unwrap();
        assert_eq!(damage(&db), Some("has a damaged header"));
        std::fs::write(&db, b"").unwrap();
        assert_eq!(damage(&db), None);

        // Set aside with its journal, the next run starting from nothing.
        std::fs::write(&db, vec![7u8; 8192]).unwrap();
        std::fs::write(dir.join("default.db-wal"), b"wal").unwrap();
        set_aside_damaged_in(&dir);
        assert!(!db.exists() && !dir.join("default.db-wal").exists());
        assert_eq!(std::fs::read(dir.join("default.db.damaged")).unwrap(), vec![7u8; 8192]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
