//! The plumbing of the secrets tests: tracing caches each call site's interest
//! process-wide, so a capturing subscriber next to tests running in parallel
//! misses events. A scenario therefore runs alone in a child process of this
//! test binary, with a global subscriber writing to a file, and writes the
//! secrets it used beside that file for the parent to search for.

use std::path::PathBuf;
use std::process::Output;

/// Environment variable naming the child's log file.
const LOG_VAR: &str = "CHATHUB_PROXY_TEST_SECRETS_LOG";

/// What the child left behind.
pub struct Captured {
    pub output: Output,
    pub logs: String,
    /// The non-empty secrets the scenario reported.
    pub secrets: Vec<String>,
}

/// Parent side: run the ignored test `scenario` (full path, e.g.
/// `tokens::secrets_scenario`) in a child process and collect its logs.
pub fn run_child(scenario: &str) -> Captured {
    let log = std::env::temp_dir().join(format!(
        "chathub-proxy-secrets-{}-{:x}.log",
        std::process::id(),
        rand::random::<u64>()
    ));
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            scenario,
            "--exact",
            "--include-ignored",
            "--test-threads=1",
            "--nocapture",
        ])
        .env(LOG_VAR, &log)
        .env_remove("RUST_LOG")
        .env_remove("TEST_LOG")
        .output()
        .expect("run the scenario");
    let secrets_path = log.with_extension("secrets");
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    let secrets = std::fs::read_to_string(&secrets_path).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&secrets_path);
    assert!(
        output.status.success(),
        "scenario failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let secrets = secrets
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    Captured {
        output,
        logs,
        secrets,
    }
}

/// Child side: when started by [`run_child`], install a global subscriber
/// with `filter` writing to the log file, run `scenario` on a two-worker
/// runtime and record the secrets it returns. Started any other way (a plain
/// `--include-ignored` run), it does nothing.
pub fn child<F>(filter: &str, scenario: impl FnOnce() -> F)
where
    F: std::future::Future<Output = Vec<String>>,
{
    let Some(log) = std::env::var_os(LOG_VAR).map(PathBuf::from) else {
        return;
    };
    let file = std::fs::File::create(&log).expect("log file");
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let secrets = rt.block_on(scenario());
    std::fs::write(log.with_extension("secrets"), secrets.join("\n")).expect("secrets file");
}
