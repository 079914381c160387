//! `palisade-agent-control`: started by `palisade-agent`, never by hand
//! (`--selftest PROBE` runs a hostile probe under its sandbox, for tests).

use std::process::ExitCode;

use anyhow::Context;
use palisade_agent_sys::sandbox::Profile;

fn main() -> ExitCode {
    palisade_agent_sys::logging::init("control");
    // The sandbox comes first: before the runtime (and its threads) exists
    // and before the channel to the platform is read.
    palisade_agent_sys::sandbox::child_main(Profile::Control, || match run() {
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
    Ok(runtime.block_on(palisade_agent_control::run())?)
}
