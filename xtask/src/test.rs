//! `cargo xtask test`: the whole suite, exactly what CI runs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use anyhow::{Context, bail};
use base64::prelude::{BASE64_STANDARD, Engine as _};

use crate::util::{self, cargo, heading, is_ci, workspace_root};

/// Random inputs each fuzz target must survive, on top of its seed corpus.
const FUZZ_RUNS: u32 = 20_000;
/// Longest random input in the fuzz smoke test.
const FUZZ_MAX_LEN: u32 = 4096;
/// Seconds one input may take before libFuzzer calls it a hang.
const FUZZ_TIMEOUT_SECS: u32 = 30;

/// The steps of the suite, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    Fmt,
    Clippy,
    Build,
    Tests,
    Fuzz,
    Packages,
}

impl Step {
    const ALL: [Step; 6] = [
        Step::Fmt,
        Step::Clippy,
        Step::Build,
        Step::Tests,
        Step::Fuzz,
        Step::Packages,
    ];

    fn name(self) -> &'static str {
        match self {
            Step::Fmt => "fmt",
            Step::Clippy => "clippy",
            Step::Build => "build",
            Step::Tests => "tests",
            Step::Fuzz => "fuzz",
            Step::Packages => "packages",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Step> {
        Step::ALL
            .into_iter()
            .find(|step| step.name() == s)
            .with_context(|| {
                format!("unknown step {s:?} (steps: fmt, clippy, build, tests, fuzz, packages)")
            })
    }
}

pub const USAGE: &str = "\
cargo xtask test [--no-fuzz] [--no-packages] [--only STEP[,STEP...]]

Runs the whole suite, as CI does: fmt, clippy, build, tests, fuzz (smoke),
packages (build, sign, install and compare the DEB/RPM packages; as root).
  --no-fuzz      skip the fuzz smoke test
  --no-packages  skip the packaging test (two release builds, ~20 minutes)
  --only STEP    run only these steps (repeatable or comma-separated):
                 fmt, clippy, build, tests, fuzz, packages";

#[derive(Debug, PartialEq, Eq)]
pub struct Options {
    steps: BTreeSet<Step>,
}

impl Options {
    pub fn parse(args: &[String]) -> anyhow::Result<Options> {
        let mut only = BTreeSet::new();
        let mut no_fuzz = false;
        let mut no_packages = false;
        let mut args = args.iter();
        while let Some(arg) = args.next() {
            let value = match arg.as_str() {
                "--no-fuzz" => {
                    no_fuzz = true;
                    continue;
                }
                "--no-packages" => {
                    no_packages = true;
                    continue;
                }
                "--only" => args.next().context("--only needs a step name")?.as_str(),
                other => match other.strip_prefix("--only=") {
                    Some(value) => value,
                    None => bail!("unknown argument {other:?}\n\n{USAGE}"),
                },
            };
            for name in value.split(',') {
                only.insert(Step::parse(name.trim())?);
            }
        }
        let mut steps = if only.is_empty() {
            Step::ALL.into_iter().collect()
        } else {
            only
        };
        if no_fuzz {
            steps.remove(&Step::Fuzz);
        }
        if no_packages {
            steps.remove(&Step::Packages);
        }
        Ok(Options { steps })
    }
}

pub fn run(options: &Options) -> anyhow::Result<()> {
    let started = Instant::now();
    let skipped: Vec<&str> = Step::ALL
        .into_iter()
        .filter(|s| !options.steps.contains(s))
        .map(Step::name)
        .collect();
    if !skipped.is_empty() {
        let note = format!("skipping at your request: {}", skipped.join(", "));
        if is_ci() {
            println!("\n!!! CI=true and {note}: this run is NOT the whole suite !!!");
        } else {
            println!("{note}");
        }
    }
    // As root (CI), the agent's tests run it sandboxed: its system users
    // must exist, as after a package install. Later issues prepare network
    // namespaces here too.
    crate::users::ensure_system_users("the tests run the agent sandboxed")?;
    for step in &options.steps {
        let step_started = Instant::now();
        let result = match step {
            Step::Fmt => fmt(),
            Step::Clippy => clippy(),
            Step::Build => build(),
            Step::Tests => tests(),
            Step::Fuzz => fuzz_smoke(),
            Step::Packages => crate::dist::check::run(),
        };
        result.with_context(|| format!("step `{}` failed", step.name()))?;
        println!(
            "step `{}` passed in {:.1} s",
            step.name(),
            step_started.elapsed().as_secs_f64()
        );
    }
    let ran: Vec<&str> = options.steps.iter().map(|s| s.name()).collect();
    println!(
        "\nxtask test: all passed ({}) in {:.0} s",
        ran.join(", "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn fmt() -> anyhow::Result<()> {
    heading("fmt: cargo fmt --check");
    let hint = "code is not formatted: run `cargo fmt --all` and look at the diff";
    util::run(cargo().args(["fmt", "--all", "--", "--check"])).context(hint)?;
    // The fuzz projects are workspaces of their own, so `--all` misses them.
    for project in fuzz_projects(&workspace_root())? {
        let mut cmd = cargo();
        cmd.arg("fmt")
            .arg("--manifest-path")
            .arg(project.join("Cargo.toml"))
            .args(["--", "--check"]);
        util::run(&mut cmd).with_context(|| format!("{hint} (in {})", project.display()))?;
    }
    Ok(())
}

fn clippy() -> anyhow::Result<()> {
    heading("clippy: lints, warnings are errors");
    util::run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
}

fn build() -> anyhow::Result<()> {
    // Integration tests start the real binaries from target/debug; building
    // them once here is how the build is shared between test binaries.
    heading("build: the binaries integration tests start");
    util::run(cargo().args(["build", "--workspace", "--bins"]))
}

/// Debian packages the tests use (as root they are installed when missing):
/// nftables and iproute2 for the uplink's network-namespace tests, the
/// PostgreSQL server for the throwaway cluster, chromium and its WebDriver
/// server for the browser tests, and the package managers the package
/// parsers are checked against (apt-ftparchive from apt-utils for a local
/// apt repository; rpm, rpmbuild, createrepo_c and dnf for an RPM one, gpg for its
/// signing key).
const TEST_DEBIAN_PACKAGES: &[&str] = &[
    "nftables",
    "iproute2",
    "postgresql",
    "chromium",
    "chromium-driver",
    "apt-utils",
    "rpm",
    "dnf",
    "createrepo-c",
    "gnupg",
];

fn tests() -> anyhow::Result<()> {
    heading("tests: what the tests need from the machine");
    if nix::unistd::geteuid().is_root() {
        crate::dist::tools::ensure_debian_packages(TEST_DEBIAN_PACKAGES)?;
    } else {
        println!(
            "not root: the tests that need root, nftables, a new PostgreSQL cluster or chromium say so themselves"
        );
    }
    // A Ctrl-C reaches the whole foreground process group: nextest stops
    // its tests and exits, and xtask, which keeps running, stops the
    // cluster and the browsers below instead of leaving them behind.
    let interrupted = Arc::new(AtomicBool::new(false));
    let handler = signal_hook::flag::register(signal_hook::consts::SIGINT, interrupted.clone())
        .context("cannot install a handler for SIGINT")?;
    let result = tests_with_services();
    signal_hook::low_level::unregister(handler);
    if interrupted.load(Ordering::Relaxed) {
        bail!("interrupted (SIGINT)");
    }
    result
}

fn tests_with_services() -> anyhow::Result<()> {
    let tmp = util::target_dir().join("tmp");
    // One chromedriver for the whole run: each browser test opens a session
    // (a fresh headless chromium) on it; nextest runs them one at a time.
    let driver_log = tmp.join(format!("chromedriver-{}.log", std::process::id()));
    let driver = start_chromedriver(&tmp, &driver_log)?;
    // One throwaway PostgreSQL cluster for the whole run: every test that
    // needs PostgreSQL creates a database of its own on it.
    let pg_dir = tmp.join(format!("pg-{}", std::process::id()));
    if pg_dir.exists() {
        std::fs::remove_dir_all(&pg_dir)
            .with_context(|| format!("cannot remove {}", pg_dir.display()))?;
    }
    let cluster = palisade_testkit::pg::Cluster::start(&pg_dir)
        .map_err(|e| anyhow::anyhow!("cannot start the tests' PostgreSQL cluster: {e}"))?;
    println!(
        "PostgreSQL for the tests: {} (port {})",
        pg_dir.display(),
        cluster.port()
    );
    let mut env: Vec<(&str, String)> = cluster.env().into_iter().collect();
    if let Some(driver) = &driver {
        env.extend(driver.env());
    }
    let result = run_tests(&env);
    // Every way out stops what was started: the driver ends the browsers
    // it started with it.
    drop(driver);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&pg_dir);
    if result.is_ok() {
        // Kept when something failed: it says what each browser was told.
        let _ = std::fs::remove_file(&driver_log);
    }
    result
}

/// Starts the run's chromedriver, if it is installed. Without it the
/// browser tests skip with a reason, or fail under `CI=true`; so does this.
fn start_chromedriver(
    tmp: &Path,
    log: &Path,
) -> anyhow::Result<Option<palisade_testkit::webdriver::Chromedriver>> {
    let Some(program) = palisade_testkit::webdriver::find() else {
        if is_ci() {
            bail!(
                "CI=true and chromedriver is not on the PATH: the browser tests cannot run \
                 (as root this step installs chromium and chromium-driver)"
            );
        }
        println!(
            "chromedriver not found: the browser tests will say they skip (apt-get install chromium chromium-driver)"
        );
        return Ok(None);
    };
    std::fs::create_dir_all(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let driver = palisade_testkit::webdriver::Chromedriver::start(&program, Some(log))
        .map_err(|e| anyhow::anyhow!("cannot start the tests' chromedriver: {e}"))?;
    println!(
        "chromedriver for the tests: {} (log: {})",
        driver.url(),
        log.display()
    );
    Ok(Some(driver))
}

fn run_tests(env: &[(&str, String)]) -> anyhow::Result<()> {
    heading("tests: unit and integration tests");
    let with_env = |cmd: &mut Command| {
        for (key, value) in env {
            cmd.env(key, value);
        }
    };
    if util::succeeds(cargo().args(["nextest", "--version"])) {
        let mut nextest = cargo();
        nextest.args(["nextest", "run", "--workspace"]);
        with_env(&mut nextest);
        util::run(&mut nextest)?;
        // nextest does not run doctests; cargo test does.
        heading("tests: doctests (nextest does not run them)");
        return util::run(cargo().args(["test", "--workspace", "--doc"]));
    }
    if is_ci() {
        println!();
        println!("!!! ------------------------------------------------------------------ !!!");
        println!("!!! CI=true but cargo-nextest is not installed: falling back to         !!!");
        println!("!!! `cargo test --workspace`. Install it: cargo install cargo-nextest   !!!");
        println!("!!! ------------------------------------------------------------------ !!!");
        println!();
    } else {
        println!(
            "cargo-nextest not found; using cargo test (cargo install cargo-nextest for nicer output)"
        );
    }
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    with_env(&mut test);
    util::run(&mut test)
}

/// Builds every cargo-fuzz project with stable Rust and runs each target over
/// its seed corpus plus a few thousand random inputs. This proves the targets
/// compile and do not crash quickly; real campaigns use `cargo fuzz run`.
fn fuzz_smoke() -> anyhow::Result<()> {
    let root = workspace_root();
    let projects = fuzz_projects(&root)?;
    if projects.is_empty() {
        bail!("no cargo-fuzz projects found (expected <crate>/fuzz/Cargo.toml)");
    }
    let fuzz_target_dir = util::target_dir().join("fuzz");
    let host = host_triple()?;
    for project in &projects {
        let name = project
            .strip_prefix(&root)
            .unwrap_or(project)
            .display()
            .to_string();
        heading(&format!("fuzz: build {name}"));
        let targets = build_fuzz_project(project, &fuzz_target_dir, &host)
            .with_context(|| format!("cannot build the fuzz targets of {name}"))?;
        if targets.is_empty() {
            bail!("{name} has no fuzz target binaries");
        }
        for (target, binary) in &targets {
            run_fuzz_target(project, &name, target, binary, &fuzz_target_dir)?;
        }
    }
    Ok(())
}

/// `<crate>/fuzz/Cargo.toml` for every directory at the top of the workspace.
fn fuzz_projects(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let entries =
        std::fs::read_dir(root).with_context(|| format!("cannot list {}", root.display()))?;
    let mut projects = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", root.display()))?;
        let dir = entry.path().join("fuzz");
        if dir.join("Cargo.toml").is_file() {
            projects.push(dir);
        }
    }
    projects.sort();
    Ok(projects)
}

fn host_triple() -> anyhow::Result<String> {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let info = util::output(Command::new(rustc).arg("-vV"))?;
    info.lines()
        .find_map(|l| l.strip_prefix("host: "))
        .map(|h| h.trim().to_owned())
        .context("`rustc -vV` did not name the host")
}

/// Builds one fuzz project; returns (target name, executable) per target.
fn build_fuzz_project(
    project: &Path,
    target_dir: &Path,
    host: &str,
) -> anyhow::Result<Vec<(String, PathBuf)>> {
    // The flags `cargo fuzz` passes, minus the nightly-only sanitizer: stable
    // rustc can insert the coverage hooks libFuzzer is guided by, so the
    // random runs explore the code instead of guessing blind. `--target` keeps
    // the flags away from build scripts and proc macros.
    let fuzz_flags = [
        "-Cpasses=sancov-module",
        "-Cllvm-args=-sanitizer-coverage-level=4",
        "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
        "-Cllvm-args=-sanitizer-coverage-pc-table",
        "-Cllvm-args=-sanitizer-coverage-trace-compares",
        "-Cdebug-assertions",
        "-Coverflow-checks",
        "--cfg=fuzzing",
    ];
    let mut rustflags = std::env::var("RUSTFLAGS").unwrap_or_default();
    for flag in fuzz_flags {
        if !rustflags.is_empty() {
            rustflags.push(' ');
        }
        rustflags.push_str(flag);
    }
    let mut cmd = cargo();
    cmd.arg("build")
        .arg("--release")
        .arg("--manifest-path")
        .arg(project.join("Cargo.toml"))
        .args([
            "--bins",
            "--target",
            host,
            "--message-format=json-render-diagnostics",
        ])
        .arg("--target-dir")
        .arg(target_dir)
        .env("RUSTFLAGS", rustflags)
        .stderr(Stdio::inherit());
    println!("$ {}", util::display(&cmd));
    let stdout = util::output(&mut cmd)?;
    let mut targets = Vec::new();
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        let is_bin = message["target"]["kind"]
            .as_array()
            .is_some_and(|k| k.iter().any(|k| k == "bin"));
        if let (true, Some(name), Some(exe)) = (
            is_bin,
            message["target"]["name"].as_str(),
            message["executable"].as_str(),
        ) {
            targets.push((name.to_owned(), PathBuf::from(exe)));
        }
    }
    targets.sort();
    Ok(targets)
}

fn run_fuzz_target(
    project: &Path,
    project_name: &str,
    target: &str,
    binary: &Path,
    target_dir: &Path,
) -> anyhow::Result<()> {
    // libFuzzer adds what it finds to its corpus directory: give it a copy so
    // the checked-in seeds stay as they are.
    let seeds = project.join("corpus").join(target);
    let slug = format!("{}-{target}", project_name.replace('/', "-"));
    let corpus = target_dir.join("smoke-corpus").join(&slug);
    let artifacts = target_dir.join("artifacts").join(&slug);
    for dir in [&corpus, &artifacts] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)
                .with_context(|| format!("cannot remove {}", dir.display()))?;
        }
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let seed_count = copy_seeds(&seeds, &corpus)?;
    if seed_count == 0 {
        println!(
            "warning: {project_name} {target}: no seeds in {}; starting from random inputs",
            seeds.display()
        );
    }

