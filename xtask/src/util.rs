//! Running commands with errors that name them, and finding the workspace.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The root of the Palisade workspace (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory, where integration tests and the demo find the
/// binaries: `CARGO_TARGET_DIR` if set, else `<root>/target`.
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

/// A `cargo` command run from the workspace root, with the same cargo that
/// runs xtask (`cargo xtask` sets `CARGO`).
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut cmd = Command::new(program);
    cmd.current_dir(workspace_root());
    cmd
}

/// Whether we run under CI (`CI=true`, as every CI system sets it).
pub fn is_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// The command line of `cmd`, for messages. Uses `cargo` rather than the
/// full path cargo was found at.
pub fn display(cmd: &Command) -> String {
    let program = Path::new(cmd.get_program());
    let program = if program.file_stem().is_some_and(|s| s == "cargo") {
        "cargo".into()
    } else {
        program.to_string_lossy()
    };
    let mut line = program.into_owned();
    for arg in cmd.get_args() {
        line.push(' ');
        line.push_str(&arg.to_string_lossy());
    }
    line
}

/// Runs `cmd` with inherited stdio; fails naming the command if it cannot be
/// started or exits unsuccessfully.
pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let line = display(cmd);
    println!("$ {line}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(())
}

/// Runs `cmd` and returns its stdout. Its stderr is captured too and shown
/// only if it fails, so chatty logs do not bury what matters.
pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let line = display(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({})\n--- its stderr ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end()
        );
    }
    String::from_utf8(out.stdout)
        .with_context(|| format!("`{line}` printed something that is not UTF-8"))
}

/// Runs `cmd` and returns its only line of stdout (for commands that print
/// one secret or one id and nothing else).
pub fn output_line(cmd: &mut Command) -> anyhow::Result<String> {
    let line = display(cmd);
    let stdout = output(cmd)?;
    let mut lines = stdout.lines().map(str::trim).filter(|l| !l.is_empty());
    match (lines.next(), lines.next()) {
        (Some(only), None) => Ok(only.to_owned()),
        (None, _) => bail!("`{line}` printed nothing on stdout; expected one line"),
        (Some(_), Some(_)) => bail!("`{line}` printed more than one line on stdout; expected one"),
    }
}

/// Whether `cmd` can be run and succeeds, with all output discarded.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The last `n` lines of a text file, for showing a log when something died.
pub fn tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Prints a heading for one step of a task.
pub fn heading(text: &str) {
    println!("\n==> {text}");
}
