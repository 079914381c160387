//! Package inventories: whole inventories, changes against a digest, the
//! fleet search, the fleet's update counts.

use palisade_backend::packages::{
    Applied, Change, FleetHost, GroupSummary, Reboot, Report, STALE_INDEXES_AFTER, UpdateCounts,
    group_summaries, sort_security_first, store,
};
use palisade_packages::inventory::{Installed, Inventory, Manager, Status, Update};

use palisade_proto::msg::RecordBody;
use palisade_proto::pb;

use crate::{Ctx, T0, WEB_GROUP, conformance, rec};

conformance!(
    a_whole_inventory_then_changes_make_what_the_agent_holds,
    a_change_against_another_inventory_is_refused_and_asks_for_the_whole,
    the_fleet_search_compares_versions_as_each_package_manager_does,
    package_records_from_the_uplink_are_applied_once_in_order,
    the_fleet_counts_updates_per_host_and_per_group_within_the_groups_asked_for,
);

fn installed(name: &str, version: &str) -> Installed {
    Installed {
        name: name.into(),
        arch: "amd64".into(),
        version: version.into(),
        source: name.into(),
        held: false,
    }
}

fn update(name: &str, installed: &str, candidate: &str, security: bool) -> Update {
    Update {
        name: name.into(),
        arch: "amd64".into(),
        installed: installed.into(),
        candidate: candidate.into(),
        security,
        status: Status::Pending,
        detail: String::new(),
        origins: vec!["Debian/bookworm-security".into()],
        advisories: Vec::new(),
        severity: String::new(),
        cves: vec!["CVE-2024-0001".into()],
    }
}

fn inventory(manager: Manager, packages: &[(&str, &str)], updates: Vec<Update>) -> Inventory {
    let mut inventory = Inventory::empty(manager);
    for (name, version) in packages {
        inventory.insert_installed(installed(name, version));
    }
    for u in updates {
        inventory.insert_update(u);
    }
    inventory
}

fn report(at: i64, reboot: bool) -> Report {
    Report {
        collected_at: at,
        lists_updated_at: Some(at - 60_000),
        reboot: Reboot {
            required: reboot,
            reasons: if reboot {
                vec!["/run/reboot-required".into()]
            } else {
                Vec::new()
            },
        },
    }
}

async fn put(ctx: &Ctx, host: &str, seq: u64, change: Change, report: Report) -> Applied {
    let host = host.to_owned();
    ctx.db
        .write("t", move |tx| {
            store::store(tx, &host, seq, &change, &report)
        })
        .await
        .unwrap()
}

async fn held(ctx: &Ctx, host: &str) -> Option<palisade_backend::packages::HostInventory> {
    let host = host.to_owned();
    ctx.db
        .read("t", move |tx| store::load(tx, &host))
        .await
        .unwrap()
}

async fn digest_held(ctx: &Ctx, host: &str) -> Option<Vec<u8>> {
    let host = host.to_owned();
    ctx.db
        .read("t", move |tx| store::digest_held(tx, &host))
        .await
        .unwrap()
}

