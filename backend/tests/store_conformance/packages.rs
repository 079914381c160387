//! Package inventories: whole inventories, changes against a digest, the
//! fleet search.

use palisade_backend::packages::{Applied, Change, Reboot, Report, store};
use palisade_packages::inventory::{Installed, Inventory, Manager, Status, Update};

use palisade_proto::msg::RecordBody;
use palisade_proto::pb;

use crate::{Ctx, T0, conformance, rec};

conformance!(
    a_whole_inventory_then_changes_make_what_the_agent_holds,
    a_change_against_another_inventory_is_refused_and_asks_for_the_whole,
    the_fleet_search_compares_versions_as_each_package_manager_does,
    package_records_from_the_uplink_are_applied_once_in_order,
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
