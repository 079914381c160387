//! The side of the local protocol every child process shares: say hello,
//! then answer the platform until it goes away.
//!
//! A child supplies a [`ChildHandler`] for the parts that differ (periodic
//! work, host facts, how healthy it is) and calls [`serve`]. The loop:
//!
//! - sends [`FromChild::Hello`] first;
//! - applies every [`ToChild::Config`] (the last one wins), running
//!   [`ChildHandler::tick`] once per configured interval, the first time one
//!   interval after the configuration arrived;
//! - answers [`ToChild::HealthCheck`] with the same nonce;
//! - answers [`ToChild::CollectFacts`] when the handler has facts;
//! - passes [`ToChild::PackagesHeld`] to the handler and sends what it
//!   answers (the collector: nothing, a change or the whole inventory);
//! - sends what [`ChildHandler::watch`] returns whenever something the
//!   child watches changed (the collector: the package databases);
//! - runs [`ToChild::Execute`] commands one at a time, in order, while it
//!   goes on answering everything else, and sends each result;
//! - logs and ignores frames that do not decode;
//! - returns `Ok(())` when the platform closes its end, and an error when the
//!   channel itself fails (then the process should exit non-zero).

use std::collections::VecDeque;
use std::future::Future;
use std::time::Duration;

use palisade_proto::msg::{self, FromChild, Role, ToChild, decode_to_child};
use palisade_proto::pb;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::ipc::{Channel, IpcError};

/// Shortest interval between two ticks; a shorter configured interval is
/// raised to this, so a wrong configuration cannot make a child spin.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Longest interval between two ticks; a longer configured interval is
/// lowered to this (it also keeps timer arithmetic far from overflow).
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);

/// Most commands waiting while another one runs; more are dropped.
pub const MAX_WAITING_COMMANDS: usize = 16;

/// Why a child's loop stopped other than by the platform closing the channel.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("could not open the channel to the platform: {0}")]
    Open(IpcError),
    #[error("could not send {what} to the platform: {error}")]
    Send { what: &'static str, error: IpcError },
    #[error("could not receive from the platform: {0}")]
    Recv(IpcError),
}

/// What a child answers to a health check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub ok: bool,
    /// One line for the operator; control characters are replaced and the
    /// text is cut to [`msg::MAX_STRING`] bytes before it is sent.
    pub detail: String,
}

/// The parts of a child that differ between roles. Every method has a
/// default that does nothing, so a child without duties implements none.
pub trait ChildHandler {
    /// True when the child has periodic work ([`ChildHandler::tick`]) to run
    /// on the configured interval.
    fn periodic(&self) -> bool {
        false
    }

    /// One round of periodic work; the message returned, if any, is sent to
    /// the platform. A failure is the handler's to log and to reflect in
    /// [`ChildHandler::health`]; the loop goes on either way.
    fn tick(&mut self) -> impl Future<Output = Option<FromChild>> {
        async { None }
    }

    /// The host's facts, or `None` when this child has none to give (the
    /// request is then ignored) or could not collect them (the handler logs why).
    fn collect_facts(&mut self) -> impl Future<Output = Option<pb::HostFacts>> {
        async {
            tracing::debug!("ignoring a request for host facts: not this process's job");
            None
        }
    }

    /// The backend holds the package inventory with this digest (`None`:
    /// none to build on); returns what to send (collector only).
    fn packages_held(&mut self, held: Option<[u8; 32]>) -> impl Future<Output = Vec<FromChild>> {
        async move {
            tracing::debug!(
                ?held,
                "ignoring the backend's package digest: not this process's job"
            );
            Vec::new()
        }
    }

    /// Resolves when something this child watches changed, with what to
    /// send about it; never resolves by default. It is dropped and called
    /// again whenever another message is handled first, so it must keep its
    /// progress in the handler (cancel-safe).
    fn watch(&mut self) -> impl Future<Output = Vec<FromChild>> {
        std::future::pending()
    }

    /// What [`ChildHandler::watch`] has ready right now, without waiting;
    /// called before a command's result is sent, so whatever the command
    /// queued while it ran (its output) goes out first.
    fn ready(&mut self) -> Vec<FromChild> {
        Vec::new()
    }

