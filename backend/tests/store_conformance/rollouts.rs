//! Patch policies, rollouts, reboots after runs and when updates were
//! first offered.

use palisade_backend::audit::Actor;
use palisade_backend::commands::{CommandKind, NewCommand, store as commands};
use palisade_backend::packages::{Change, Reboot, Report};
use palisade_backend::patching::policy_store::{self, RolloutState};
use palisade_backend::patching::{RebootState, RunState, policy, rollout, store as runs};
use palisade_packages::inventory::{Installed, Inventory, Manager, Status, Update};
use palisade_proto::msg::RecordBody;
use palisade_proto::pb;

use crate::{Ctx, T0, WEB_GROUP, conformance, rec};

conformance!(
    policies_are_stored_listed_renamed_and_deleted,
    a_window_opening_makes_one_rollout_with_runs_in_hostname_order,
    queued_runs_start_once_and_are_skipped_when_the_rollout_stops,
    a_successful_run_whose_policy_reboots_gets_one_reboot,
    first_offered_times_survive_a_resent_inventory_and_go_with_the_update,
);

fn inventory(updates: &[(&str, &str)]) -> Inventory {
    let mut inv = Inventory::empty(Manager::Dpkg);
    for (name, candidate) in updates {
        inv.insert_installed(Installed {
            name: (*name).into(),
            arch: "amd64".into(),
            version: "1.0".into(),
            source: (*name).into(),
            held: false,
        });
        inv.insert_update(Update {
            name: (*name).into(),
            arch: "amd64".into(),
            installed: "1.0".into(),
            candidate: (*candidate).into(),
            security: true,
            status: Status::Pending,
            detail: String::new(),
            origins: Vec::new(),
            advisories: Vec::new(),
            severity: String::new(),
            cves: Vec::new(),
        });
    }
    inv
}

async fn put_inventory(ctx: &Ctx, host: &'static str, seq: u64, inv: Inventory, at: i64) {
    let report = Report {
        collected_at: at,
        lists_updated_at: None,
        reboot: Reboot::default(),
    };
    ctx.db
        .write("t", move |tx| {
            palisade_backend::packages::store::store(tx, host, seq, &Change::Whole(inv), &report)
        })
        .await
        .unwrap();
}

fn policy_json(name: &str, extra: &str) -> policy::PolicyInput {
    let body = format!(
        r#"{{"name":"{name}","group_ids":["{WEB_GROUP}"],"selection":{{"kind":"security"}},"approval":"none"{extra}}}"#
    );
    policy::parse(body.as_bytes()).unwrap()
}

async fn make_policy(ctx: &Ctx, id: &'static str, input: policy::PolicyInput) {
    ctx.db
        .write("t", move |tx| {
            assert!(policy_store::insert(tx, id, &input, "user:alice", T0)?);
            Ok(())
        })
        .await
        .unwrap();
}

async fn fleet(ctx: Ctx) -> Ctx {
    // Hostnames are "<id>.example": ha, hb, hc in that order.
    let ctx = ctx.with_host("hb").await;
    ctx.add_host("ha").await;
    ctx.add_host("hc").await;
    for (i, host) in ["ha", "hb", "hc"].into_iter().enumerate() {
        put_inventory(
            &ctx,
            host,
            1,
            inventory(&[("openssl", "3.0.15-1")]),
            T0 + i as i64,
        )
        .await;
    }
    ctx
}

