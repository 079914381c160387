//! The collector binary, started the way the platform starts it, speaking
//! the local protocol.

use std::path::Path;
use std::process::Child;
use std::time::Duration;

use palisade_agent_sys::ipc::Channel;
use palisade_agent_sys::spawn::spawn_child;
use palisade_proto::msg::{FromChild, Role, ToChild, decode_from_child};
use palisade_proto::pb;

const BINARY: &str = env!("CARGO_BIN_EXE_palisade-agent-collector");
const DEADLINE: Duration = Duration::from_secs(30);

async fn recv(channel: &mut Channel) -> FromChild {
    let frame = tokio::time::timeout(DEADLINE, channel.recv())
        .await
        .expect("a frame before the deadline")
        .expect("recv")
        .expect("the collector is still connected");
    decode_from_child(&frame).expect("the collector sends only frames the platform accepts")
}

async fn send(channel: &mut Channel, message: ToChild) {
    channel
        .send(&pb::ToChild::from(message))
        .await
        .expect("send");
}

async fn exit_status(mut child: Child) -> std::process::ExitStatus {
    let wait = tokio::task::spawn_blocking(move || child.wait());
    tokio::time::timeout(DEADLINE, wait)
        .await
        .expect("exits before the deadline")
        .expect("join")
        .expect("wait")
}

#[tokio::test]
async fn collector_speaks_the_local_protocol_and_exits_cleanly() {
    let (child, mut channel) = spawn_child(Path::new(BINARY), &[]).expect("spawn");
    match recv(&mut channel).await {
        FromChild::Hello { role, pid, .. } => {
            assert_eq!(role, Role::Collector);
            assert_eq!(pid, child.id());
        }
        other => panic!("expected hello, got {other:?}"),
    }

    send(
        &mut channel,
        ToChild::Config {
            metrics_interval_ms: 1_000,
        },
    )
    .await;
    send(&mut channel, ToChild::CollectFacts).await;
    match recv(&mut channel).await {
        FromChild::Facts(facts) => assert!(!facts.hostname.is_empty() && facts.cpu_count > 0),
        other => panic!("expected facts, got {other:?}"),
    }

    // Garbage is ignored; the next health check is still answered.
    channel
        .send(&pb::HealthReport {
            nonce: 1,
            ok: true,
            detail: "not for a child".into(),
        })
        .await
        .expect("send");
    send(&mut channel, ToChild::HealthCheck { nonce: 77 }).await;
    let mut metrics = None;
    let mut health = None;
    while metrics.is_none() || health.is_none() {
        match recv(&mut channel).await {
            FromChild::Metrics(m) => metrics = Some(m),
            FromChild::Health { nonce, ok, .. } => health = Some((nonce, ok)),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(health, Some((77, true)));
    let metrics = metrics.expect("a metrics sample after one interval");
    assert!(metrics.memory_total_bytes > 0 && metrics.process_count > 1);

    drop(channel);
    assert_eq!(
        exit_status(child).await.code(),
        Some(0),
        "the platform closed the channel: exit 0"
    );
}

#[test]
fn started_by_hand_it_refuses_with_a_clear_error() {
    let output = std::process::Command::new(BINARY)
        .env_remove("PALISADE_IPC_FD")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PALISADE_IPC_FD is not set"), "{stderr}");
}