    /// Takes a signed command (control only) as soon as it arrives and
    /// returns the future that runs it; its result, if any, is sent to the
    /// platform. The call itself happens at arrival, so what it does before
    /// returning (control's checks, and a cancel reaching the running
    /// command) is not held up by the command running now. The future owns
    /// what it needs instead of borrowing the handler (`use<Self>`), so the
    /// loop goes on answering health checks while a command runs. The
    /// futures run one at a time, in the order they arrived (at most
    /// [`MAX_WAITING_COMMANDS`] wait; more are dropped with a warning).
    /// Other children refuse commands with a future that yields `None`.
    fn execute(
        &mut self,
        command: pb::SignedCommand,
    ) -> impl Future<Output = Option<pb::CommandResult>> + use<Self> {
        async move {
            tracing::warn!(
                len = command.command.len(),
                "ignoring a command: not this process's job"
            );
            None
        }
    }

    /// How this child is doing, for the platform's health check.
    fn health(&self) -> Health {
        Health {
            ok: true,
            detail: String::new(),
        }
    }
}

/// Runs `handler` as a child of the platform with `role`, on the channel the
/// platform passed at start (see [`Channel::from_env`]).
pub async fn serve<H: ChildHandler>(role: Role, handler: H) -> Result<(), ChildError> {
    let channel = Channel::from_env().map_err(ChildError::Open)?;
    serve_on(channel, role, handler).await
}

/// Runs `handler` as a child with `role` on `channel` (what [`serve`] does
/// after opening the channel; tests pass one end of a socketpair).
pub async fn serve_on<H: ChildHandler>(
    mut channel: Channel,
    role: Role,
    mut handler: H,
) -> Result<(), ChildError> {
    let hello = FromChild::Hello {
        role,
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        sandbox: crate::identity::sandbox_status(),
    };
    if send(&mut channel, "hello", hello).await?.is_closed() {
        return Ok(());
    }
    tracing::info!(%role, "started; waiting for the platform");

    let mut ticker: Option<(Duration, Interval)> = None;
    // The command running now (its future, boxed so it can be polled from
    // `select!` across iterations) and those waiting for their turn.
    let mut running = None;
    let mut waiting = VecDeque::new();
    loop {
        tokio::select! {
            frame = channel.recv() => {
                let bytes = match frame {
                    Ok(Some(bytes)) => bytes,
                    Ok(None) => {
                        tracing::info!("the platform closed the channel; exiting");
                        return Ok(());
                    }
                    Err(e) if peer_gone(&e) => {
                        tracing::info!(error = %e, "the platform went away; exiting");
                        return Ok(());
                    }
                    Err(e) => return Err(ChildError::Recv(e)),
                };
                let message = match decode_to_child(&bytes) {
                    Ok(message) => message,
                    Err(error) => {
                        tracing::warn!(
                            %error,
                            len = bytes.len(),
                            "ignoring a frame from the platform that does not decode"
                        );
                        continue;
                    }
                };
                let outcome = match message {
                    ToChild::Config { metrics_interval_ms } => {
                        configure(&mut ticker, handler.periodic(), metrics_interval_ms);
                        Sent::Ok
                    }
                    ToChild::HealthCheck { nonce } => {
                        let Health { ok, detail } = handler.health();
                        let reply = FromChild::Health { nonce, ok, detail: one_line(&detail) };
                        send(&mut channel, "a health report", reply).await?
                    }
                    ToChild::CollectFacts => match handler.collect_facts().await {
                        Some(facts) => {
                            send(&mut channel, "host facts", FromChild::Facts(facts)).await?
                        }
                        None => Sent::Ok,
                    },
                    ToChild::PackagesHeld(held) => {
                        let mut outcome = Sent::Ok;
                        for message in handler.packages_held(held).await {
                            outcome = send(&mut channel, "a package report", message).await?;
                            if outcome.is_closed() {
                                break;
                            }
                        }
                        outcome
                    }
                    ToChild::Execute(command) => {
                        if running.is_none() {
                            running = Some(Box::pin(handler.execute(command)));
                        } else if waiting.len() < MAX_WAITING_COMMANDS {
                            waiting.push_back(Box::pin(handler.execute(command)));
                        } else {
                            tracing::warn!(
                                waiting = waiting.len(),
                                "dropping a command: too many are waiting already"
                            );
                        }
                        Sent::Ok
                    }
                };
                if outcome.is_closed() {
                    return Ok(());
                }
            }
            messages = handler.watch() => {
                for message in messages {
                    if send(&mut channel, "a change it watches", message).await?.is_closed() {
                        return Ok(());
                    }
                }
            }
            result = finish(&mut running) => {
                running = waiting.pop_front();
                for message in handler.ready() {
                    if send(&mut channel, "what a command sent", message).await?.is_closed() {
                        return Ok(());
                    }
                }
                if let Some(result) = result {
                    let reply = FromChild::CommandResult(result);
                    if send(&mut channel, "a command result", reply).await?.is_closed() {
                        return Ok(());
                    }
                }
            }
            () = next_tick(&mut ticker) => {
                if let Some(message) = handler.tick().await
                    && send(&mut channel, "periodic results", message).await?.is_closed()
                {
                    return Ok(());
                }
            }
        }
    }
}

