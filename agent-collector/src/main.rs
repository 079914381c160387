//! `palisade-agent-collector`: started by `palisade-agent`, never by hand
//! (`--selftest PROBE` runs a hostile probe under its sandbox, for tests).

use std::process::ExitCode;

use anyhow::Context;
use palisade_agent_sys::sandbox::Profile;

fn main() -> ExitCode {
    palisade_agent_sys::logging::init("collector");
    // The sandbox comes first: before the runtime (and its threads) exists
    // and before the channel to the platform is read.
    palisade_agent_sys::sandbox::child_main(Profile::Collector, || match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    })
}

fn run() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("could not start the async runtime")?;
    let result = runtime.block_on(palisade_agent_collector::run());
    // Do not wait for blocking threads: one may be stuck in a statvfs on a
    // dead network filesystem, and the process is exiting anyway.
    runtime.shutdown_background();
    Ok(result?)
}
