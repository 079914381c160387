//! `upgrade_packages` through the real control binary, running the real
//! apt-get and dpkg on a private root the test made: a local repository
//! with a normal and a security suite, two packages installed at 1.0.
//!
//! - a dry run reports what apt would change and changes nothing;
//! - a named upgrade changes exactly that package, the changes come from
//!   the dpkg database before and after, and the output arrives as
//!   `CommandOutput` pieces with contiguous offsets before the result;
//! - a `cancel` stops a run whose maintainer script hangs, and a run past
//!   its timeout is stopped and reported as such.
//!
//! Needs root (dpkg chroots into the root to run maintainer scripts), apt,
//! dpkg-deb and apt-ftparchive; without them it says so and passes, except
//! under `CI=true`, where it fails.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{AGENT, Control, MINUTE, Signer, enrolled, now_ms};
use palisade_packages::inventory::Manager;
use palisade_proto::msg::{CommandAction, FromChild, ToChild, TypedCommand};
use palisade_proto::pb::{self, CommandStatus};
use palisade_proto::upgrade::{Target, Upgrade};
use palisade_testkit::apt::{
    Deb, RepoEntry, add_shell, add_to_suite, build_deb, build_repository, install_plain,
    make_apt_root, make_dpkg_root, suite_fields,
};

const REPOSITORY: &[RepoEntry<'_>] = &[
    ("stable", "pal-plain", "1.1", ""),
    ("stable", "pal-sec", "1.0", ""),
    ("stable-security", "pal-sec", "1.1", ""),
];

/// A repository and a root with pal-plain and pal-sec 1.0 installed, plus
/// pal-slow 1.0 whose 1.1 hangs in its preinst.
struct System {
    dir: tempfile::TempDir,
}

impl System {
    fn new() -> System {
        let dir = tempfile::tempdir().expect("tempdir");
        let (build, repo, root) = (
            dir.path().join("build"),
            dir.path().join("repo"),
            dir.path().join("root"),
        );
        std::fs::create_dir_all(&build).expect("mkdir");
        build_repository(&build, &repo, REPOSITORY, suite_fields);
        let slow = build_deb(
            &build,
            &Deb {
                name: "pal-slow",
                version: "1.1",
                extra: "",
                preinst: Some("echo slow-start; sleep 300"),
            },
        );
        add_to_suite(&repo, "stable", &slow, &suite_fields("stable"));
        make_dpkg_root(&root);
        make_apt_root(&root, &repo, &["stable", "stable-security"]);
        add_shell(&root);
        install_plain(&build, &root, &["pal-plain", "pal-sec", "pal-slow"], "1.0");
        System { dir }
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("root")
    }

    fn installed(&self, name: &str) -> Option<String> {
        let status = std::fs::read(self.root().join("var/lib/dpkg/status")).expect("status");
        let status = palisade_packages::deb::StatusFile::parse(&status).expect("parses");
        status
            .installed()
            .find(|p| p.name == name)
            .and_then(|p| p.version.as_ref().map(ToString::to_string))
    }
}

fn command(id: &str, action: CommandAction) -> TypedCommand {
    let now = now_ms();
    TypedCommand {
        agent_id: AGENT.into(),
        command_id: id.into(),
        issued_at_unix_ms: now,
        expires_at_unix_ms: now + 5 * MINUTE,
        action,
    }
}

fn upgrade(packages: &[(&str, &str)], dry_run: bool, timeout: Duration) -> CommandAction {
    CommandAction::UpgradePackages(Upgrade {
        manager: Manager::Dpkg,
        all: packages.is_empty(),
        packages: packages
            .iter()
            .map(|(name, version)| Target {
                name: (*name).into(),
                arch: String::new(),
                version: (*version).into(),
            })
            .collect(),
        dry_run,
        refresh_index: true,
        timeout,
    })
}

fn changes(result: &pb::CommandResult) -> Vec<(String, String, String)> {
    result
        .changes
        .iter()
        .map(|c| (c.name.clone(), c.before.clone(), c.after.clone()))
        .collect()
}

fn change(name: &str, before: &str, after: &str) -> (String, String, String) {
    (name.into(), before.into(), after.into())
}