/// Whether a send reached the platform or found it gone.
enum Sent {
    Ok,
    Closed,
}

impl Sent {
    fn is_closed(&self) -> bool {
        matches!(self, Sent::Closed)
    }
}

async fn send(
    channel: &mut Channel,
    what: &'static str,
    message: FromChild,
) -> Result<Sent, ChildError> {
    match channel.send(&pb::FromChild::from(message)).await {
        Ok(()) => Ok(Sent::Ok),
        Err(e) if peer_gone(&e) => {
            tracing::info!(error = %e, "the platform went away; exiting");
            Ok(Sent::Closed)
        }
        Err(error) => Err(ChildError::Send { what, error }),
    }
}

/// A closed peer shows up as EPIPE on write, and as ECONNRESET on read when
/// it closed with frames of ours still unread: both mean the platform is
/// gone, which ends a child as cleanly as an orderly close does.
fn peer_gone(error: &IpcError) -> bool {
    matches!(error, IpcError::Io(e) if matches!(
        e.kind(),
        std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
    ))
}

/// Applies a configured interval. The same interval again keeps the running
/// timer (and its phase); a new one restarts it, first tick one interval on.
fn configure(ticker: &mut Option<(Duration, Interval)>, periodic: bool, interval_ms: u64) {
    if !periodic {
        tracing::debug!(
            interval_ms,
            "configuration has nothing to change here: no periodic work"
        );
        return;
    }
    let requested = Duration::from_millis(interval_ms);
    let period = requested.clamp(MIN_INTERVAL, MAX_INTERVAL);
    if period != requested {
        tracing::warn!(
            interval_ms,
            used_ms = period.as_millis() as u64,
            "configured interval out of range; using the nearest allowed value"
        );
    }
    if matches!(ticker, Some((current, _)) if *current == period) {
        return;
    }
    let mut interval = tokio::time::interval_at(Instant::now() + period, period);
    // Work that overran its interval is followed by one full interval, not by
    // a burst of catch-up ticks.
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tracing::info!(
        interval_ms = period.as_millis() as u64,
        "periodic work configured"
    );
    *ticker = Some((period, interval));
}

