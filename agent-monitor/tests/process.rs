//! The monitor binary, started the way the platform starts it.

use std::path::Path;
use std::time::Duration;

use palisade_agent_sys::ipc::Channel;
use palisade_agent_sys::spawn::spawn_child;
use palisade_proto::msg::{FromChild, Role, ToChild, decode_from_child};
use palisade_proto::pb;

const BINARY: &str = env!("CARGO_BIN_EXE_palisade-agent-monitor");
const DEADLINE: Duration = Duration::from_secs(30);

async fn recv(channel: &mut Channel) -> FromChild {
    let frame = tokio::time::timeout(DEADLINE, channel.recv())
        .await
        .expect("a frame before the deadline")
        .expect("recv")
        .expect("still connected");
    decode_from_child(&frame).expect("valid frame")
}

#[tokio::test]
async fn monitor_says_hello_answers_health_and_exits_cleanly() {
    let (mut child, mut channel) = spawn_child(Path::new(BINARY), &[]).expect("spawn");
    assert!(matches!(
        recv(&mut channel).await,
        FromChild::Hello {
            role: Role::Monitor,
            ..
        }
    ));
    for message in [
        ToChild::Config {
            metrics_interval_ms: 1_000,
        },
        ToChild::CollectFacts,
        ToChild::HealthCheck { nonce: 9 },
    ] {
        channel
            .send(&pb::ToChild::from(message))
            .await
            .expect("send");
    }
    assert!(matches!(
        recv(&mut channel).await,
        FromChild::Health {
            nonce: 9,
            ok: true,
            ..
        }
    ));

    drop(channel);
    let wait = tokio::task::spawn_blocking(move || child.wait());
    let status = tokio::time::timeout(DEADLINE, wait)
        .await
        .expect("exits in time")
        .expect("join")
        .expect("wait");
    assert_eq!(status.code(), Some(0));
}