async fn a_whole_inventory_then_changes_make_what_the_agent_holds(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    assert!(held(&ctx, "h1").await.is_none());
    let mut first = inventory(
        Manager::Dpkg,
        &[("openssl", "3.0.11-1~deb12u1"), ("bash", "5.2.15-2+b2")],
        vec![update(
            "openssl",
            "3.0.11-1~deb12u1",
            "3.0.11-1~deb12u2",
            true,
        )],
    );
    first.insert_installed(Installed {
        held: true,
        ..installed("nginx", "1.22.1-9")
    });
    assert_eq!(
        put(
            &ctx,
            "h1",
            5,
            Change::Whole(first.clone()),
            report(T0, true)
        )
        .await,
        Applied::Stored
    );
    let stored = held(&ctx, "h1").await.unwrap();
    assert_eq!(stored.inventory, first);
    assert_eq!(stored.report, report(T0, true));
    assert_eq!((stored.seq, stored.needs_full), (5, false));
    assert_eq!(digest_held(&ctx, "h1").await, Some(first.digest().to_vec()));

    // The upgrade happened: openssl is new, its update gone, a kernel added.
    let second = inventory(
        Manager::Dpkg,
        &[
            ("openssl", "3.0.11-1~deb12u2"),
            ("bash", "5.2.15-2+b2"),
            ("linux-image-6.1.0-20-amd64", "6.1.85-1"),
        ],
        Vec::new(),
    );
    let mut second = second;
    second.insert_installed(Installed {
        held: true,
        ..installed("nginx", "1.22.1-9")
    });
    let delta = first.diff(&second);
    assert_eq!(
        put(
            &ctx,
            "h1",
            9,
            Change::Delta(delta.clone()),
            report(T0 + 1, false)
        )
        .await,
        Applied::Stored
    );
    let stored = held(&ctx, "h1").await.unwrap();
    assert_eq!(stored.inventory, second);
    assert!(!stored.report.reboot.required);
    assert_eq!(
        ctx.count("SELECT COUNT(*) FROM host_packages").await,
        4,
        "the old openssl row is gone"
    );
    assert_eq!(ctx.count("SELECT COUNT(*) FROM host_updates").await, 0);

    // An older record (a resend that lost a race) changes nothing.
    assert_eq!(
        put(
            &ctx,
            "h1",
            7,
            Change::Whole(first.clone()),
            report(T0, true)
        )
        .await,
        Applied::Older
    );
    assert_eq!(held(&ctx, "h1").await.unwrap().inventory, second);

    // Deleting the host deletes its inventory.
    ctx.db
        .write("t", |tx| palisade_backend::hosts::store::delete(tx, "h1"))
        .await
        .unwrap();
    for table in ["host_inventories", "host_packages", "host_updates"] {
        let sql: &'static str = match table {
            "host_inventories" => "SELECT COUNT(*) FROM host_inventories",
            "host_packages" => "SELECT COUNT(*) FROM host_packages",
            _ => "SELECT COUNT(*) FROM host_updates",
        };
        assert_eq!(ctx.count(sql).await, 0, "{table}");
    }
}

async fn a_change_against_another_inventory_is_refused_and_asks_for_the_whole(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    let a = inventory(Manager::Rpm, &[("openssl", "1:3.0.7-25.el9")], Vec::new());
    let b = inventory(Manager::Rpm, &[("openssl", "1:3.0.7-27.el9")], Vec::new());
    let c = inventory(Manager::Rpm, &[("openssl", "1:3.0.7-28.el9")], Vec::new());

    // A change before any whole inventory: refused, nothing stored.
    assert_eq!(
        put(&ctx, "h1", 1, Change::Delta(a.diff(&b)), report(T0, false)).await,
        Applied::NeedsWhole
    );
    assert!(held(&ctx, "h1").await.is_none());

    assert_eq!(
        put(&ctx, "h1", 2, Change::Whole(a.clone()), report(T0, false)).await,
        Applied::Stored
    );
    // A change made against b while the backend holds a (a lost change).
    assert_eq!(
        put(&ctx, "h1", 3, Change::Delta(b.diff(&c)), report(T0, false)).await,
        Applied::NeedsWhole
    );
    let stored = held(&ctx, "h1").await.unwrap();
    assert_eq!(stored.inventory, a, "nothing changed");
    assert!(stored.needs_full);
    assert_eq!(
        digest_held(&ctx, "h1").await,
        None,
        "the agent is asked for the whole"
    );

    // A change whose result is not what it announces.
    let mut forged = a.diff(&c);
    forged.result = b.digest();
    assert_eq!(
        put(&ctx, "h1", 4, Change::Delta(forged), report(T0, false)).await,
        Applied::NeedsWhole
    );
    assert_eq!(held(&ctx, "h1").await.unwrap().inventory, a);

    // The whole inventory clears it.
    assert_eq!(
        put(&ctx, "h1", 5, Change::Whole(c.clone()), report(T0, false)).await,
        Applied::Stored
    );
    let stored = held(&ctx, "h1").await.unwrap();
    assert_eq!((stored.inventory, stored.needs_full), (c.clone(), false));
    assert_eq!(digest_held(&ctx, "h1").await, Some(c.digest().to_vec()));

    // A change sent again after a reconnect, before the agent learned that
    // its first sending was stored: it makes what is held already, so it is
    // taken as done (its report still counts), not refused.
    assert_eq!(
        put(
            &ctx,
            "h1",
            6,
            Change::Delta(b.diff(&c)),
            report(T0 + 1, true)
        )
        .await,
        Applied::Stored
    );
    let stored = held(&ctx, "h1").await.unwrap();
    assert_eq!((stored.inventory, stored.needs_full), (c.clone(), false));
    assert!(stored.report.reboot.required);
    assert_eq!(stored.seq, 6);
}

