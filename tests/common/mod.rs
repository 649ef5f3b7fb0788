//! What the CLI tests share: fixtures, a scratch folder, and the `adcanvas` binary run as a child
//! process with a deadline (a run still going at the deadline is killed and fails as a hang).
#![allow(dead_code)] // each test binary uses its own part

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

/// A path in this test process's own scratch folder.
pub fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("adcanvas-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// How a run of the binary ended.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub seconds: f64,
}

impl Run {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Its JSON report (one ad).
    pub fn report(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("stdout is no JSON report ({e}): {self:?}"))
    }

    /// Its JSON reports, one per ad.
    pub fn reports(&self) -> Vec<serde_json::Value> {
        serde_json::Deserializer::from_str(&self.stdout)
            .into_iter()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("stdout is no JSON reports ({e}): {self:?}"))
    }
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exit {:?} after {:.1} s\nstdout: {}\nstderr: {}", self.code, self.seconds, self.stdout, self.stderr)
    }
}

/// One command line of the binary, built up by a test.
#[derive(Clone, Default)]
pub struct Cli {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

impl Cli {
    pub fn new(args: &[&str]) -> Self {
        Self::default().args(args)
    }

    /// `generate --product PRODUCT --out OUT`, for a test to add to.
    pub fn generate(product: &Path, out: &Path) -> Self {
        Self::new(&["generate", "--product", product.to_str().unwrap(), "--out", out.to_str().unwrap()])
    }

    /// A small, fast ad: 64², 2 steps, a prompt; the seed and the device are the test's to add.
    pub fn small_ad(product: &Path, out: &Path) -> Self {
        Self::generate(product, out).args(&["--prompt", "a jar on marble", "--size", "64", "--steps", "2"])
    }

    pub fn args(mut self, more: &[&str]) -> Self {
        self.args.extend(more.iter().map(|s| s.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Starts it without waiting (for runs side by side, or one to kill midway).
    pub fn spawn(&self) -> std::process::Child {
        let mut command = Command::new(env!("CARGO_BIN_EXE_adcanvas"));
        command
            .args(&self.args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command.spawn().expect("the adcanvas binary starts")
    }

    /// Runs it, allowing 15 minutes (a first run on lavapipe compiles kernels for minutes).
    pub fn run(&self) -> Run {
        self.run_within(900)
    }

    /// Runs it; still running after `deadline_s` is a hang: killed, and the test fails.
    pub fn run_within(&self, deadline_s: u64) -> Run {
        static RUNS: AtomicUsize = AtomicUsize::new(0);
        let n = RUNS.fetch_add(1, Ordering::SeqCst);
        let (out, err) = (tmp(&format!("run-{n}.out")), tmp(&format!("run-{n}.err")));
        let mut command = Command::new(env!("CARGO_BIN_EXE_adcanvas"));
        command
            .args(&self.args)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        let started = Instant::now();
        let mut child = command.spawn().expect("the adcanvas binary starts");
        let code = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if started.elapsed() > Duration::from_secs(deadline_s) {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!(
                    "adcanvas {:?} hung: still running after {deadline_s} s\nstderr: {}",
                    self.args,
                    std::fs::read_to_string(&err).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Run {
            code,
            stdout: std::fs::read_to_string(&out).unwrap(),
            stderr: std::fs::read_to_string(&err).unwrap(),
            seconds: started.elapsed().as_secs_f64(),
        }
    }
}
