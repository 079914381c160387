//! Patch runs and streamed command output.

use palisade_backend::audit::{Action, Actor};
use palisade_backend::commands::store::OutputStored;
use palisade_backend::commands::{
    CommandKind, MAX_STREAMED_OUTPUT, NewCommand, OutputPiece, store,
};
use palisade_backend::db::Millis;
use palisade_backend::patching::{Approval, NewRun, RunState, Selection, store as runs};
use palisade_packages::inventory::Manager;
use palisade_proto::msg::RecordBody;
use palisade_proto::pb;

use crate::{Ctx, T0, conformance, rec};

conformance!(
    output_is_stored_once_per_offset_only_for_the_hosts_command,
    output_reads_the_contiguous_prefix_and_stops_at_a_gap,
    output_beyond_the_cap_is_dropped_and_marked_truncated,
    output_records_from_the_uplink_are_applied,
    a_dry_run_result_becomes_the_plan_and_the_real_result_ends_the_run,
    a_failed_or_empty_dry_run_ends_the_run_and_a_cancelled_one_ignores_late_results,
    a_run_whose_command_expired_undelivered_reads_agent_offline,
    hosts_with_stale_indexes_are_asked_once_per_interval,
);

fn command(id: &str, host: &str, at: Millis) -> NewCommand {
    NewCommand {
        id: id.into(),
        host_id: host.into(),
        kind: CommandKind::UpgradePackages,
        payload: serde_json::json!({ "type": "upgrade_packages" }),
        requested_by: Actor::User("alice".into()),
        source_ip: None,
        user_agent: None,
        issued_at: at,
        expires_at: at + 5 * 60_000,
        command_bytes: vec![1, 2, 3],
        signature: vec![9; 64],
    }
}

async fn create_command(ctx: &Ctx, id: &str, host: &str) {
    let c = command(id, host, T0);
    ctx.db
        .write("t", move |tx| store::create(tx, &c).map(|_| ()))
        .await
        .unwrap();
}

async fn put(ctx: &Ctx, host: &str, command_id: &str, offset: u64, text: &str) -> OutputStored {
    let (host, piece) = (
        host.to_owned(),
        OutputPiece {
            command_id: command_id.into(),
            offset,
            text: text.into(),
        },
    );
    ctx.db
        .write("t", move |tx| store::append_output(tx, &host, &piece))
        .await
        .unwrap()
}

async fn read(ctx: &Ctx, command_id: &'static str, from: u64) -> store::OutputSlice {
    ctx.db
        .read("t", move |tx| {
            store::output_from(tx, command_id, from, 1 << 20)
        })
        .await
        .unwrap()
}

