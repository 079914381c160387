//! The uplink across networks: QUIC first, WSS when UDP is blocked, back to
//! QUIC when it works again, 0-RTT on reconnect, and no record lost or
//! duplicated whatever breaks (kill -9 of either side included).
//!
//! The path tests put the agent in its own network namespace joined to the
//! backend's by a veth pair, and block UDP with nftables inside the agent's
//! namespace. They need root; under `CI=true` they must run, elsewhere they
//! are skipped with a message when not root.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;

/// Root check: run, skip loudly, or (under CI) fail.
fn need_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test} needs root (network namespaces, nftables) and CI=true forbids skipping it"
    );
    eprintln!("SKIPPED {test}: needs root (network namespaces, nftables)");
    false
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace for the agent, joined to the root namespace by a veth pair.
/// Removed (with its nftables rules) when dropped.
struct Netns {
    name: String,
    host_if: String,
    pub backend_ip: String,
}

impl Netns {
    fn new(tag: u8) -> Netns {
        let id = std::process::id() % 10_000;
        let name = format!("pal{tag}-{id}");
        let host_if = format!("pvh{tag}-{id}");
        let ns_if = format!("pvn{tag}-{id}");
        // One /16 per tag, so two tests running at once never share a subnet.
        let subnet = format!("10.{}.{}", 240 + u16::from(tag), id % 250);
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &host_if]).output();
        sh(&["ip", "netns", "add", &name]);
        sh(&[
            "ip", "link", "add", &host_if, "type", "veth", "peer", "name", &ns_if,
        ]);
        sh(&["ip", "link", "set", &ns_if, "netns", &name]);
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{subnet}.1/24"),
            "dev",
            &host_if,
        ]);
        sh(&["ip", "link", "set", &host_if, "up"]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{subnet}.2/24"),
            "dev",
            &ns_if,
        ]);
        sh(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", &ns_if, "up",
        ]);
        sh(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ]);
        sh(&[
            "ip", "netns", "exec", &name, "nft", "add", "table", "inet", "paltest",
        ]);
        sh(&[
            "ip",
            "netns",
            "exec",
            &name,
            "nft",
            "add",
            "chain",
            "inet",
            "paltest",
            "out",
            "{ type filter hook output priority 0 ; }",
        ]);
        Netns {
            name,
            host_if,
            backend_ip: format!("{subnet}.1"),
        }
    }

    fn block_udp(&self, port: u16) {
        let port = port.to_string();
        sh(&[
            "ip", "netns", "exec", &self.name, "nft", "add", "rule", "inet", "paltest", "out",
            "udp", "dport", &port, "drop",
        ]);
    }

    fn unblock_udp(&self) {
        sh(&[
            "ip", "netns", "exec", &self.name, "nft", "flush", "chain", "inet", "paltest", "out",
        ]);
    }

    fn cmd(&self, program: &Path) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .output();
    }
}

/// The host as the API shows it (exactly one host in these tests).
async fn host(client: &Https, api: &str) -> Option<serde_json::Value> {
    hosts(client, api).await.into_iter().next()
}