#[tokio::test]
async fn a_dry_run_then_a_named_upgrade_change_exactly_what_they_say() {
    if !palisade_testkit::apt::can_manage_roots() {
        return;
    }
    let system = System::new();
    let signer = Signer::new();
    let state = enrolled(&signer);
    let mut control = Control::start_with_root(Some(state.path()), &system.root()).await;

    let all = upgrade(&[], true, Duration::from_secs(120));
    let (pieces, result) = control
        .run_streamed(signer.sign(command("dry-1", all)))
        .await;
    assert_eq!(result.status, CommandStatus::Succeeded as i32, "{result:?}");
    let mut planned = changes(&result);
    planned.sort();
    assert_eq!(
        planned,
        [
            change("pal-plain", "1.0", "1.1"),
            change("pal-sec", "1.0", "1.1"),
            change("pal-slow", "1.0", "1.1"),
        ]
    );
    let output = common::whole(&pieces, "dry-1");
    assert!(output.contains("apt-get"), "{output}");
    assert!(output.contains("Inst pal-sec [1.0] (1.1"), "{output}");
    assert_eq!(result.streamed_bytes, output.len() as u64);
    assert_eq!(
        system.installed("pal-sec").as_deref(),
        Some("1.0"),
        "a dry run changes nothing"
    );

    let named = upgrade(&[("pal-sec", "1.1")], false, Duration::from_secs(120));
    let (pieces, result) = control
        .run_streamed(signer.sign(command("run-1", named)))
        .await;
    assert_eq!(result.status, CommandStatus::Succeeded as i32, "{result:?}");
    assert_eq!(changes(&result), [change("pal-sec", "1.0", "1.1")]);
    assert_eq!(result.changes[0].arch, "all");
    let output = common::whole(&pieces, "run-1");
    assert!(output.contains("Unpacking pal-sec (1.1)"), "{output}");
    assert!(
        output.ends_with(&result.output),
        "the result keeps the end of the output:\n{output:?}\n---\n{:?}",
        result.output
    );
    assert_eq!(system.installed("pal-sec").as_deref(), Some("1.1"));
    assert_eq!(
        system.installed("pal-plain").as_deref(),
        Some("1.0"),
        "only what was named"
    );
    control.stop().await;
}

#[tokio::test]
async fn a_cancel_stops_a_hanging_run_and_a_timeout_stops_another() {
    if !palisade_testkit::apt::can_manage_roots() {
        return;
    }
    let system = System::new();
    let signer = Signer::new();
    let state = enrolled(&signer);
    let mut control = Control::start_with_root(Some(state.path()), &system.root()).await;

    let slow = upgrade(&[("pal-slow", "1.1")], false, Duration::from_secs(600));
    control
        .send(ToChild::Execute(signer.sign(command("slow-1", slow))))
        .await;
    // Wait until the maintainer script runs, then cancel.
    let mut output = String::new();
    while !output.contains("slow-start") {
        if let FromChild::CommandOutput(piece) = control.recv().await {
            output.push_str(&piece.text);
        }
    }
    let cancel = CommandAction::Cancel {
        command_id: "slow-1".into(),
    };
    control
        .send(ToChild::Execute(signer.sign(command("cancel-1", cancel))))
        .await;
    let mut results = Vec::new();
    while results.len() < 2 {
        if let FromChild::CommandResult(result) = control.recv().await {
            results.push(result);
        }
    }
    let slow = results
        .iter()
        .find(|r| r.command_id == "slow-1")
        .expect("slow result");
    assert_eq!(slow.status, CommandStatus::Cancelled as i32, "{slow:?}");
    assert!(slow.error.contains("stopped on request"), "{slow:?}");
    let cancel = results
        .iter()
        .find(|r| r.command_id == "cancel-1")
        .expect("cancel result");
    assert_eq!(cancel.status, CommandStatus::Succeeded as i32, "{cancel:?}");
    assert_ne!(system.installed("pal-slow").as_deref(), Some("1.1"));
    control.stop().await;

    // dpkg was interrupted in that root; time out on a fresh one.
    let system = System::new();
    let mut control = Control::start_with_root(Some(state.path()), &system.root()).await;
    let late = upgrade(&[("pal-slow", "1.1")], false, Duration::from_secs(3));
    let (_, result) = control
        .run_streamed(signer.sign(command("slow-2", late)))
        .await;
    assert_eq!(result.status, CommandStatus::TimedOut as i32, "{result:?}");
    assert!(result.error.contains("timeout"), "{result:?}");

    // A cancel naming nothing running says so.
    let nothing = CommandAction::Cancel {
        command_id: "slow-1".into(),
    };
    let (_, result) = control
        .run_streamed(signer.sign(command("cancel-2", nothing)))
        .await;
    assert_eq!(result.status, CommandStatus::Failed as i32, "{result:?}");
    assert!(Path::new(&system.root()).is_dir());
    control.stop().await;
}