async fn output_is_stored_once_per_offset_only_for_the_hosts_command(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    ctx.add_host("h2").await;
    create_command(&ctx, "c1", "h1").await;
    assert_eq!(
        put(&ctx, "h1", "c1", 0, "Reading ").await,
        OutputStored::Stored
    );
    assert_eq!(
        put(&ctx, "h1", "c1", 8, "lists\n").await,
        OutputStored::Stored
    );
    // A resent piece is stored once.
    assert_eq!(
        put(&ctx, "h1", "c1", 8, "lists\n").await,
        OutputStored::Duplicate
    );
    // Another host's agent cannot write into h1's command; unknown ids are dropped.
    assert_eq!(
        put(&ctx, "h2", "c1", 14, "forged").await,
        OutputStored::NotThisHost
    );
    assert_eq!(
        put(&ctx, "h1", "nope", 0, "x").await,
        OutputStored::NotThisHost
    );
    let all = read(&ctx, "c1", 0).await;
    assert_eq!(all.text, "Reading lists\n");
    assert_eq!(all.next, 14);
    assert!(!all.more);
    let row = ctx
        .db
        .read("t", |tx| store::get(tx, "c1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.output_bytes, 14);
    assert!(!row.output_truncated);
}

async fn output_reads_the_contiguous_prefix_and_stops_at_a_gap(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    create_command(&ctx, "c1", "h1").await;
    put(&ctx, "h1", "c1", 0, "abc").await;
    put(&ctx, "h1", "c1", 6, "ghi").await;
    let first = read(&ctx, "c1", 0).await;
    assert_eq!(
        (first.text.as_str(), first.next, first.more),
        ("abc", 3, true)
    );
    // Nothing new from where the gap is.
    let again = read(&ctx, "c1", first.next).await;
    assert_eq!((again.text.as_str(), again.next), ("", 3));
    // The piece in flight arrives: everything reads through.
    // "dé" is three bytes: offsets count bytes, not characters.
    put(&ctx, "h1", "c1", 3, "dé").await;
    let rest = read(&ctx, "c1", 3).await;
    assert_eq!(rest.text, "déghi");
    assert!(!rest.more);
    assert_eq!(read(&ctx, "c1", 0).await.text.len() as u64, rest.next);
}

async fn output_beyond_the_cap_is_dropped_and_marked_truncated(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    create_command(&ctx, "c1", "h1").await;
    // Pretend most of the cap is used (writing 16 MiB would be slow).
    ctx.raw(&format!(
        "UPDATE commands SET output_bytes = {} WHERE id = 'c1'",
        MAX_STREAMED_OUTPUT - 4
    ));
    assert_eq!(put(&ctx, "h1", "c1", 0, "1234").await, OutputStored::Stored);
    assert_eq!(put(&ctx, "h1", "c1", 4, "5").await, OutputStored::Truncated);
    let row = ctx
        .db
        .read("t", |tx| store::get(tx, "c1"))
        .await
        .unwrap()
        .unwrap();
    assert!(row.output_truncated);
    assert_eq!(row.output_bytes, MAX_STREAMED_OUTPUT);
    assert_eq!(read(&ctx, "c1", 0).await.text, "1234");
}

fn output(command_id: &str, offset: u64, text: &str) -> RecordBody {
    RecordBody::CommandOutput(pb::CommandOutput {
        command_id: command_id.into(),
        offset,
        text: text.into(),
    })
}

async fn output_records_from_the_uplink_are_applied(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    ctx.add_host("h2").await;
    create_command(&ctx, "c1", "h1").await;
    ctx.store(
        "h1",
        T0,
        vec![
            rec(1, output("c1", 0, "one\n")),
            rec(2, output("c1", 4, "two\n")),
        ],
    )
    .await
    .unwrap();
    // A resend under a new sequence (the agent restarted) and a forged piece
    // from another host: stored once, and the other host's stream goes on.
    ctx.store("h1", T0, vec![rec(3, output("c1", 4, "two\n"))])
        .await
        .unwrap();
    assert_eq!(
        ctx.store("h2", T0, vec![rec(1, output("c1", 8, "evil\n"))])
            .await
            .unwrap(),
        1
    );
    assert_eq!(read(&ctx, "c1", 0).await.text, "one\ntwo\n");
}

fn new_run(id: &str, host: &str, dry_run: &str, approval: Approval) -> NewRun {
    NewRun {
        id: id.into(),
        host_id: host.into(),
        selection: Selection::Security,
        approval,
        manager: Manager::Dpkg,
        requested_by: Actor::User("alice".into()),
        requested_by_user: Some(1),
        requested_at: T0,
        dry_run_command_id: Some(dry_run.into()),
        timeout_secs: 600,
        policy: serde_json::json!({ "selection": { "kind": "security" } }),
        rollout_id: None,
        rollout_position: None,
        exclude: Vec::new(),
        auto_approve_after_days: None,
        reboot: palisade_backend::patching::RebootPolicy::Never,
    }
}

async fn insert_run(ctx: &Ctx, run: NewRun) {
    ctx.db
        .write("t", move |tx| runs::insert(tx, &run))
        .await
        .unwrap();
}

async fn run(ctx: &Ctx, id: &'static str, now: Millis) -> palisade_backend::patching::PatchRun {
    ctx.db
        .read("t", move |tx| runs::get(tx, id, now))
        .await
        .unwrap()
        .unwrap()
}

fn change(name: &str, before: &str, after: &str) -> pb::PackageChange {
    pb::PackageChange {
        name: name.into(),
        arch: "amd64".into(),
        before: before.into(),
        after: after.into(),
    }
}

fn result(id: &str, status: pb::CommandStatus, changes: Vec<pb::PackageChange>) -> RecordBody {
    RecordBody::CommandResult(pb::CommandResult {
        command_id: id.into(),
        status: status as i32,
        exit_code: if status == pb::CommandStatus::Succeeded {
            0
        } else {
            100
        },
        started_at_unix_ms: T0 + 10,
        finished_at_unix_ms: T0 + 20,
        changes,
        ..Default::default()
    })
}

async fn a_dry_run_result_becomes_the_plan_and_the_real_result_ends_the_run(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    create_command(&ctx, "dry", "h1").await;
    insert_run(&ctx, new_run("r1", "h1", "dry", Approval::OtherUser)).await;
    assert_eq!(run(&ctx, "r1", T0).await.state, RunState::Planning);
    ctx.store(
        "h1",
        T0 + 1000,
        vec![rec(
            1,
            result(
                "dry",
                pb::CommandStatus::Succeeded,
                vec![
                    change("openssl", "3.0.14-1", "3.0.15-1"),
                    change("libfoo", "1.0", ""),
                ],
            ),
        )],
    )
    .await
    .unwrap();
    let planned = run(&ctx, "r1", T0 + 1000).await;
    assert_eq!(planned.state, RunState::AwaitingApproval);
    let plan = planned.plan.clone().unwrap();
    assert_eq!(plan.len(), 2);
    assert_eq!(plan[0].after, "3.0.15-1");
    assert!(plan[1].is_removal());

    // Approval moves it to running once: a second approval finds it moved.
    create_command(&ctx, "real", "h1").await;
    let approver = Actor::User("bob".into());
    let started = ctx
        .db
        .write("t", move |tx| {
            Ok((
                runs::start(
                    tx,
                    "r1",
                    RunState::AwaitingApproval,
                    "real",
                    Some((&approver, T0 + 2000)),
                )?,
                runs::start(
                    tx,
                    "r1",
                    RunState::AwaitingApproval,
                    "real",
                    Some((&approver, T0 + 2000)),
                )?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(started, (true, false));
    let running = run(&ctx, "r1", T0 + 2000).await;
    assert_eq!(running.state, RunState::Running);
    assert_eq!(running.approved_by, Some(Actor::User("bob".into())));
    assert_eq!(running.command_id.as_deref(), Some("real"));

    ctx.store(
        "h1",
        T0 + 3000,
        vec![rec(
            2,
            result(
                "real",
                pb::CommandStatus::Succeeded,
                vec![change("openssl", "3.0.14-1", "3.0.15-1")],
            ),
        )],
    )
    .await
    .unwrap();
    let done = run(&ctx, "r1", T0 + 3000).await;
    assert_eq!(done.state, RunState::Succeeded);
    assert_eq!(done.changes.unwrap()[0].before, "3.0.14-1");
    assert_eq!(done.exit_code, Some(0));
    assert_eq!(
        (done.started_at, done.finished_at),
        (Some(T0 + 10), Some(T0 + 20))
    );
    let finished = ctx
        .count("SELECT COUNT(*) FROM audit_log WHERE action = 'patch_run.finish' AND actor = 'agent:h1'")
        .await;
    assert_eq!(finished, 1);
    assert_eq!(Action::PatchRunFinish.as_str(), "patch_run.finish");

    // Listed newest first, filtered by state.
    let listed = ctx
        .db
        .read("t", |tx| {
            runs::list(
                tx,
                &runs::RunFilter {
                    state: Some(RunState::Succeeded),
                    limit: 10,
                    ..Default::default()
                },
                T0 + 3000,
            )
        })
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
}

async fn a_failed_or_empty_dry_run_ends_the_run_and_a_cancelled_one_ignores_late_results(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    for (run_id, cmd) in [("r1", "d1"), ("r2", "d2"), ("r3", "d3"), ("r4", "d4")] {
        create_command(&ctx, cmd, "h1").await;
        insert_run(&ctx, new_run(run_id, "h1", cmd, Approval::None)).await;
    }
    // r3 is cancelled while planning.
    let by = Actor::User("carol".into());
    assert!(
        ctx.db
            .write("t", move |tx| runs::cancel_now(tx, "r3", &by, T0 + 1))
            .await
            .unwrap()
    );
    ctx.store(
        "h1",
        T0 + 1000,
        vec![
            rec(1, result("d1", pb::CommandStatus::Failed, Vec::new())),
            rec(2, result("d2", pb::CommandStatus::Succeeded, Vec::new())),
            rec(
                3,
                result(
                    "d3",
                    pb::CommandStatus::Succeeded,
                    vec![change("a", "1", "2")],
                ),
            ),
            rec(
                4,
                result(
                    "d4",
                    pb::CommandStatus::Succeeded,
                    vec![change("a", "1", "2")],
                ),
            ),
        ],
    )
    .await
    .unwrap();
    let r1 = run(&ctx, "r1", T0).await;
    assert_eq!(r1.state, RunState::Failed);
    assert!(r1.error.unwrap().contains("exit code 100"));
    assert_eq!(run(&ctx, "r2", T0).await.state, RunState::NothingToDo);
    let r3 = run(&ctx, "r3", T0).await;
    assert_eq!(r3.state, RunState::Cancelled);
    assert_eq!(
        r3.plan, None,
        "a late dry run does not revive a cancelled run"
    );
    // Approval "none": the plan is approved by itself, the real command follows.
    assert_eq!(run(&ctx, "r4", T0).await.state, RunState::Approved);
    let approved = ctx
        .db
        .read("t", |tx| runs::approved_for_host(tx, "h1", T0))
        .await
        .unwrap();
    assert_eq!(approved.len(), 1);
    assert_eq!(approved[0].id, "r4");
}

async fn a_run_whose_command_expired_undelivered_reads_agent_offline(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    create_command(&ctx, "dry", "h1").await;
    insert_run(&ctx, new_run("r1", "h1", "dry", Approval::Any)).await;
    let expiry = T0 + 5 * 60_000;
    assert_eq!(run(&ctx, "r1", expiry - 1).await.state, RunState::Planning);
    assert_eq!(run(&ctx, "r1", expiry).await.state, RunState::AgentOffline);
    let offline = ctx
        .db
        .read("t", move |tx| {
            runs::list(
                tx,
                &runs::RunFilter {
                    state: Some(RunState::AgentOffline),
                    host_id: Some("h1".into()),
                    limit: 10,
                    ..Default::default()
                },
                expiry,
            )
        })
        .await
        .unwrap();
    assert_eq!(offline.len(), 1);
    // Delivered in time: not offline, whatever the time.
    ctx.db
        .write("t", move |tx| store::delivered(tx, "dry", T0 + 1))
        .await
        .unwrap();
    assert_eq!(run(&ctx, "r1", expiry + 1).await.state, RunState::Planning);
}

/// A host's inventory row with indexes refreshed at `lists` (`None`: never).
fn inventory_sql(host: &str, lists: Option<Millis>) -> String {
    let lists = lists.map_or_else(|| "NULL".to_owned(), |l| l.to_string());
    format!(
        "INSERT INTO host_inventories (host_id, manager, digest, seq, collected_at, \
         lists_updated_at, reboot_required, reboot_reasons, needs_full) \
         VALUES ('{host}', 'dpkg', X'00', 1, {T0}, {lists}, FALSE, '[]', FALSE)"
    )
}

async fn hosts_with_stale_indexes_are_asked_once_per_interval(ctx: Ctx) {
    use palisade_backend::patching::refresh::{REFRESH_AFTER, stale};
    let hour = 3_600_000;
    let now = T0 + 100 * hour;
    let ctx = ctx.with_host("fresh").await;
    for host in ["old", "never", "no-inventory", "asked"] {
        ctx.add_host(host).await;
    }
    let mut sql = vec![
        inventory_sql("fresh", Some(now - hour)),
        inventory_sql("old", Some(now - 48 * hour)),
        inventory_sql("never", None),
        inventory_sql("asked", Some(now - 48 * hour)),
    ];
    if ctx.dialect() == palisade_backend::db::Dialect::Postgres {
        sql = sql
            .into_iter()
            .map(|s| s.replace("X'00'", "'\\x00'::bytea"))
            .collect();
    }
    for statement in &sql {
        ctx.raw(statement);
    }
    let mut asked = command("r1", "asked", now - hour);
    asked.kind = CommandKind::RefreshInventory;
    asked.payload = serde_json::json!({ "type": "refresh_inventory" });
    ctx.db
        .write("t", move |tx| store::create(tx, &asked).map(|_| ()))
        .await
        .unwrap();
    let hosts: Vec<String> = ["fresh", "old", "never", "no-inventory", "asked"]
        .map(String::from)
        .into();
    let due = {
        let hosts = hosts.clone();
        ctx.db
            .read("t", move |tx| stale(tx, &hosts, now))
            .await
            .unwrap()
    };
    assert_eq!(due, ["old", "never"]);
    // A day after that refresh command, the host is due again.
    let later = now + REFRESH_AFTER.as_millis() as i64;
    let due = ctx
        .db
        .read("t", move |tx| stale(tx, &hosts, later))
        .await
        .unwrap();
    assert_eq!(due, ["fresh", "old", "never", "asked"]);
}
