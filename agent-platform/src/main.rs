//! `palisade-agent`: parses the command line and hands over to the library.

use clap::Parser;
use palisade_agent::cli::{self, Prepared};

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    palisade_agent_sys::logging::init("platform");
    // The privileged part of the start (fork the launcher, drop privileges,
    // apply the sandbox) must happen while this process has one thread, so
    // before the runtime exists and before anything is read from the network.
    let prepared = match cli::prepare(&cli) {
        Ok(Prepared::Exit(code)) => return code,
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli, prepared)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
