//! The collector process of the Palisade agent (`palisade-agent-collector`).
//!
//! Started by the platform, it reads the host's state and hands it over on
//! its local channel: a [`pb::Metrics`] sample on every configured interval
//! (the first one interval after the configuration arrives) and the host's
//! [`pb::HostFacts`] whenever the platform asks. What it reads and how is in
//! [`sample`]; the parsers of the kernel's files are in [`procfs`].
//!
//! What it deliberately does not do:
//! - **no network**: it opens no socket other than the channel it inherited;
//!   everything leaves the process through the platform;
//! - **no writes**: it only reads `/proc`, `/etc/os-release` and filesystem
//!   sizes; it creates, changes and deletes nothing;
//! - **no programs**: it never starts another process (no shelling out).
//!
//! These are what allow the sandbox to give it its own user, no
//! capabilities and a read-only view of the system.

#![forbid(unsafe_code)]

use std::time::SystemTime;

use palisade_agent_sys::child::{self, ChildError, ChildHandler, Health};
use palisade_proto::msg::{FromChild, Role};
use palisade_proto::pb;

pub mod procfs;
pub mod sample;

use sample::{SampleError, Sampler, Sources};

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("cannot start sampling: {0}")]
    Start(SampleError),
    #[error("{0}")]
    Child(ChildError),
}

/// Runs the collector until the platform closes the channel.
pub async fn run() -> Result<(), CollectorError> {
    let sampler = Sampler::new(Sources::system()).map_err(CollectorError::Start)?;
    child::serve(Role::Collector, Collector::new(sampler))
        .await
        .map_err(CollectorError::Child)
}

/// The collector's answers to the platform.
pub struct Collector {
    sampler: Sampler,
    /// Why the last sample failed, if it did.
    last_error: Option<String>,
    /// What the last sample had to leave out.
    last_problems: Vec<String>,
}

impl Collector {
    pub fn new(sampler: Sampler) -> Collector {
        Collector {
            sampler,
            last_error: None,
            last_problems: Vec::new(),
        }
    }
}

impl ChildHandler for Collector {
    fn periodic(&self) -> bool {
        true
    }

    async fn tick(&mut self) -> Option<FromChild> {
        match self.sampler.sample(SystemTime::now()).await {
            Ok(sample) => {
                self.last_error = None;
                // The same omissions every interval are logged once, at
                // warn, and again only when they change.
                if sample.problems != self.last_problems {
                    if !sample.problems.is_empty() {
                        tracing::warn!(problems = ?sample.problems, "metrics sample is partial");
                    } else {
                        tracing::info!("metrics sample is complete again");
                    }
                    self.last_problems = sample.problems;
                }
                Some(FromChild::Metrics(sample.metrics))
            }
            Err(error) => {
                tracing::error!(%error, "metrics sample failed; nothing sent for this interval");
                self.last_error = Some(error.to_string());
                None
            }
        }
    }

    async fn collect_facts(&mut self) -> Option<pb::HostFacts> {
        match self.sampler.facts() {
            Ok(facts) => {
                if !facts.problems.is_empty() {
                    tracing::warn!(problems = ?facts.problems, "host facts are partial");
                }
                Some(facts.facts)
            }
            Err(error) => {
                tracing::error!(%error, "could not collect host facts");
                None
            }
        }
    }

    fn health(&self) -> Health {
        match &self.last_error {
            Some(error) => Health {
                ok: false,
                detail: format!("last metrics sample failed: {error}"),
            },
            None if !self.last_problems.is_empty() => Health {
                ok: true,
                detail: format!(
                    "last metrics sample partial: {}",
                    self.last_problems.join("; ")
                ),
            },
            None => Health {
                ok: true,
                detail: String::new(),
            },
        }
    }
}
