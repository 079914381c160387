//! The monitor process of the Palisade agent (`palisade-agent-monitor`).
//!
//! Its duties, service health (systemd units) and File Integrity Monitoring
//! (inotify, baseline hashes), come later. For now it takes its place among
//! the platform's children: it says hello and answers health checks.
//!
//! What it deliberately does not do, now and once its duties arrive:
//! - **no writes**: it will read any file (CAP_DAC_READ_SEARCH) to watch
//!   and hash it, and change none;
//! - **no network**: it opens no network socket; what it finds leaves the
//!   process only through the platform.

#![forbid(unsafe_code)]

use palisade_agent_sys::child::{self, ChildError, ChildHandler, Health};
use palisade_proto::msg::Role;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("{0}")]
    Child(ChildError),
}

/// Runs the monitor process until the platform closes the channel.
pub async fn run() -> Result<(), MonitorError> {
    child::serve(Role::Monitor, Monitor)
        .await
        .map_err(MonitorError::Child)
}

/// The monitor process's answers to the platform: health checks only, for now.
pub struct Monitor;

impl ChildHandler for Monitor {
    fn health(&self) -> Health {
        Health {
            ok: true,
            detail: "no duties yet: answering health checks only".to_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_agent_sys::ipc::Channel;
    use palisade_proto::msg::{FromChild, ToChild, decode_from_child};
    use palisade_proto::pb;

    async fn recv(channel: &mut Channel) -> FromChild {
        let frame = channel.recv().await.expect("recv").expect("a frame");
        decode_from_child(&frame).expect("valid")
    }

    #[tokio::test]
    async fn says_hello_as_monitor_and_is_healthy() {
        let (ours, theirs) = tokio::net::UnixStream::pair().expect("socketpair");
        let platform = async {
            let mut channel = Channel::new(ours);
            assert!(matches!(
                recv(&mut channel).await,
                FromChild::Hello {
                    role: Role::Monitor,
                    ..
                }
            ));
            channel
                .send(&pb::ToChild::from(ToChild::CollectFacts))
                .await
                .expect("send");
            channel
                .send(&pb::ToChild::from(ToChild::HealthCheck { nonce: 5 }))
                .await
                .expect("send");
            assert!(
                matches!(
                    recv(&mut channel).await,
                    FromChild::Health {
                        nonce: 5,
                        ok: true,
                        ..
                    }
                ),
                "no facts, then health"
            );
        };
        let (served, ()) = tokio::join!(
            child::serve_on(Channel::new(theirs), Role::Monitor, Monitor),
            platform
        );
        assert!(
            served.is_ok(),
            "the platform side dropped its end: a clean exit"
        );
    }
}