    let mut artifact_prefix = artifacts.clone().into_os_string();
    artifact_prefix.push("/");
    let mut cmd = Command::new(binary);
    cmd.arg(format!("-runs={FUZZ_RUNS}"))
        .arg(format!("-max_len={FUZZ_MAX_LEN}"))
        .arg(format!("-timeout={FUZZ_TIMEOUT_SECS}"))
        .arg({
            let mut arg = std::ffi::OsString::from("-artifact_prefix=");
            arg.push(&artifact_prefix);
            arg
        })
        .arg(&corpus)
        .stdin(Stdio::null());
    let started = Instant::now();
    let out = cmd
        .output()
        .with_context(|| format!("cannot run the fuzz target {}", binary.display()))?;
    if out.status.success() {
        println!(
            "ok   {project_name} {target}: {seed_count} seeds + {FUZZ_RUNS} runs in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        return Ok(());
    }

    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log.lines().collect();
    println!("FAIL {project_name} {target} ({})", out.status);
    println!("--- last lines of libFuzzer's output ---");
    println!("{}", lines[lines.len().saturating_sub(60)..].join("\n"));
    for crash in std::fs::read_dir(&artifacts)
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = crash.path();
        println!("--- crashing input: {} ---", path.display());
        if let Ok(bytes) = std::fs::read(&path) {
            println!("base64: {}", BASE64_STANDARD.encode(&bytes));
        }
    }
    println!(
        "reproduce: {} {}/<crash file>",
        binary.display(),
        artifacts.display()
    );
    bail!(
        "fuzz target {target} of {project_name} failed ({})",
        out.status
    )
}