async fn the_fleet_search_compares_versions_as_each_package_manager_does(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    ctx.add_host("h2").await;
    ctx.add_host("h3").await;
    // Debian: 1.1.1w-0+deb11u1 < 3.0.11-1~deb12u2 < 3.0.11-1 (the tilde
    // sorts before the end).
    let old = inventory(
        Manager::Dpkg,
        &[("openssl", "1.1.1w-0+deb11u1")],
        Vec::new(),
    );
    let tilde = inventory(
        Manager::Dpkg,
        &[("openssl", "3.0.11-1~deb12u2")],
        Vec::new(),
    );
    // RPM: the epoch wins over everything after it.
    let rpm = inventory(Manager::Rpm, &[("openssl", "1:3.0.7-27.el9")], Vec::new());
    put(&ctx, "h1", 1, Change::Whole(old), report(T0, false)).await;
    put(&ctx, "h2", 1, Change::Whole(tilde), report(T0, false)).await;
    put(&ctx, "h3", 1, Change::Whole(rpm), report(T0, false)).await;

    let find = |older: Option<&'static str>, limit: u32| {
        let db = ctx.db.clone();
        async move {
            db.read("t", move |tx| {
                store::find(tx, "openssl", older, None, limit)
            })
            .await
            .unwrap()
            .into_iter()
            .map(|f| (f.host_id, f.package.version))
            .collect::<Vec<_>>()
        }
    };
    let all = find(None, 100).await;
    assert_eq!(
        all.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        ["h1", "h2", "h3"],
        "hostname order"
    );
    let older = find(Some("3.0.11-1"), 100).await;
    assert_eq!(
        older.iter().map(|(h, _)| h.as_str()).collect::<Vec<_>>(),
        ["h1", "h2"],
        "1.1.1w and 3.0.11-1~deb12u2 are older than 3.0.11-1; the RPM one has epoch 1"
    );
    assert_eq!(find(Some("1.1.1w-0+deb11u1"), 100).await, []);
    assert_eq!(find(None, 1).await.len(), 1);
    let nothing = ctx
        .db
        .read("t", |tx| store::find(tx, "no-such-package", None, None, 10))
        .await
        .unwrap();
    assert!(nothing.is_empty());
}

fn report_body(change: pb::package_report::Change) -> RecordBody {
    RecordBody::Packages(pb::PackageReport {
        collected_at_unix_ms: T0,
        lists_updated_at_unix_ms: T0 - 1000,
        reboot_required: true,
        reboot_reasons: vec!["newer kernel 6.1.0-20-amd64 installed".into()],
        change: Some(change),
    })
}

fn whole_body(i: &Inventory) -> RecordBody {
    report_body(pb::package_report::Change::Whole(
        palisade_proto::packages::inventory_to_wire(i),
    ))
}

fn delta_body(from: &Inventory, to: &Inventory) -> RecordBody {
    report_body(pb::package_report::Change::Delta(
        palisade_proto::packages::delta_to_wire(&from.diff(to)),
    ))
}

