//! Roles, assignments, grants, host groups, and searching the audit trail.

use std::collections::BTreeSet;

use palisade_backend::access::roles::{self, BuiltinRole, Role};
use palisade_backend::access::{HostScope, Permission};
use palisade_backend::audit::store::{self as audit, AuditQuery};
use palisade_backend::audit::{Action, Actor, NewAuditEvent, Outcome};
use palisade_backend::db::DbError;
use palisade_backend::hosts::groups;
use palisade_backend::identity::{NewUser, store as users};

use crate::{Ctx, T0, WEB_GROUP, conformance};

conformance!(
    builtin_roles_are_there_and_custom_roles_round_trip,
    assignments_make_grants_global_or_per_group,
    host_groups_are_created_renamed_and_deleted,
    host_lists_follow_the_callers_groups,
    the_audit_trail_is_searched_by_every_filter,
);

async fn user(ctx: &Ctx, name: &str) -> i64 {
    let user = NewUser {
        username: name.into(),
        password_hash: "x".into(),
        created_at: T0,
    };
    ctx.db
        .write("t", move |tx| users::create_user(tx, &user))
        .await
        .unwrap()
        .id
}

async fn builtin_roles_are_there_and_custom_roles_round_trip(ctx: Ctx) {
    let all = ctx.db.read("t", roles::list).await.unwrap();
    let builtin: Vec<&str> = all
        .iter()
        .filter(|r| r.builtin)
        .map(|r| r.name.as_str())
        .collect();
    assert_eq!(builtin, ["admin", "auditor", "operator", "viewer"]);
    let admin = all.iter().find(|r| r.id == "admin").unwrap();
    assert_eq!(
        admin.permissions,
        BuiltinRole::Admin.permissions(),
        "defined by the code"
    );

    let custom = Role {
        id: "c1".into(),
        name: "patchers".into(),
        description: "patch without managing hosts".into(),
        builtin: false,
        permissions: [Permission::HostsRead, Permission::PatchRunsExecute]
            .into_iter()
            .collect(),
        created_at: T0,
    };
    let c = custom.clone();
    ctx.db
        .write("t", move |tx| roles::create(tx, &c))
        .await
        .unwrap();
    let c = custom.clone();
    let again = ctx
        .db
        .write("t", move |tx| {
            roles::create(
                tx,
                &Role {
                    id: "c2".into(),
                    ..c
                },
            )
        })
        .await;
    assert!(
        matches!(again, Err(DbError::Conflict { .. })),
        "the name is unique: {again:?}"
    );
    assert_eq!(
        ctx.db
            .read("t", |tx| roles::get(tx, "c1"))
            .await
            .unwrap()
            .as_ref(),
        Some(&custom)
    );
    assert_eq!(
        ctx.db
            .read("t", |tx| roles::by_name(tx, "patchers"))
            .await
            .unwrap()
            .as_ref(),
        Some(&custom)
    );

    let fewer: BTreeSet<Permission> = [Permission::HostsRead].into_iter().collect();
    let f = fewer.clone();
    assert!(
        ctx.db
            .write("t", move |tx| roles::update(tx, "c1", "readers", "", &f))
            .await
            .unwrap()
    );
    let updated = ctx
        .db
        .read("t", |tx| roles::get(tx, "c1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (updated.name.as_str(), &updated.permissions),
        ("readers", &fewer)
    );
    // A built-in role neither changes nor goes away.
    let f = fewer.clone();
    assert!(
        !ctx.db
            .write("t", move |tx| roles::update(tx, "admin", "admin", "", &f))
            .await
            .unwrap()
    );
    assert!(
        !ctx.db
            .write("t", |tx| roles::delete(tx, "admin"))
            .await
            .unwrap()
    );
    assert!(
        ctx.db
            .write("t", |tx| roles::delete(tx, "c1"))
            .await
            .unwrap()
    );
    assert!(
        ctx.db
            .read("t", |tx| roles::get(tx, "c1"))
            .await
            .unwrap()
            .is_none()
    );

    // A stored permission this build does not know is skipped, never granted.
    ctx.raw("INSERT INTO roles (id, name, description, builtin, permissions, created_at) VALUES ('c3', 'odd', '', FALSE, '[\"hosts:read\",\"hosts:fly\"]', 0)");
    let odd = ctx
        .db
        .read("t", |tx| roles::get(tx, "c3"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        odd.permissions,
        [Permission::HostsRead].into_iter().collect()
    );
}

async fn assignments_make_grants_global_or_per_group(ctx: Ctx) {
    let alice = user(&ctx, "alice").await;
    let other = ctx
        .db
        .write("t", |tx| groups::create(tx, "db", "", T0))
        .await
        .unwrap();
    let o = other.clone();
    ctx.db
        .write("t", move |tx| {
            roles::assign(tx, alice, "viewer", None, T0)?;
            roles::assign(tx, alice, "operator", Some(WEB_GROUP), T0)?;
            roles::assign(tx, alice, "admin", Some(&o), T0)
        })
        .await
        .unwrap();
    let again = ctx
        .db
        .write("t", move |tx| roles::assign(tx, alice, "viewer", None, T0))
        .await;
    assert!(matches!(again, Err(DbError::Conflict { .. })), "{again:?}");
    let held = ctx
        .db
        .read("t", move |tx| roles::assignments(tx, Some(alice)))
        .await
        .unwrap();
    assert_eq!(held.len(), 3);

    let grants = ctx
        .db
        .read("t", move |tx| roles::grants_of_user(tx, alice))
        .await
        .unwrap();
    assert!(
        grants.allows(Permission::HostsRead, None),
        "viewer everywhere"
    );
    assert!(grants.allows(Permission::ServicesRestart, Some(WEB_GROUP)));
    assert!(!grants.allows(Permission::ServicesRestart, None));
    assert!(grants.allows(Permission::HostsDelete, Some(&other)));
    assert!(!grants.allows(Permission::HostsDelete, Some(WEB_GROUP)));
    assert!(
        !grants.allows_somewhere(Permission::UsersCreate),
        "a scoped admin manages no accounts"
    );
    let mut groups_with_restart = match grants.host_scope(Permission::ServicesRestart) {
        Some(HostScope::Groups(g)) => g,
        other => panic!("{other:?}"),
    };
    groups_with_restart.sort();
    let mut expected = vec![WEB_GROUP.to_owned(), other.clone()];
    expected.sort();
    assert_eq!(
        groups_with_restart, expected,
        "operator on web, admin on db"
    );

    let first = held
        .iter()
        .find(|a| a.role.id == "admin")
        .unwrap()
        .id
        .clone();
    assert!(
        ctx.db
            .write("t", move |tx| roles::unassign(tx, &first))
            .await
            .unwrap()
    );
    let grants = ctx
        .db
        .read("t", move |tx| roles::grants_of_user(tx, alice))
        .await
        .unwrap();
    assert!(!grants.allows_somewhere(Permission::HostsDelete));

    // A token: its role and permissions, for one group.
    let token = ctx
        .db
        .read("t", |tx| {
            roles::token_grants(
                tx,
                Some("viewer"),
                &["services:restart".into()],
                Some(WEB_GROUP),
            )
        })
        .await
        .unwrap();
    assert!(token.allows(Permission::ServicesRestart, Some(WEB_GROUP)));
    assert!(token.allows(Permission::HostsRead, Some(WEB_GROUP)));
    assert!(!token.allows(Permission::HostsRead, None));
}

async fn host_groups_are_created_renamed_and_deleted(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    let id = ctx
        .db
        .write("t", |tx| groups::create(tx, "db", "databases", T0))
        .await
        .unwrap();
    let dup = ctx
        .db
        .write("t", |tx| groups::create(tx, "db", "", T0))
        .await;
    assert!(matches!(dup, Err(DbError::Conflict { .. })), "{dup:?}");
    let listed = ctx.db.read("t", groups::list).await.unwrap();
    let summary: Vec<(&str, u64)> = listed.iter().map(|g| (g.name.as_str(), g.hosts)).collect();
    assert_eq!(summary, [("db", 0), ("web", 1)]);
    let i = id.clone();
    assert!(
        ctx.db
            .write("t", move |tx| groups::update(tx, &i, "databases", ""))
            .await
            .unwrap()
    );
    assert_eq!(
        ctx.db
            .read("t", |tx| groups::by_name(tx, "databases"))
            .await
            .unwrap()
            .map(|g| g.id),
        Some(id.clone())
    );
    let i = id.clone();
    assert!(
        ctx.db
            .write("t", move |tx| groups::set_host_group(tx, "h1", Some(&i)))
            .await
            .unwrap()
    );
    let host = ctx
        .db
        .read("t", |tx| palisade_backend::hosts::store::get(tx, "h1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(host.host_group, Some((id.clone(), "databases".to_owned())));
    // Deleting the group leaves the host ungrouped.
    let i = id.clone();
    assert!(
        ctx.db
            .write("t", move |tx| groups::delete(tx, &i))
            .await
            .unwrap()
    );
    let host = ctx
        .db
        .read("t", |tx| palisade_backend::hosts::store::get(tx, "h1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(host.host_group, None);
    assert!(
        !ctx.db
            .write("t", move |tx| groups::delete(tx, &id))
            .await
            .unwrap()
    );
}

async fn host_lists_follow_the_callers_groups(ctx: Ctx) {
    let ctx = ctx.with_host("h1").await;
    ctx.add_host("h2").await;
    ctx.add_host("h3").await;
    let db_group = ctx
        .db
        .write("t", |tx| groups::create(tx, "db", "", T0))
        .await
        .unwrap();
    let g = db_group.clone();
    ctx.db
        .write("t", move |tx| {
            groups::set_host_group(tx, "h2", Some(&g))?;
            groups::set_host_group(tx, "h3", None)
        })
        .await
        .unwrap();
    let list = |groups: Option<Vec<String>>| {
        let db = ctx.db.clone();
        async move {
            let q = palisade_backend::hosts::store::HostQuery {
                groups: groups.clone(),
                limit: 100,
                ..Default::default()
            };
            db.read("t", move |tx| {
                let ids: Vec<String> = palisade_backend::hosts::store::list_page(tx, &q)?
                    .into_iter()
                    .map(|(h, _)| h.id)
                    .collect();
                let n = palisade_backend::hosts::store::count(tx, None, groups.as_deref())?;
                Ok((ids, n))
            })
            .await
            .unwrap()
        }
    };
    assert_eq!(
        list(None).await,
        (vec!["h1".into(), "h2".into(), "h3".into()], 3)
    );
    assert_eq!(
        list(Some(vec![WEB_GROUP.into()])).await,
        (vec!["h1".into()], 1)
    );
    assert_eq!(
        list(Some(vec![WEB_GROUP.into(), db_group])).await,
        (vec!["h1".into(), "h2".into()], 2)
    );
    assert_eq!(
        list(Some(Vec::new())).await,
        (Vec::new(), 0),
        "no group, no host, never an ungrouped one"
    );
}

async fn the_audit_trail_is_searched_by_every_filter(ctx: Ctx) {
    let events = [
        NewAuditEvent::new(
            T0,
            Actor::User("alice".into()),
            Action::AuthLogin,
            Outcome::Success,
        ),
        NewAuditEvent::new(
            T0 + 1_000,
            Actor::User("bob".into()),
            Action::AuthLogin,
            Outcome::Failure,
        ),
        NewAuditEvent::new(
            T0 + 2_000,
            Actor::User("alice".into()),
            Action::CommandCreate,
            Outcome::Success,
        )
        .target("h1"),
        NewAuditEvent::new(
            T0 + 3_000,
            Actor::Agent("h1".into()),
            Action::AgentConnect,
            Outcome::Success,
        )
        .target("h1"),
        NewAuditEvent::new(
            T0 + 4_000,
            Actor::User("alice".into()),
            Action::AccessDenied,
            Outcome::Denied,
        ),
    ];
    ctx.db
        .write("t", move |tx| {
            for e in &events {
                audit::append(tx, e)?;
            }
            Ok(())
        })
        .await
        .unwrap();
    let search = |q: AuditQuery| {
        let db = ctx.db.clone();
        async move {
            db.read("t", move |tx| audit::search(tx, &q))
                .await
                .unwrap()
                .into_iter()
                .map(|e| e.id)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        search(AuditQuery::default()).await,
        [5, 4, 3, 2, 1],
        "newest first"
    );
    let q = |f: &dyn Fn(&mut AuditQuery)| {
        let mut q = AuditQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        search(q(&|q| q.actions = Some(vec![Action::AuthLogin]))).await,
        [2, 1]
    );
    let auth: Vec<Action> = Action::ALL
        .iter()
        .copied()
        .filter(|a| a.category() == palisade_backend::audit::Category::Authentication)
        .collect();
    assert_eq!(search(q(&|q| q.actions = Some(auth.clone()))).await, [2, 1]);
    assert_eq!(
        search(q(&|q| q.actor = Some("user:alice".into()))).await,
        [5, 3, 1]
    );
    assert_eq!(search(q(&|q| q.outcome = Some(Outcome::Denied))).await, [5]);
    assert_eq!(search(q(&|q| q.target = Some("h1".into()))).await, [4, 3]);
    assert_eq!(
        search(q(&|q| {
            q.from = Some(T0 + 1_000);
            q.to = Some(T0 + 3_000);
        }))
        .await,
        [3, 2]
    );
    assert_eq!(
        search(q(&|q| {
            q.before_id = Some(4);
            q.limit = Some(2);
        }))
        .await,
        [3, 2]
    );
    assert_eq!(
        search(q(&|q| q.actions = Some(Vec::new()))).await,
        Vec::<i64>::new()
    );
    let mut streamed = Vec::new();
    let all = AuditQuery::default();
    let ids = ctx
        .db
        .read("t", move |tx| {
            audit::each_matching(tx, &all, |e| {
                streamed.push(e.id);
                Ok(())
            })?;
            Ok(streamed)
        })
        .await
        .unwrap();
    assert_eq!(ids, [5, 4, 3, 2, 1]);
}
