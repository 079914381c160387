//! Commands and their results.

use palisade_backend::audit::{Action, Actor, NewAuditEvent, Outcome};
use palisade_backend::commands::{CommandKind, CommandStatus, NewCommand, Restart, store};
use palisade_backend::db::{DbError, Millis};
use palisade_proto::msg::RecordBody;
use palisade_proto::pb;

use crate::{Ctx, T0, conformance, rec};

conformance!(
    a_command_and_its_audit_row_are_stored_together,
    delivery_takes_pending_and_undelivered_and_expires_the_never_sent,
    the_first_result_completes_a_command_once,
    results_that_match_no_command_of_the_host_are_audited_not_applied,
    a_hosts_commands_list_newest_first,
    an_upgrades_reboot_status_and_restarts_are_stored_with_its_result,
);

fn new_command(id: &str, host_id: &str, issued_at: Millis) -> NewCommand {
    NewCommand {
        id: id.into(),
        host_id: host_id.into(),
        kind: CommandKind::RestartService,
        payload: serde_json::json!({ "type": "restart_service", "unit": "nginx.service" }),
        requested_by: Actor::User("alice".into()),
        source_ip: Some("192.0.2.7".into()),
        user_agent: Some("curl/8".into()),
        issued_at,
        expires_at: issued_at + 5 * 60_000,
        command_bytes: vec![1, 2, 3],
        signature: vec![9; 64],
    }
}

async fn create(ctx: &Ctx, id: &str, host: &str, at: Millis) -> Result<(), DbError> {
    let command = new_command(id, host, at);
    let event = NewAuditEvent::new(
        T0,
        Actor::User("alice".into()),
        Action::CommandCreate,
        Outcome::Success,
    )
    .target("h1")
    .details(serde_json::json!({ "command_id": id }));
    ctx.db
        .write("t", move |tx| {
            store::create(tx, &command)?;
            palisade_backend::audit::store::append(tx, &event)?;
            Ok(())
        })
        .await
}

async fn get(ctx: &Ctx, id: &'static str) -> palisade_backend::commands::CommandRow {
    ctx.db
        .read("t", move |tx| store::get(tx, id))
        .await
        .unwrap()
        .unwrap()
}

fn result(id: &str, status: pb::CommandStatus, output: &str) -> RecordBody {
    RecordBody::CommandResult(pb::CommandResult {
        command_id: id.into(),
        status: status as i32,
        exit_code: if status == pb::CommandStatus::Failed {
            5
        } else {
            0
        },
        output: output.into(),
        started_at_unix_ms: T0 + 10,
        finished_at_unix_ms: T0 + 20,
        error: if status == pb::CommandStatus::Rejected {
            "replay: seen before".into()
        } else {
            String::new()
        },
        ..Default::default()
    })
}

async fn audit(ctx: &Ctx) -> Vec<palisade_backend::audit::AuditEvent> {
    ctx.db
        .read("t", |tx| palisade_backend::audit::store::latest(tx, 10))
        .await
        .unwrap()
}

async fn a_command_and_its_audit_row_are_stored_together(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    create(&ctx, "c1", "h1", T0).await.unwrap();
    let row = get(&ctx, "c1").await;
    assert_eq!(row.status, CommandStatus::Pending);
    assert_eq!(row.kind, CommandKind::RestartService);
    assert_eq!(row.requested_by, Actor::User("alice".into()));
    assert_eq!(row.command_bytes, vec![1, 2, 3]);
    assert_eq!(row.payload["unit"], "nginx.service");
    assert_eq!(audit(&ctx).await[0].action, Action::CommandCreate);

    // A duplicate id is a conflict, and its audit row is not written.
    let err = create(&ctx, "c1", "h1", T0).await.unwrap_err();
    assert!(matches!(err, DbError::Conflict { .. }), "{err}");
    assert_eq!(audit(&ctx).await.len(), 1);
    // A command for a host that does not exist is refused, audit row too.
    assert!(create(&ctx, "c2", "nobody", T0).await.is_err());
    assert_eq!(audit(&ctx).await.len(), 1);
    assert_eq!(
        ctx.db
            .read("t", palisade_backend::audit::store::verify)
            .await
            .unwrap(),
        None
    );
}