async fn package_records_from_the_uplink_are_applied_once_in_order(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    let a = inventory(
        Manager::Dpkg,
        &[("openssl", "3.0.11-1~deb12u1")],
        vec![update(
            "openssl",
            "3.0.11-1~deb12u1",
            "3.0.11-1~deb12u2",
            true,
        )],
    );
    let b = inventory(
        Manager::Dpkg,
        &[("openssl", "3.0.11-1~deb12u2")],
        Vec::new(),
    );
    let c = inventory(
        Manager::Dpkg,
        &[
            ("openssl", "3.0.11-1~deb12u2"),
            ("curl", "7.88.1-10+deb12u5"),
        ],
        Vec::new(),
    );
    // Whole, then two changes in one batch, the first of them resent.
    ctx.store("h1", T0, vec![rec(1, whole_body(&a))])
        .await
        .unwrap();
    ctx.store(
        "h1",
        T0,
        vec![
            rec(2, delta_body(&a, &b)),
            rec(3, delta_body(&b, &c)),
            rec(2, delta_body(&a, &b)),
        ],
    )
    .await
    .unwrap();
    let stored = held(&ctx, "h1").await.unwrap();
    assert_eq!(stored.inventory, c);
    assert_eq!(stored.seq, 3);
    assert_eq!(stored.report.lists_updated_at, Some(T0 - 1000));
    assert!(stored.report.reboot.required);
    // A resent change after that is a no-op, not a refusal.
    ctx.store("h1", T0, vec![rec(2, delta_body(&a, &b))])
        .await
        .unwrap();
    let stored = held(&ctx, "h1").await.unwrap();
    assert_eq!((stored.inventory, stored.needs_full), (c.clone(), false));
    // A lost change: the next one does not fit and the host is asked for
    // the whole inventory; the record is still acknowledged (stored).
    let d = inventory(
        Manager::Dpkg,
        &[("openssl", "3.0.11-1~deb12u3")],
        Vec::new(),
    );
    let e = inventory(
        Manager::Dpkg,
        &[("openssl", "3.0.11-1~deb12u4")],
        Vec::new(),
    );
    let up_to = ctx
        .store("h1", T0, vec![rec(5, delta_body(&d, &e))])
        .await
        .unwrap();
    assert_eq!(up_to, 5);
    assert_eq!(held(&ctx, "h1").await.unwrap().inventory, c);
    assert_eq!(digest_held(&ctx, "h1").await, None);
}

const DB_GROUP: &str = "000000000000000000000000000000db";

async fn fleet(ctx: &Ctx, groups: Option<Vec<String>>) -> Vec<FleetHost> {
    ctx.db
        .read("t", move |tx| store::fleet(tx, groups.as_deref()))
        .await
        .unwrap()
}

