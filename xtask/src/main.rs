//! Palisade's development tasks, run as `cargo xtask <task>` (the alias is in
//! `.cargo/config.toml`). A plain binary with few dependencies, in the manner
//! of rust-analyzer's xtask.

#![forbid(unsafe_code)]

mod demo;
mod dist;
mod test;
mod tidy;
mod users;
mod util;

use std::process::ExitCode;

use anyhow::{Context, bail};

const USAGE: &str = "\
usage: cargo xtask <task> [options]

tasks:
  demo   start a backend and an enrolled agent locally; print the web UI and a login
  test   run the whole suite, as CI does
  dist   build the signed DEB and RPM packages and APT repository into target/dist
  help   show this, or `cargo xtask help <task>`";

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\nxtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let args = std::env::args_os()
        .skip(1)
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| anyhow::anyhow!("argument {arg:?} is not UTF-8"))
        })
        .collect::<anyhow::Result<Vec<String>>>()?;
    let Some((task, rest)) = args.split_first() else {
        println!("{USAGE}");
        return Ok(());
    };
    if rest.iter().any(|a| a == "--help" || a == "-h") {
        return help(Some(task));
    }
    match task.as_str() {
        "demo" => demo::run(&demo::Options::parse(rest)?).context("demo failed"),
        "test" => test::run(&test::Options::parse(rest)?).context("test failed"),
        "dist" => dist::run(&dist::Options::parse(rest)?).context("dist failed"),
        "help" | "--help" | "-h" => help(rest.first()),
        other => bail!("unknown task {other:?}\n\n{USAGE}"),
    }
}

fn help(task: Option<&String>) -> anyhow::Result<()> {
    match task.map(String::as_str) {
        Some("demo") => println!("{}", demo::USAGE),
        Some("test") => println!("{}", test::USAGE),
        Some("dist") => println!("{}", dist::USAGE),
        Some(other) if other != "help" => bail!("unknown task {other:?}\n\n{USAGE}"),
        _ => println!("{USAGE}"),
    }
    Ok(())
}