async fn policies_are_stored_listed_renamed_and_deleted(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    let input = policy_json(
        "weekly",
        r#","exclude":["linux-*"],"reboot":"if_required","canary":1,"concurrency":4,"max_failure_percent":25,"auto_approve_after_days":7,
           "window":{"days":["sat","sun"],"start":"02:30","duration_minutes":90,"time_zone":"Europe/Berlin"}"#,
    );
    make_policy(&ctx, "p1", input.clone()).await;
    let again = input.clone();
    let dup = ctx
        .db
        .write("t", move |tx| {
            policy_store::insert(tx, "p2", &again, "user:bob", T0)
        })
        .await
        .unwrap();
    assert!(!dup, "names are unique");
    let got = ctx
        .db
        .read("t", |tx| policy_store::get(tx, "p1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.exclude[0].as_str(), "linux-*");
    assert_eq!(got.window.as_ref().unwrap().time_zone, "Europe/Berlin");
    assert_eq!(
        (got.canary, got.concurrency, got.max_failure_percent),
        (1, 4, 25)
    );
    assert_eq!(got.auto_approve_after_days, Some(7));
    assert_eq!(got.reboot, policy::RebootPolicy::IfRequired);
    let renamed = policy_json("nightly", "");
    ctx.db
        .write("t", move |tx| {
            assert!(!policy_store::name_taken(tx, "nightly", "p1")?);
            assert!(policy_store::update(
                tx,
                "p1",
                &renamed,
                "user:bob",
                T0 + 1
            )?);
            Ok(())
        })
        .await
        .unwrap();
    let list = ctx.db.read("t", policy_store::list).await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].name.as_str(), list[0].updated_by.as_str()),
        ("nightly", "user:bob")
    );
    assert!(list[0].window.is_none());
    assert!(
        ctx.db
            .write("t", |tx| policy_store::delete(tx, "p1"))
            .await
            .unwrap()
    );
    assert!(
        ctx.db
            .read("t", policy_store::list)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_window_opening_makes_one_rollout_with_runs_in_hostname_order(ctx: Ctx) {
    let ctx = fleet(ctx).await;
    make_policy(&ctx, "p1", policy_json("weekly", r#","canary":1"#)).await;
    let policy = ctx
        .db
        .read("t", |tx| policy_store::get(tx, "p1"))
        .await
        .unwrap()
        .unwrap();
    let window = Some((T0, T0 + 3_600_000));
    let (p1, p2) = (policy.clone(), policy.clone());
    let first = ctx
        .db
        .write("t", move |tx| {
            rollout::create(tx, &p1, window, &Actor::System, None, T0)
        })
        .await
        .unwrap();
    let second = ctx
        .db
        .write("t", move |tx| {
            rollout::create(tx, &p2, window, &Actor::System, None, T0 + 5)
        })
        .await
        .unwrap();
    let id = first.expect("the first makes it");
    assert!(second.is_none(), "the same opening makes no second rollout");
    let rid = id.clone();
    let listed = ctx
        .db
        .read("t", move |tx| runs::rollout_runs(tx, &rid, T0))
        .await
        .unwrap();
    let hosts: Vec<(&str, RunState, Option<u32>)> = listed
        .iter()
        .map(|r| (r.host_id.as_str(), r.state, r.rollout_position))
        .collect();
    assert_eq!(
        hosts,
        [
            ("ha", RunState::Queued, Some(0)),
            ("hb", RunState::Queued, Some(1)),
            ("hc", RunState::Queued, Some(2)),
        ]
    );
    let running = ctx
        .db
        .read("t", policy_store::running_rollouts)
        .await
        .unwrap();
    assert_eq!(running.len(), 1);
    assert_eq!(
        (running[0].occurrence, running[0].window_end),
        (Some(T0), Some(T0 + 3_600_000))
    );
    // Started by hand: as many as asked for.
    let p3 = policy.clone();
    let by_hand = ctx
        .db
        .write("t", move |tx| {
            rollout::create(tx, &p3, None, &Actor::User("alice".into()), Some(1), T0)
        })
        .await
        .unwrap();
    assert!(by_hand.is_some());
}

async fn queued_runs_start_once_and_are_skipped_when_the_rollout_stops(ctx: Ctx) {
    let ctx = fleet(ctx).await;
    make_policy(&ctx, "p1", policy_json("weekly", "")).await;
    let rid = ctx
        .db
        .write("t", |tx| {
            let policy = policy_store::get(tx, "p1")?.unwrap();
            Ok(rollout::create(tx, &policy, None, &Actor::System, None, T0)?.unwrap())
        })
        .await
        .unwrap();
    let id = rid.clone();
    let first = ctx
        .db
        .read("t", move |tx| runs::rollout_runs(tx, &id, T0))
        .await
        .unwrap()[0]
        .id
        .clone();
    create_command(&ctx, "dry-a", "ha").await;
    let (r, f) = (rid.clone(), first.clone());
    ctx.db
        .write("t", move |tx| {
            assert!(policy_store::lock_running(tx, &r)?);
            assert!(runs::begin_planning(tx, &f, "dry-a")?);
            assert!(!runs::begin_planning(tx, &f, "dry-a")?, "only from queued");
            Ok(())
        })
        .await
        .unwrap();
    let r = rid.clone();
    let skipped = ctx
        .db
        .write("t", move |tx| {
            let n = runs::skip_queued(tx, &r, "the rollout stopped: test")?;
            assert!(policy_store::finish_rollout(
                tx,
                &r,
                RolloutState::Stopped,
                Some("test"),
                T0 + 9
            )?);
            assert!(!policy_store::finish_rollout(
                tx,
                &r,
                RolloutState::Completed,
                None,
                T0 + 9
            )?);
            assert!(!policy_store::lock_running(tx, &r)?);
            Ok(n)
        })
        .await
        .unwrap();
    assert_eq!(skipped, 2);
    let id = rid.clone();
    let states: Vec<RunState> = ctx
        .db
        .read("t", move |tx| runs::rollout_runs(tx, &id, T0))
        .await
        .unwrap()
        .iter()
        .map(|r| r.state)
        .collect();
    assert_eq!(
        states,
        [RunState::Planning, RunState::Skipped, RunState::Skipped]
    );
    let id = rid.clone();
    let got = ctx
        .db
        .read("t", move |tx| policy_store::get_rollout(tx, &id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (got.state, got.stop_reason.as_deref()),
        (RolloutState::Stopped, Some("test"))
    );
}

fn command(id: &str, host: &str) -> NewCommand {
    NewCommand {
        id: id.into(),
        host_id: host.into(),
        kind: CommandKind::UpgradePackages,
        payload: serde_json::json!({ "type": "upgrade_packages" }),
        requested_by: Actor::System,
        source_ip: None,
        user_agent: None,
        issued_at: T0,
        expires_at: T0 + 5 * 60_000,
        command_bytes: vec![1, 2, 3],
        signature: vec![9; 64],
    }
}

async fn create_command(ctx: &Ctx, id: &str, host: &str) {
    let c = command(id, host);
    ctx.db
        .write("t", move |tx| commands::create(tx, &c).map(|_| ()))
        .await
        .unwrap();
}

fn result(id: &str, changes: Vec<pb::PackageChange>) -> RecordBody {
    RecordBody::CommandResult(pb::CommandResult {
        command_id: id.into(),
        status: pb::CommandStatus::Succeeded as i32,
        started_at_unix_ms: T0 + 10,
        finished_at_unix_ms: T0 + 20,
        changes,
        ..Default::default()
    })
}

async fn a_successful_run_whose_policy_reboots_gets_one_reboot(ctx: Ctx) {
    let ctx = fleet(ctx).await;
    make_policy(&ctx, "p1", policy_json("weekly", r#","reboot":"always""#)).await;
    let rid = ctx
        .db
        .write("t", |tx| {
            let policy = policy_store::get(tx, "p1")?.unwrap();
            Ok(rollout::create(tx, &policy, None, &Actor::System, None, T0)?.unwrap())
        })
        .await
        .unwrap();
    let id = rid.clone();
    let run_id = ctx
        .db
        .read("t", move |tx| runs::rollout_runs(tx, &id, T0))
        .await
        .unwrap()[0]
        .id
        .clone();
    create_command(&ctx, "dry", "ha").await;
    create_command(&ctx, "real", "ha").await;
    let r = run_id.clone();
    ctx.db
        .write("t", move |tx| {
            assert!(runs::begin_planning(tx, &r, "dry")?);
            Ok(())
        })
        .await
        .unwrap();
    let upgrade = vec![pb::PackageChange {
        name: "openssl".into(),
        arch: "amd64".into(),
        before: "1.0".into(),
        after: "3.0.15-1".into(),
    }];
    ctx.store("ha", T0 + 100, vec![rec(1, result("dry", upgrade.clone()))])
        .await
        .unwrap();
    let r = run_id.clone();
    ctx.db
        .write("t", move |tx| {
            assert!(runs::start(tx, &r, RunState::Approved, "real", None)?);
            Ok(())
        })
        .await
        .unwrap();
    assert!(
        ctx.db
            .read("t", |tx| runs::reboots_due(tx, 10))
            .await
            .unwrap()
            .is_empty()
    );
    ctx.store("ha", T0 + 200, vec![rec(2, result("real", upgrade))])
        .await
        .unwrap();
    let due = ctx
        .db
        .read("t", |tx| runs::reboots_due(tx, 10))
        .await
        .unwrap();
    assert_eq!(due, [(run_id.clone(), "ha".to_owned())]);
    let r = run_id.clone();
    let (once, twice) = ctx
        .db
        .write("t", move |tx| {
            Ok((
                runs::reboot_issued(tx, &r, "reboot-1")?,
                runs::reboot_issued(tx, &r, "reboot-2")?,
            ))
        })
        .await
        .unwrap();
    assert!(
        once && !twice,
        "one reboot per run, whichever replica issues it"
    );
    let r = run_id.clone();
    let run = ctx
        .db
        .read("t", move |tx| runs::get(tx, &r, T0 + 300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(run.state, RunState::Succeeded);
    assert_eq!(run.reboot_state, Some(RebootState::Issued));
    assert_eq!(run.reboot_command_id.as_deref(), Some("reboot-1"));
}

async fn first_offered_times_survive_a_resent_inventory_and_go_with_the_update(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    put_inventory(
        &ctx,
        "h1",
        1,
        inventory(&[("openssl", "3.0.15-1"), ("curl", "8.0")]),
        T0,
    )
    .await;
    // The same updates resent later, plus a new candidate for curl.
    put_inventory(
        &ctx,
        "h1",
        2,
        inventory(&[("openssl", "3.0.15-1"), ("curl", "8.1")]),
        T0 + 1000,
    )
    .await;
    let seen = ctx
        .db
        .read("t", |tx| {
            palisade_backend::packages::store::first_seen(tx, "h1")
        })
        .await
        .unwrap();
    let key = |n: &str, c: &str| (n.to_owned(), "amd64".to_owned(), c.to_owned());
    assert_eq!(seen.get(&key("openssl", "3.0.15-1")), Some(&T0));
    assert_eq!(seen.get(&key("curl", "8.1")), Some(&(T0 + 1000)));
    assert!(
        !seen.contains_key(&key("curl", "8.0")),
        "a candidate no longer offered is forgotten"
    );
    put_inventory(&ctx, "h1", 3, inventory(&[]), T0 + 2000).await;
    let seen = ctx
        .db
        .read("t", |tx| {
            palisade_backend::packages::store::first_seen(tx, "h1")
        })
        .await
        .unwrap();
    assert!(seen.is_empty());
}