async fn delivery_takes_pending_and_undelivered_and_expires_the_never_sent(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    for (id, at) in [("old", T0 - 10 * 60_000), ("a", T0), ("b", T0 + 1)] {
        create(&ctx, id, "h1", at).await.unwrap();
    }
    let due = |now: Millis| {
        let db = ctx.db.clone();
        async move {
            db.write("t", move |tx| store::to_deliver(tx, "h1", now, 10))
                .await
                .unwrap()
                .into_iter()
                .map(|c| c.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        due(T0 + 2).await,
        ["a", "b"],
        "oldest first, the expired one left out"
    );
    assert_eq!(get(&ctx, "old").await.status, CommandStatus::Expired);

    for at in [T0 + 3, T0 + 4] {
        ctx.db
            .write("t", move |tx| store::delivered(tx, "a", at))
            .await
            .unwrap();
    }
    let a = get(&ctx, "a").await;
    assert_eq!(a.status, CommandStatus::Delivered);
    assert_eq!(a.delivered_at, Some(T0 + 3), "the first delivery is kept");
    // Delivered without a result: delivered again at the next connection.
    assert_eq!(due(T0 + 5).await, ["a", "b"]);
    // A delivered command past its expiry stays delivered (it may have
    // run; its result may still come) but is not sent again.
    assert!(due(T0 + 6 * 60_000).await.is_empty());
    assert_eq!(get(&ctx, "a").await.status, CommandStatus::Delivered);
    assert_eq!(get(&ctx, "b").await.status, CommandStatus::Expired);
}

async fn the_first_result_completes_a_command_once(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    create(&ctx, "c1", "h1", T0).await.unwrap();
    ctx.db
        .write("t", |tx| store::delivered(tx, "c1", T0 + 1))
        .await
        .unwrap();
    ctx.store(
        "h1",
        T0 + 50,
        vec![rec(
            1,
            result("c1", pb::CommandStatus::Failed, "no such unit"),
        )],
    )
    .await
    .unwrap();
    let c = get(&ctx, "c1").await;
    assert_eq!(c.status, CommandStatus::Failed);
    assert_eq!(c.exit_code, Some(5));
    assert_eq!(c.output.as_deref(), Some("no such unit"));
    assert_eq!(c.error, None);
    assert_eq!(
        (c.started_at, c.finished_at),
        (Some(T0 + 10), Some(T0 + 20))
    );
    assert_eq!(c.result_received_at, Some(T0 + 50));

    // The same record again, and a later replay refusal of a redelivery:
    // neither changes the stored result.
    ctx.store(
        "h1",
        T0 + 60,
        vec![
            rec(1, result("c1", pb::CommandStatus::Succeeded, "")),
            rec(2, result("c1", pb::CommandStatus::Rejected, "")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(get(&ctx, "c1").await, c);
    assert_eq!(audit(&ctx).await.len(), 1, "nothing to audit");
}

async fn results_that_match_no_command_of_the_host_are_audited_not_applied(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    ctx.add_host("h2").await;
    create(&ctx, "for-h2", "h2", T0).await.unwrap();
    // h1 reports a result for h2's command, one for an unknown id, and a
    // refusal of something control could not verify.
    ctx.store(
        "h1",
        T0 + 50,
        vec![
            rec(1, result("for-h2", pb::CommandStatus::Succeeded, "owned")),
            rec(2, result("nope", pb::CommandStatus::Failed, "")),
            rec(3, result("", pb::CommandStatus::Rejected, "")),
        ],
    )
    .await
    .unwrap();
    assert_eq!(
        get(&ctx, "for-h2").await.status,
        CommandStatus::Pending,
        "another host cannot complete h2's command"
    );
    let events = audit(&ctx).await;
    let actions: Vec<Action> = events.iter().map(|e| e.action).collect();
    assert_eq!(
        actions,
        [
            Action::CommandRefusedUnverified,
            Action::CommandUnmatchedResult,
            Action::CommandUnmatchedResult,
            Action::CommandCreate
        ]
    );
    assert_eq!(events[0].actor, Actor::Agent("h1".into()));
    assert_eq!(events[0].outcome, Outcome::Denied);
    assert_eq!(events[2].details["command_id"], "for-h2");
    // Stored idempotently: the same records again audit nothing more.
    ctx.store(
        "h1",
        T0 + 60,
        vec![rec(3, result("", pb::CommandStatus::Rejected, ""))],
    )
    .await
    .unwrap();
    assert_eq!(audit(&ctx).await.len(), 4);
    assert_eq!(
        ctx.db
            .read("t", palisade_backend::audit::store::verify)
            .await
            .unwrap(),
        None
    );
}

async fn a_hosts_commands_list_newest_first(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    for (id, at) in [("a", T0), ("c", T0 + 2), ("b", T0 + 1)] {
        create(&ctx, id, "h1", at).await.unwrap();
    }
    let ids: Vec<String> = ctx
        .db
        .read("t", |tx| store::for_host(tx, "h1", 2))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["c", "b"]);
    assert!(
        ctx.db
            .read("t", |tx| store::for_host(tx, "h2", 10))
            .await
            .unwrap()
            .is_empty()
    );
}

async fn an_upgrades_reboot_status_and_restarts_are_stored_with_its_result(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    for id in ["up-1", "up-2", "ping-1"] {
        create(&ctx, id, "h1", T0).await.unwrap();
    }
    let restarts = vec![
        pb::ServiceRestart {
            unit: "nginx.service".into(),
            pids: vec![7, 12],
            files: vec![
                "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
                "/usr/sbin/nginx".into(),
            ],
        },
        pb::ServiceRestart {
            unit: String::new(),
            pids: vec![30],
            files: vec!["/opt/app/bin/app".into()],
        },
    ];
    let with = |id: &str, reboot: Option<bool>, restarts: Vec<pb::ServiceRestart>| {
        let RecordBody::CommandResult(mut r) = result(id, pb::CommandStatus::Succeeded, "") else {
            unreachable!("a result")
        };
        r.reboot_required = reboot;
        r.restarts = restarts;
        RecordBody::CommandResult(r)
    };
    ctx.store(
        "h1",
        T0 + 50,
        vec![
            rec(1, with("up-1", Some(true), restarts)),
            rec(2, with("up-2", Some(false), Vec::new())),
            rec(3, result("ping-1", pb::CommandStatus::Succeeded, "pong")),
        ],
    )
    .await
    .unwrap();

    let up = get(&ctx, "up-1").await;
    assert_eq!(up.reboot_required, Some(true));
    assert_eq!(
        up.restarts,
        [
            Restart {
                unit: Some("nginx.service".into()),
                pids: vec![7, 12],
                files: vec![
                    "/usr/lib/x86_64-linux-gnu/libssl.so.3".into(),
                    "/usr/sbin/nginx".into()
                ],
            },
            Restart {
                unit: None,
                pids: vec![30],
                files: vec!["/opt/app/bin/app".into()],
            },
        ]
    );
    assert_eq!(up.restarts[0].service(), Some("nginx.service"));
    assert_eq!(up.restarts[1].service(), None);
    let up = get(&ctx, "up-2").await;
    assert_eq!((up.reboot_required, up.restarts.len()), (Some(false), 0));
    let ping = get(&ctx, "ping-1").await;
    assert_eq!(
        (ping.reboot_required, ping.restarts.len()),
        (None, 0),
        "a result that says nothing stores nothing"
    );
}
