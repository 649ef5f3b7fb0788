//! Ends a native run whose GPU stops answering, instead of letting it hang.
//!
//! The pipeline calls [`beat`] after every stage and denoising step. The CLI starts [`watch`]:
//! when no beat comes for the timeout (kernels that never finish, a lost device whose fences
//! never signal), or a GPU thread has panicked and nothing has moved for [`AFTER_PANIC`], it says
//! so and exits non-zero. [`install_panic_hook`] makes a panic on the main thread end the process
//! at once, before unwinding drops GPU objects (a wgpu driver that panicked while holding its
//! own lock deadlocks in those drops). Beats cost one atomic store; nothing watches them in the
//! browser, where the page's own error events serve.

use std::any::Any;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use web_time::Instant;

/// How long the watchdog waits after a GPU thread panicked before it ends the run.
pub const AFTER_PANIC_SECONDS: u64 = 10;

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
/// Milliseconds from [`START`] to the last beat.
static LAST_BEAT_MS: AtomicU64 = AtomicU64::new(0);
/// The last stage that finished.
static STAGE: Mutex<&'static str> = Mutex::new("starting");
/// The latest panic seen on a thread other than the main one, and when.
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
static PANIC: Mutex<Option<(u64, String)>> = Mutex::new(None);
/// Open [`quietly`] scopes: their panics are handled (and reported) by the code that caught them.
static QUIET: AtomicUsize = AtomicUsize::new(0);

fn now_ms() -> u64 {
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// Records that the run moved on: `stage` has finished.
pub fn beat(stage: &'static str) {
    LAST_BEAT_MS.store(now_ms(), Ordering::Relaxed);
    if let Ok(mut current) = STAGE.lock() {
        *current = stage;
    }
}

/// Runs `f` with panics (on any thread) neither printed nor counted by the watchdog: for code
/// that catches them and turns them into a clear message itself (the GPU self-test).
pub fn quietly<R>(f: impl FnOnce() -> R) -> R {
    struct Guard;
    impl Drop for Guard {
        fn drop(&mut self) {
            QUIET.fetch_sub(1, Ordering::SeqCst);
        }
    }
    QUIET.fetch_add(1, Ordering::SeqCst);
    let _guard = Guard;
    f()
}

/// The text of a panic's payload.
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// For the CLI: a panic on the main thread prints one clear line and exits 101 at once; one on
/// another thread (a GPU runner) is recorded for [`watch`] and printed as Rust would.
#[cfg(not(target_arch = "wasm32"))]
pub fn install_panic_hook() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if QUIET.load(Ordering::SeqCst) > 0 {
            return;
        }
        let message = panic_message(info.payload());
        let thread = std::thread::current();
        if thread.name() == Some("main") {
            let place = info.location().map(|l| format!(" ({}:{})", l.file(), l.line())).unwrap_or_default();
            eprintln!("adcanvas: internal error: {message}{place}");
            eprintln!("adcanvas: if this happened on the GPU, --device cpu runs without it.");
            std::process::exit(101);
        }
        if let Ok(mut panic) = PANIC.lock() {
            *panic = Some((now_ms(), message));
        }
        default(info);
    }));
}

/// Starts the watchdog thread: the run ends with exit code 3 and a message when no [`beat`]
/// comes for `timeout_s` seconds (0: never), or for [`AFTER_PANIC_SECONDS`] after a GPU thread
/// panicked.
#[cfg(not(target_arch = "wasm32"))]
pub fn watch(timeout_s: u64, what: &'static str) {
    beat("opening the device");
    let spawned = std::thread::Builder::new().name("adcanvas-watchdog".into()).spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(250));
            let now = now_ms();
            let idle_s = now.saturating_sub(LAST_BEAT_MS.load(Ordering::Relaxed)) / 1000;
            let stage = STAGE.lock().map(|s| *s).unwrap_or("?");
            let panic = PANIC.lock().ok().and_then(|p| p.clone());
            if let Some((at, message)) = panic {
                let beat_since = LAST_BEAT_MS.load(Ordering::Relaxed) > at;
                if !beat_since && now.saturating_sub(at) / 1000 >= AFTER_PANIC_SECONDS {
                    eprintln!("adcanvas: the {what} failed after {stage:?}: a GPU thread panicked ({message}).");
                    eprintln!("adcanvas: giving up; --device cpu runs without the GPU.");
                    std::process::exit(3);
                }
            }
            if timeout_s > 0 && idle_s >= timeout_s {
                eprintln!("adcanvas: the {what} stopped answering: nothing moved for {idle_s} s after {stage:?}.");
                eprintln!(
                    "adcanvas: giving up; --device cpu runs without the GPU, and --gpu-timeout gives a slow GPU longer."
                );
                std::process::exit(3);
            }
        }
    });
    if let Err(e) = spawned {
        eprintln!("adcanvas: note: no watchdog thread ({e}); a hung GPU would not be noticed");
    }
}