/// The output of the running command, or never when none runs. The caller
/// must clear `running` once this returned (a finished future is not polled
/// again).
async fn finish<F: Future + Unpin>(running: &mut Option<F>) -> F::Output {
    match running {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// The next tick, or never when nothing is configured.
async fn next_tick(ticker: &mut Option<(Duration, Interval)>) {
    match ticker {
        Some((_, interval)) => {
            interval.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// `text` as one line the platform's decoder accepts: control characters
/// become spaces and the length stays within [`msg::MAX_STRING`] bytes.
fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len().min(msg::MAX_STRING));
    for c in text.chars().map(|c| if c.is_control() { ' ' } else { c }) {
        if out.len() + c.len_utf8() > msg::MAX_STRING {
            break;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_proto::msg::decode_from_child;
    use tokio::io::AsyncWriteExt;
    use tokio::net::UnixStream;

    /// A handler that counts its ticks and reports each as a metrics sample
    /// whose `collected_at_unix_ms` is the tick number.
    #[derive(Default)]
    struct Counter {
        ticks: i64,
    }

    impl ChildHandler for Counter {
        fn periodic(&self) -> bool {
            true
        }

        async fn tick(&mut self) -> Option<FromChild> {
            self.ticks += 1;
            Some(FromChild::Metrics(pb::Metrics {
                collected_at_unix_ms: self.ticks,
                ..Default::default()
            }))
        }

        async fn collect_facts(&mut self) -> Option<pb::HostFacts> {
            Some(pb::HostFacts {
                hostname: "h1".into(),
                ..Default::default()
            })
        }

        fn health(&self) -> Health {
            Health {
                ok: false,
                detail: format!("ticks={}\nsecond line", self.ticks),
            }
        }
    }

    /// Handler with every default: no periodic work, no facts.
    struct Idle;
    impl ChildHandler for Idle {}

    /// A control-like handler whose commands take ten seconds each; the
    /// result names the command by its bytes.
    struct Slow;
    impl ChildHandler for Slow {
        fn execute(
            &mut self,
            command: pb::SignedCommand,
        ) -> impl Future<Output = Option<pb::CommandResult>> + use<> {
            async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                Some(pb::CommandResult {
                    command_id: String::from_utf8_lossy(&command.command).into_owned(),
                    status: pb::CommandStatus::Succeeded as i32,
                    ..Default::default()
                })
            }
        }
    }

    fn signed(id: &str) -> ToChild {
        ToChild::Execute(pb::SignedCommand {
            command: id.as_bytes().to_vec(),
            signature: vec![0; 64],
        })
    }

    fn result_of(message: &FromChild) -> &str {
        match message {
            FromChild::CommandResult(r) => &r.command_id,
            other => panic!("expected a command result, got {other:?}"),
        }
    }

    /// The platform's end of a socketpair whose other end runs `serve_on`.
    struct Platform {
        channel: Channel,
        child: tokio::task::JoinHandle<Result<(), ChildError>>,
    }

    impl Platform {
        fn start<H: ChildHandler + 'static>(role: Role, handler: H) -> Platform {
            let (ours, theirs) = UnixStream::pair().expect("socketpair");
            let child = tokio::task::spawn_local(serve_on(Channel::new(theirs), role, handler));
            Platform {
                channel: Channel::new(ours),
                child,
            }
        }

        async fn send(&mut self, message: ToChild) {
            self.channel
                .send(&pb::ToChild::from(message))
                .await
                .expect("send to child");
        }

        async fn recv(&mut self) -> FromChild {
            let frame = tokio::time::timeout(Duration::from_secs(3600), self.channel.recv())
                .await
                .expect("a frame before the deadline")
                .expect("recv")
                .expect("child still connected");
            decode_from_child(&frame).expect("the child sends only valid frames")
        }

        /// Round-trips a health check: everything sent before it has been
        /// handled once the answer is back. Returns what came in between.
        async fn sync(&mut self, nonce: u64) -> Vec<FromChild> {
            self.send(ToChild::HealthCheck { nonce }).await;
            let mut before = Vec::new();
            loop {
                match self.recv().await {
                    FromChild::Health { nonce: n, .. } if n == nonce => return before,
                    other => before.push(other),
                }
            }
        }

        async fn close(self) -> Result<(), ChildError> {
            drop(self.channel);
            self.child.await.expect("child task")
        }
    }

    async fn local<F: Future>(f: F) -> F::Output {
        tokio::task::LocalSet::new().run_until(f).await
    }

    #[tokio::test]
    async fn says_hello_then_answers_health_with_the_same_nonce() {
        local(async {
            let mut p = Platform::start(Role::Monitor, Idle);
            match p.recv().await {
                FromChild::Hello {
                    role,
                    pid,
                    version,
                    sandbox,
                } => {
                    assert_eq!(role, Role::Monitor);
                    assert_eq!(pid, std::process::id());
                    assert_eq!(version, env!("CARGO_PKG_VERSION"));
                    assert!(!sandbox.is_empty());
                }
                other => panic!("expected hello first, got {other:?}"),
            }
            p.send(ToChild::HealthCheck { nonce: 0xdead_beef }).await;
            assert_eq!(
                p.recv().await,
                FromChild::Health {
                    nonce: 0xdead_beef,
                    ok: true,
                    detail: String::new()
                }
            );
            assert!(p.close().await.is_ok(), "a closed channel is a clean exit");
        })
        .await
    }

    #[tokio::test]
    async fn health_detail_comes_from_the_handler_as_one_line() {
        local(async {
            let mut p = Platform::start(Role::Collector, Counter::default());
            p.recv().await;
            p.send(ToChild::HealthCheck { nonce: 7 }).await;
            assert_eq!(
                p.recv().await,
                FromChild::Health {
                    nonce: 7,
                    ok: false,
                    detail: "ticks=0 second line".into()
                }
            );
            p.close().await.expect("clean exit");
        })
        .await
    }

    #[tokio::test]
    async fn garbage_frames_are_ignored() {
        local(async {
            let (ours, theirs) = UnixStream::pair().expect("socketpair");
            let child =
                tokio::task::spawn_local(serve_on(Channel::new(theirs), Role::Control, Idle));
            let mut raw = ours;
            // Not protobuf; an empty frame (a ToChild without a message); a
            // config without an interval and one with interval 0 (both
            // refused by the decoder).
            for body in [
                &[0xffu8, 0xff, 0xff][..],
                &[],
                &[0x0a, 0x00],
                &[0x0a, 0x02, 0x08, 0x00],
            ] {
                raw.write_all(&(body.len() as u32).to_be_bytes())
                    .await
                    .expect("write");
                raw.write_all(body).await.expect("write");
            }
            let mut p = Platform {
                channel: Channel::new(raw),
                child,
            };
            assert!(matches!(p.recv().await, FromChild::Hello { .. }));
            assert!(
                p.sync(1).await.is_empty(),
                "garbage is answered with nothing"
            );
            p.close().await.expect("still running, then a clean exit");
        })
        .await
    }

    #[tokio::test]
    async fn facts_are_sent_by_a_handler_that_has_them_and_ignored_otherwise() {
        local(async {
            let mut p = Platform::start(Role::Collector, Counter::default());
            p.recv().await;
            p.send(ToChild::CollectFacts).await;
            let got = p.sync(2).await;
            assert_eq!(
                got,
                vec![FromChild::Facts(pb::HostFacts {
                    hostname: "h1".into(),
                    ..Default::default()
                })]
            );
            p.close().await.expect("clean exit");

            let mut p = Platform::start(Role::Monitor, Idle);
            p.recv().await;
            p.send(ToChild::CollectFacts).await;
            assert!(p.sync(3).await.is_empty());
            p.close().await.expect("clean exit");
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn health_is_answered_while_commands_run_one_at_a_time_in_order() {
        local(async {
            let mut p = Platform::start(Role::Control, Slow);
            p.recv().await;
            p.send(signed("first")).await;
            p.send(signed("second")).await;
            assert!(
                p.sync(1).await.is_empty(),
                "a running command does not hold up the health check"
            );
            tokio::time::advance(Duration::from_secs(10)).await;
            let done = p.sync(2).await;
            assert_eq!(done.len(), 1, "one at a time: {done:?}");
            assert_eq!(result_of(&done[0]), "first");
            tokio::time::advance(Duration::from_secs(10)).await;
            let done = p.sync(3).await;
            assert_eq!(done.len(), 1, "{done:?}");
            assert_eq!(result_of(&done[0]), "second");
            p.close().await.expect("clean exit");
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn commands_beyond_the_waiting_limit_are_dropped() {
        local(async {
            let mut p = Platform::start(Role::Control, Slow);
            p.recv().await;
            for n in 0..MAX_WAITING_COMMANDS + 3 {
                p.send(signed(&format!("c{n}"))).await;
            }
            assert!(p.sync(1).await.is_empty());
            let mut results = Vec::new();
            for n in 0..MAX_WAITING_COMMANDS + 3 {
                tokio::time::advance(Duration::from_secs(10)).await;
                let done = p.sync(100 + n as u64).await;
                results.extend(done.iter().map(|m| result_of(m).to_owned()));
            }
            // The running one and the waiting ones; the two after that were dropped.
            let expected: Vec<String> = (0..=MAX_WAITING_COMMANDS)
                .map(|n| format!("c{n}"))
                .collect();
            assert_eq!(results, expected);
            p.close().await.expect("clean exit");
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn ticks_follow_the_configured_interval() {
        local(async {
            let mut p = Platform::start(Role::Collector, Counter::default());
            p.recv().await;
            assert!(p.sync(1).await.is_empty());
            // Nothing is configured yet: no ticks however long we wait.
            tokio::time::advance(Duration::from_secs(3600)).await;
            assert!(p.sync(2).await.is_empty());

            p.send(ToChild::Config {
                metrics_interval_ms: 2_000,
            })
            .await;
            assert!(p.sync(3).await.is_empty());
            tokio::time::advance(Duration::from_millis(1_999)).await;
            assert!(
                p.sync(4).await.is_empty(),
                "the first tick comes one interval after the config"
            );
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(p.sync(5).await, vec![metrics(1)]);
            tokio::time::advance(Duration::from_millis(2_000)).await;
            assert_eq!(p.sync(6).await, vec![metrics(2)]);

            // The same interval again keeps the phase.
            tokio::time::advance(Duration::from_millis(1_000)).await;
            p.send(ToChild::Config {
                metrics_interval_ms: 2_000,
            })
            .await;
            assert!(p.sync(7).await.is_empty());
            tokio::time::advance(Duration::from_millis(1_000)).await;
            assert_eq!(p.sync(8).await, vec![metrics(3)]);

            // A new interval restarts the timer.
            p.send(ToChild::Config {
                metrics_interval_ms: 10_000,
            })
            .await;
            assert!(p.sync(9).await.is_empty());
            tokio::time::advance(Duration::from_millis(9_999)).await;
            assert!(p.sync(10).await.is_empty());
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(p.sync(11).await, vec![metrics(4)]);
            p.close().await.expect("clean exit");
        })
        .await
    }

    #[tokio::test(start_paused = true)]
    async fn intervals_are_clamped() {
        local(async {
            let mut p = Platform::start(Role::Collector, Counter::default());
            p.recv().await;
            p.send(ToChild::Config {
                metrics_interval_ms: 1,
            })
            .await;
            assert!(p.sync(1).await.is_empty());
            tokio::time::advance(MIN_INTERVAL - Duration::from_millis(1)).await;
            assert!(p.sync(2).await.is_empty(), "1 ms is raised to MIN_INTERVAL");
            tokio::time::advance(Duration::from_millis(1)).await;
            assert_eq!(p.sync(3).await, vec![metrics(1)]);

            // An interval that would overflow the clock is lowered, not a panic.
            p.send(ToChild::Config {
                metrics_interval_ms: u64::MAX,
            })
            .await;
            assert!(p.sync(4).await.is_empty());
            tokio::time::advance(MAX_INTERVAL).await;
            assert_eq!(p.sync(5).await, vec![metrics(2)]);
            p.close().await.expect("clean exit");
        })
        .await
    }

    #[tokio::test]
    async fn a_broken_frame_stream_is_an_error() {
        local(async {
            let (mut ours, theirs) = UnixStream::pair().expect("socketpair");
            let child =
                tokio::task::spawn_local(serve_on(Channel::new(theirs), Role::Control, Idle));
            // A length prefix beyond the local frame cap: framing is lost.
            ours.write_all(&u32::MAX.to_be_bytes())
                .await
                .expect("write");
            match child.await.expect("child task") {
                Err(ChildError::Recv(IpcError::Io(e))) => {
                    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData)
                }
                other => panic!("expected a receive error, got {other:?}"),
            }
        })
        .await
    }

    #[tokio::test]
    async fn a_platform_gone_before_hello_is_a_clean_exit() {
        let (ours, theirs) = UnixStream::pair().expect("socketpair");
        drop(ours);
        assert!(
            serve_on(Channel::new(theirs), Role::Monitor, Idle)
                .await
                .is_ok()
        );
    }

    #[test]
    fn one_line_replaces_controls_and_caps_length() {
        assert_eq!(one_line("a\tb\r\nc"), "a b  c");
        let long = "é".repeat(msg::MAX_STRING);
        let cut = one_line(&long);
        assert!(cut.len() <= msg::MAX_STRING && cut.len() > msg::MAX_STRING - 2);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    fn metrics(n: i64) -> FromChild {
        FromChild::Metrics(pb::Metrics {
            collected_at_unix_ms: n,
            ..Default::default()
        })
    }
}
