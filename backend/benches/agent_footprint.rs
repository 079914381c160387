//! Scenario benchmark (not criterion: it measures whole processes).
//!
//! For each run: a fresh backend and an enrolled agent (release builds), then
//! - time from spawning `palisade-agent run` to the first metrics sample
//!   visible through `GET /api/v1/hosts` (polled every 10 ms);
//! - resident memory (VmRSS) of the platform and each child, idle, 5 s after
//!   the first metrics.
//!
//! Run: `cargo bench -p palisade-backend --bench agent_footprint`
//! (`PALISADE_BENCH_RUNS` sets the number of runs, default 5). Prints medians.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` passes nothing
    // special. Either way, run the scenario only under `cargo bench`.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let runs: usize = std::env::var("PALISADE_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut first_metrics_ms = Vec::new();
    let mut rss: std::collections::BTreeMap<String, Vec<f64>> = Default::default();
    for run in 0..runs {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::start(&dir.path().join("backend"));
        let api = backend.api_token();
        let token = backend.token(&[]);
        let state = dir.path().join("agent");
        let out = enroll(&backend.server(), &token, &state);
        assert!(
            out.status.success(),
            "enroll: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let client = Https::new(&backend);

        let started = Instant::now();
        let agent = Agent::start_with(&state, "10s");
        let elapsed = rt.block_on(async {
            loop {
                let hosts = hosts(&client, &api).await;
                if hosts.first().is_some_and(|h| !h["metrics"].is_null()) {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "no metrics within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        first_metrics_ms.push(elapsed.as_secs_f64() * 1000.0);

        std::thread::sleep(Duration::from_secs(5));
        // As root the children hang under the privileged launcher (itself a
        // child named palisade-agent); count it too.
        let mut total = rss_kib(agent.pid());
        rss.entry("platform".into())
            .or_default()
            .push(rss_kib(agent.pid()) as f64);
        for (pid, _) in children_of(agent.pid())
            .into_iter()
            .filter(|(_, n)| n == "palisade-agent")
        {
            let kib = rss_kib(pid);
            total += kib;
            rss.entry("launcher".into()).or_default().push(kib as f64);
        }
        for (pid, name) in agent_children(agent.pid()) {
            let kib = rss_kib(pid);
            total += kib;
            rss.entry(name.trim_start_matches("palisade-agent-").to_owned())
                .or_default()
                .push(kib as f64);
        }
        rss.entry("all".into()).or_default().push(total as f64);
        eprintln!(
            "run {}: first metrics after {:.0} ms, RSS total {} KiB",
            run + 1,
            elapsed.as_secs_f64() * 1000.0,
            total
        );
        drop(agent);
        drop(backend);
    }
    println!("agent_footprint: {runs} runs, medians");
    println!(
        "  run -> first metrics stored: {:.0} ms",
        median(first_metrics_ms)
    );
    for (name, values) in rss {
        println!("  RSS {name:<10} {:>8.1} MiB", median(values) / 1024.0);
    }
}