/// Copies the files of `seeds` (if it exists) into `corpus`; returns how many.
fn copy_seeds(seeds: &Path, corpus: &Path) -> anyhow::Result<usize> {
    let entries = match std::fs::read_dir(seeds) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e).with_context(|| format!("cannot list {}", seeds.display())),
    };
    let mut count = 0;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot list {}", seeds.display()))?;
        let from = entry.path();
        if from.is_file() {
            std::fs::copy(&from, corpus.join(entry.file_name())).with_context(|| {
                format!("cannot copy {} into {}", from.display(), corpus.display())
            })?;
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn steps(options: &Options) -> Vec<&'static str> {
        options.steps.iter().map(|s| s.name()).collect()
    }

    #[test]
    fn default_runs_every_step_in_order() {
        let options = Options::parse(&[]).expect("no flags is valid");
        assert_eq!(
            steps(&options),
            ["fmt", "clippy", "build", "tests", "fuzz", "packages"]
        );
    }

    #[test]
    fn developer_flags_select_steps() {
        let no_fuzz = Options::parse(&args(&["--no-fuzz"])).expect("valid");
        assert_eq!(
            steps(&no_fuzz),
            ["fmt", "clippy", "build", "tests", "packages"]
        );
        let quick = Options::parse(&args(&["--no-fuzz", "--no-packages"])).expect("valid");
        assert_eq!(steps(&quick), ["fmt", "clippy", "build", "tests"]);
        let only = Options::parse(&args(&["--only", "tests,fmt", "--only=fuzz"])).expect("valid");
        assert_eq!(steps(&only), ["fmt", "tests", "fuzz"]);
        assert!(Options::parse(&args(&["--only", "lint"])).is_err());
        assert!(Options::parse(&args(&["--only"])).is_err());
        assert!(Options::parse(&args(&["--fast"])).is_err());
    }
}