async fn wait_transport(
    client: &Https,
    api: &str,
    transport: &str,
    within: Duration,
    what: &str,
) -> Duration {
    let start = Instant::now();
    loop {
        if let Some(h) = host(client, api).await
            && h["online"] == true
            && h["transport"] == transport
        {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "{what}: not online over {transport} within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn enroll_in(ns: &Netns, server: &str, token: &str, state: &Path) {
    let out = ns
        .cmd(&agent_bin())
        .args([
            "enroll",
            "--server",
            server,
            "--token",
            token,
            "--state-dir",
        ])
        .arg(state)
        .output()
        .expect("enroll runs");
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn run_in(ns: &Netns, state: &Path) -> Agent {
    let mut cmd = ns.cmd(&agent_bin());
    cmd.args([
        "run",
        "--metrics-interval",
        "1s",
        "--health-interval",
        "1s",
        "--quic-probe-initial",
        "2s",
        "--quic-probe-max",
        "4s",
        "--state-dir",
    ])
    .arg(state);
    Agent::spawn(cmd, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_blocked_then_unblocked_then_blocked_again() {
    if !need_root("udp_blocked_then_unblocked_then_blocked_again") {
        return;
    }
    let ns = Netns::new(1);
    let dir = tempfile::tempdir().expect("tempdir");
    let backend_dir = dir.path().join("backend");
    let backend = Backend::start_with(
        &backend_dir,
        &format!("{}:0", ns.backend_ip),
        &[&ns.backend_ip],
    );
    let api = backend.api_token();
    let token = backend.token(&[]);
    let state = dir.path().join("agent");
    enroll_in(&ns, &backend.server(), &token, &state);
    let client = Https::new(&backend);

    // UDP blocked before the agent starts: WSS within 3 s.
    ns.block_udp(backend.addr.port());
    let mut agent = run_in(&ns, &state);
    let took = wait_transport(
        &client,
        &api,
        "wss",
        Duration::from_secs(3),
        "UDP blocked at start",
    )
    .await;
    eprintln!("UDP blocked at start: online over WSS after {took:?}");

    // UDP unblocked: back on QUIC within the probe interval (2 s, then 4 s; 5 s probe timeout).
    ns.unblock_udp();
    let took = wait_transport(
        &client,
        &api,
        "quic",
        Duration::from_secs(12),
        "UDP unblocked",
    )
    .await;
    eprintln!("UDP unblocked: back on QUIC after {took:?}");

    // UDP blocked mid-session: on WSS within 20 s (15 s idle timeout + the race).
    ns.block_udp(backend.addr.port());
    let took = wait_transport(
        &client,
        &api,
        "wss",
        Duration::from_secs(20),
        "UDP blocked mid-session",
    )
    .await;
    eprintln!("UDP blocked mid-session: on WSS after {took:?}");

    // And back once more, now with a session ticket from the earlier QUIC
    // connection: the backend must see 0-RTT accepted.
    ns.unblock_udp();
    wait_transport(
        &client,
        &api,
        "quic",
        Duration::from_secs(12),
        "UDP unblocked again",
    )
    .await;
    let h = host(&client, &api).await.expect("host");
    assert_eq!(
        h["zero_rtt"], true,
        "the reconnect should have resumed with 0-RTT: {h}"
    );
    assert!(
        backend.log().contains("0-RTT resumption accepted"),
        "the backend logs the accepted 0-RTT"
    );

    audit_no_loss(&mut agent, &backend).await;
}

on_both_databases!(kill_9_of_either_side_loses_nothing);

async fn kill_9_of_either_side_loses_nothing(db: TestDb) {
    let dir = tempfile::tempdir().expect("tempdir");
    let backend_dir = dir.path().join("backend");
    let mut backend = Backend::start_in(&backend_dir, &db);
    let addr = backend.addr;
    let api = backend.api_token();
    let token = backend.token(&[]);
    let state = dir.path().join("agent");
    assert!(enroll(&backend.server(), &token, &state).status.success());
    let client = Https::new(&backend);

    let mut agent = Agent::start(&state);
    wait_transport(
        &client,
        &api,
        "quic",
        Duration::from_secs(30),
        "first connect",
    )
    .await;
    // Let a few records flow, then kill the agent mid-stream and restart it.
    eventually("a few records stored", || async {
        let h = host(&client, &api).await?;
        (h["metrics"]["seq"].as_u64()? >= 5).then_some(())
    })
    .await;
    agent.stop(true);
    let mut agent = Agent::start(&state);
    wait_transport(
        &client,
        &api,
        "quic",
        Duration::from_secs(30),
        "after agent kill -9",
    )
    .await;

    // Kill the backend mid-stream; the agent spools meanwhile and resends.
    backend.stop(true);
    tokio::time::sleep(Duration::from_secs(3)).await; // records pile up in the spool while the backend is down
    let backend = Backend::start_db(&backend_dir, &addr.to_string(), &[], &db);
    let client = Https::new(&backend);
    wait_transport(
        &client,
        &api,
        "quic",
        Duration::from_secs(40),
        "after backend kill -9",
    )
    .await;
    eventually("records resumed after the backend restart", || async {
        let h = host(&client, &api).await?;
        (h["metrics"]["seq"].as_u64()? >= 15).then_some(())
    })
    .await;
    audit_no_loss(&mut agent, &backend).await;
    drop(backend);
}

/// A minimal HTTP CONNECT proxy on `bind`; returns its address and the
/// CONNECT targets it has tunnelled.
async fn connect_proxy(
    bind: &str,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::Mutex<Vec<String>>>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .expect("proxy binds");
    let addr = listener.local_addr().expect("proxy address");
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(client);
                let mut line = String::new();
                if reader.read_line(&mut line).await.is_err() {
                    return;
                }
                let target = line
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                // Skip the rest of the request head.
                loop {
                    let mut h = String::new();
                    match reader.read_line(&mut h).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) if h == "\r\n" => break,
                        Ok(_) => {}
                    }
                }
                let Ok(mut upstream) = tokio::net::TcpStream::connect(&target).await else {
                    return;
                };
                log.lock().expect("lock").push(target);
                let mut client = reader.into_inner();
                if client
                    .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                    .await
                    .is_err()
                {
                    return;
                }
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_through_an_http_proxy() {
    if !need_root("wss_through_an_http_proxy") {
        return;
    }
    let ns = Netns::new(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let backend = Backend::start_with(
        &dir.path().join("backend"),
        &format!("{}:0", ns.backend_ip),
        &[&ns.backend_ip],
    );
    let api = backend.api_token();
    let token = backend.token(&[]);
    let state = dir.path().join("agent");
    enroll_in(&ns, &backend.server(), &token, &state);
    let (proxy, seen) = connect_proxy(&format!("{}:0", ns.backend_ip)).await;
    // UDP is blocked, so the agent must use WSS, and with HTTPS_PROXY set, through the proxy.
    ns.block_udp(backend.addr.port());
    let mut cmd = ns.cmd(&agent_bin());
    cmd.args(["run", "--metrics-interval", "1s", "--state-dir"])
        .arg(&state)
        .env("HTTPS_PROXY", format!("http://{proxy}"));
    let _agent = Agent::spawn(cmd, &state);
    let client = Https::new(&backend);
    wait_transport(
        &client,
        &api,
        "wss",
        Duration::from_secs(10),
        "WSS through the proxy",
    )
    .await;
    let targets = seen.lock().expect("lock").clone();
    assert!(
        targets.contains(&backend.server()),
        "the agent tunnelled to the backend through the proxy: {targets:?}"
    );
    eventually("metrics through the proxy", || async {
        let h = host(&client, &api).await?;
        (!h["metrics"].is_null()).then_some(())
    })
    .await;
}
