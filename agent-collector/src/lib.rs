//! The collector process of the Palisade agent (`palisade-agent-collector`).
//!
//! Started by the platform, it reads the host's state and hands it over on
//! its local channel: a [`pb::Metrics`] sample on every configured interval
//! (the first one interval after the configuration arrives) and the host's
//! [`pb::HostFacts`] whenever the platform asks; the package inventory
//! once the backend said which one it holds, then whenever the package
//! databases change (only the change). What it reads and how is in
//! [`sample`] and [`packages`]; the parsers of the kernel's files are in
//! [`procfs`], those of the package databases in `palisade_packages`.
//!
//! What it deliberately does not do:
//! - **no network**: it opens no socket other than the channel it inherited;
//!   everything leaves the process through the platform;
//! - **no writes**: it only reads `/proc`, `/etc/os-release`, filesystem
//!   sizes and the package databases and indexes; it creates, changes and
//!   deletes nothing;
//! - **no programs**: it never starts another process (no shelling out).
//!
//! These are what allow the sandbox to give it its own user, no
//! capabilities and a read-only view of the system.

#![forbid(unsafe_code)]

use std::time::SystemTime;

use palisade_agent_sys::child::{self, ChildError, ChildHandler, Health};
use palisade_proto::msg::{FromChild, Role};
use palisade_proto::pb;

pub mod packages;
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
    let packages = PackageWatch::new(Sources::under(palisade_agent_sys::package_root::from_env()));
    child::serve(Role::Collector, Collector::new(sampler, packages))
        .await
        .map_err(CollectorError::Child)
}

/// The package side of the collector: the watcher, the reading in
/// progress (on a blocking thread; kept here so a wait that is cancelled by
/// another message loses nothing) and what was sent.
pub struct PackageWatch {
    sources: Sources,
    watcher: Option<packages::Watcher>,
    /// A reading is wanted (at start, after a change).
    due: bool,
    task:
        Option<tokio::task::JoinHandle<Result<Option<packages::Reading>, packages::PackagesError>>>,
    uploads: packages::Uploads,
    /// Why the last reading failed, if it did.
    error: Option<String>,
}

impl PackageWatch {
    /// Watches the package databases under `sources` and reads them once
    /// right away.
    pub fn new(sources: Sources) -> PackageWatch {
        let watcher = match packages::Watcher::new(&sources) {
            Ok(w) => {
                tracing::info!(directories = w.watched(), "watching the package databases");
                Some(w)
            }
            Err(error) => {
                tracing::error!(%error, "cannot watch the package databases; read once at start only");
                None
            }
        };
        PackageWatch {
            sources,
            watcher,
            due: true,
            task: None,
            uploads: packages::Uploads::default(),
            error: None,
        }
    }

    /// Waits for the next reading (the first one, or one after a change)
    /// and returns what to send about it. Cancel-safe.
    pub async fn next(&mut self) -> Vec<FromChild> {
        loop {
            if let Some(task) = &mut self.task {
                let result = task.await;
                self.task = None;
                return self.finish(result);
            }
            if self.due {
                self.due = false;
                let sources = self.sources.clone();
                self.task = Some(tokio::task::spawn_blocking(move || {
                    packages::read(&sources)
                }));
                continue;
            }
            match &mut self.watcher {
                Some(watcher) => match watcher.changed().await {
                    Ok(()) => self.due = true,
                    Err(error) => {
                        tracing::error!(%error, "stopped watching the package databases");
                        self.watcher = None;
                    }
                },
                None => std::future::pending::<()>().await,
            }
        }
    }

    fn finish(
        &mut self,
        result: Result<
            Result<Option<packages::Reading>, packages::PackagesError>,
            tokio::task::JoinError,
        >,
    ) -> Vec<FromChild> {
        let reading = match result {
            Ok(Ok(Some(reading))) => reading,
            Ok(Ok(None)) => {
                tracing::info!("no dpkg or rpm database on this host: no package inventory");
                self.error = None;
                return Vec::new();
            }
            Ok(Err(error)) => {
                tracing::error!(%error, "could not read the package databases");
                self.error = Some(error.to_string());
                return Vec::new();
            }
            Err(error) => {
                tracing::error!(%error, "the package reading failed");
                self.error = Some(error.to_string());
                return Vec::new();
            }
        };
        self.error = None;
        if !reading.problems.is_empty() {
            tracing::warn!(problems = ?reading.problems, "package inventory is partial");
        }
        tracing::info!(
            installed = reading.inventory.installed.len(),
            updates = reading.inventory.updates.len(),
            reboot_required = reading.reboot_required,
            "read the package databases"
        );
        self.uploads
            .read(reading, now_ms())
            .into_iter()
            .map(FromChild::Packages)
            .collect()
    }

    /// The backend holds the inventory with digest `held`.
    pub fn held(&mut self, held: Option<[u8; 32]>) -> Vec<FromChild> {
        self.uploads
            .held(held, now_ms())
            .into_iter()
            .map(FromChild::Packages)
            .collect()
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// The collector's answers to the platform.
pub struct Collector {
    sampler: Sampler,
    packages: PackageWatch,
    /// Why the last sample failed, if it did.
    last_error: Option<String>,
    /// What the last sample had to leave out.
    last_problems: Vec<String>,
}

impl Collector {
    pub fn new(sampler: Sampler, packages: PackageWatch) -> Collector {
        Collector {
            sampler,
            packages,
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

    async fn watch(&mut self) -> Vec<FromChild> {
        self.packages.next().await
    }

    async fn packages_held(&mut self, held: Option<[u8; 32]>) -> Vec<FromChild> {
        self.packages.held(held)
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
        if let Some(error) = &self.packages.error {
            return Health {
                ok: false,
                detail: format!("package inventory: {error}"),
            };
        }
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