async fn the_fleet_counts_updates_per_host_and_per_group_within_the_groups_asked_for(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    for host in ["h2", "h3", "h4", "h5"] {
        ctx.add_host(host).await;
    }
    ctx.raw(&format!(
        "INSERT INTO host_groups (id, name, description, created_at) VALUES ('{DB_GROUP}', 'db', '', {T0});
         UPDATE hosts SET host_group_id = '{DB_GROUP}' WHERE id = 'h3';
         UPDATE hosts SET host_group_id = NULL WHERE id = 'h4';"
    ));
    let with_status = |name: &str, security: bool, status: Status| Update {
        status,
        ..update(name, "1", "2", security)
    };
    // h1 (web): two pending security updates, one other pending, and a
    // security update in each state that the next upgrade does not install.
    let h1 = inventory(
        Manager::Dpkg,
        &[("openssl", "1")],
        vec![
            update("openssl", "1", "2", true),
            update("libssl3", "1", "2", true),
            update("bash", "1", "2", false),
            with_status("nginx", true, Status::Held),
            with_status("linux-image-amd64", true, Status::KeptBack),
            with_status("systemd", false, Status::Deferred),
            with_status("curl", true, Status::Excluded),
        ],
    );
    put(&ctx, "h1", 1, Change::Whole(h1), report(T0, true)).await;
    // h2 (web) never reported. h3 (db): one security update read from
    // indexes refreshed eight days ago.
    let h3 = inventory(
        Manager::Rpm,
        &[("openssl", "1:3.0.7-25.el9")],
        vec![update("openssl", "1", "2", true)],
    );
    let mut stale = report(T0, false);
    stale.lists_updated_at = Some(T0 - STALE_INDEXES_AFTER - 1);
    put(&ctx, "h3", 1, Change::Whole(h3), stale).await;
    // h4 (no group): nothing to update, index age unknown.
    let mut unknown_age = report(T0, false);
    unknown_age.lists_updated_at = None;
    put(
        &ctx,
        "h4",
        1,
        Change::Whole(inventory(Manager::Dpkg, &[("bash", "5")], Vec::new())),
        unknown_age,
    )
    .await;
    // h5 (web) is revoked: no longer part of the fleet.
    let h5 = inventory(
        Manager::Dpkg,
        &[("openssl", "1")],
        vec![update("openssl", "1", "2", true)],
    );
    put(&ctx, "h5", 1, Change::Whole(h5), report(T0, false)).await;
    ctx.db
        .write("t", |tx| {
            palisade_backend::hosts::store::revoke(tx, "h5", T0)
        })
        .await
        .unwrap();

    let mut hosts = fleet(&ctx, None).await;
    assert_eq!(
        hosts.iter().map(|h| h.host_id.as_str()).collect::<Vec<_>>(),
        ["h1", "h2", "h3", "h4"],
        "hostname order, the revoked host left out"
    );
    assert_eq!(
        hosts[0].counts,
        Some(UpdateCounts {
            manager: Manager::Dpkg,
            collected_at: T0,
            lists_updated_at: Some(T0 - 60_000),
            reboot_required: true,
            pending: 3,
            pending_security: 2,
            held: 1,
            kept_back: 1,
            deferred: 1,
        })
    );
    assert_eq!(
        (
            hosts[0].host_group_id.as_deref(),
            hosts[0].host_group.as_deref()
        ),
        (Some(WEB_GROUP), Some("web"))
    );
    assert_eq!(hosts[1].counts, None, "no inventory is not zero updates");
    let h3 = hosts[2].counts.clone().unwrap();
    assert_eq!(
        (h3.manager, h3.pending, h3.pending_security),
        (Manager::Rpm, 1, 1)
    );
    assert!(h3.stale_indexes(T0));
    assert!(!hosts[0].counts.as_ref().unwrap().stale_indexes(T0));
    let h4 = hosts[3].counts.clone().unwrap();
    assert_eq!((h4.pending, h4.pending_security, h4.held), (0, 0, 0));
    assert!(!h4.stale_indexes(T0), "an unknown age is not flagged");
    assert_eq!(hosts[3].host_group_id, None);

    sort_security_first(&mut hosts);
    assert_eq!(
        hosts.iter().map(|h| h.host_id.as_str()).collect::<Vec<_>>(),
        ["h1", "h3", "h4", "h2"],
        "most pending security updates first, no inventory last"
    );

    let groups = group_summaries(&hosts, T0);
    assert_eq!(
        groups,
        [
            GroupSummary {
                host_group_id: Some(DB_GROUP.into()),
                host_group: Some("db".into()),
                hosts: 1,
                hosts_without_inventory: 0,
                hosts_needing_security_updates: 1,
                pending_security_updates: 1,
                hosts_needing_reboot: 0,
                hosts_with_stale_indexes: 1,
            },
            GroupSummary {
                host_group_id: Some(WEB_GROUP.into()),
                host_group: Some("web".into()),
                hosts: 2,
                hosts_without_inventory: 1,
                hosts_needing_security_updates: 1,
                pending_security_updates: 2,
                hosts_needing_reboot: 1,
                hosts_with_stale_indexes: 0,
            },
            GroupSummary {
                host_group_id: None,
                host_group: None,
                hosts: 1,
                ..GroupSummary::default()
            },
        ]
    );

    // Scoped to groups: only their hosts; no group at all: nothing.
    let web = fleet(&ctx, Some(vec![WEB_GROUP.into()])).await;
    assert_eq!(
        web.iter().map(|h| h.host_id.as_str()).collect::<Vec<_>>(),
        ["h1", "h2"]
    );
    let both = fleet(&ctx, Some(vec![WEB_GROUP.into(), DB_GROUP.into()])).await;
    assert_eq!(both.len(), 3);
    assert!(fleet(&ctx, Some(Vec::new())).await.is_empty());
}
