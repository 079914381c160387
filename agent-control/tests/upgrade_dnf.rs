//! `upgrade_packages` on an rpm host through the real control binary,
//! running the real rpm and dnf on a private installroot the test made: a
//! local repository with pal-a and pal-b 1.1, both installed at 1.0.
//!
//! - a dry run of everything reports both upgrades dnf offers and changes
//!   nothing;
//! - a named upgrade changes exactly that package, the change is read from
//!   the rpm database before and after, and the output arrives as
//!   `CommandOutput` pieces with contiguous offsets before the result.
//!
//! Control runs rpm and dnf with a cleared environment, so they look for
//! the database where the host's rpm configuration puts it (`%_dbpath`)
//! inside the root; on an rpm distribution that is `/var/lib/rpm`, but
//! Debian's rpm says `~/.rpmdb`. The root links that place to its
//! `/var/lib/rpm`, where the test installed the packages, so both agree.
//!
//! Needs root, rpm, rpmbuild, createrepo_c and dnf; without them it says so
//! and passes, except under `CI=true`, where it fails.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{AGENT, Control, MINUTE, Signer, enrolled, now_ms};
use palisade_packages::inventory::Manager;
use palisade_proto::msg::{CommandAction, TypedCommand};
use palisade_proto::pb::{self, CommandStatus};
use palisade_proto::upgrade::{Target, Upgrade};
use palisade_testkit::rpm::{Sandbox, can_manage_roots, createrepo, link_control_dbpath, spec};

/// A repository with pal-a and pal-b 1.1, and a root with both at 1.0.
struct System {
    sandbox: Sandbox,
}

impl System {
    fn new() -> System {
        let sandbox = Sandbox::new();
        let (repo, root) = (sandbox.path().join("repo"), sandbox.path().join("root"));
        std::fs::create_dir_all(&repo).expect("mkdir repo");
        let mut old = Vec::new();
        for name in ["pal-a", "pal-b"] {
            for (version, new) in [("1.0", false), ("1.1", true)] {
                let built =
                    sandbox.build(&format!("{name}-{version}"), &spec(name, version, "1", ""));
                for file in built {
                    if new {
                        let to = repo.join(file.file_name().expect("file name"));
                        std::fs::copy(&file, to).expect("copy into the repository");
                    } else {
                        old.push(file);
                    }
                }
            }
        }
        createrepo(&sandbox, &repo);

        for dir in ["var/lib/rpm", "etc/dnf", "etc/yum.repos.d"] {
            std::fs::create_dir_all(root.join(dir)).expect("mkdir in root");
        }
        std::fs::write(root.join("etc/dnf/dnf.conf"), "[main]\ngpgcheck=0\n").expect("dnf.conf");
        std::fs::write(
            root.join("etc/yum.repos.d/pal.repo"),
            format!(
                "[pal]\nname=pal\nbaseurl=file://{}\ngpgcheck=0\n",
                repo.display()
            ),
        )
        .expect("pal.repo");
        link_control_dbpath(&root);

        let mut args = vec!["-i".to_owned()];
        args.extend(old.iter().map(|f| f.display().to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sandbox.rpm(&root, &args);
        System { sandbox }
    }

    fn root(&self) -> PathBuf {
        self.sandbox.path().join("root")
    }

    /// `name-version-release.arch` as the root's database has it.
    fn installed(&self, name: &str) -> String {
        self.sandbox
            .rpm(&self.root(), &["-q", name])
            .trim()
            .to_owned()
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

fn upgrade(packages: &[(&str, &str, &str)], dry_run: bool) -> CommandAction {
    CommandAction::UpgradePackages(Upgrade {
        manager: Manager::Rpm,
        all: packages.is_empty(),
        packages: packages
            .iter()
            .map(|(name, arch, version)| Target {
                name: (*name).into(),
                arch: (*arch).into(),
                version: (*version).into(),
            })
            .collect(),
        dry_run,
        refresh_index: true,
        timeout: Duration::from_secs(300),
    })
}

fn changes(result: &pb::CommandResult) -> Vec<(String, String, String, String)> {
    let mut changes: Vec<_> = result
        .changes
        .iter()
        .map(|c| {
            (
                c.name.clone(),
                c.arch.clone(),
                c.before.clone(),
                c.after.clone(),
            )
        })
        .collect();
    changes.sort();
    changes
}

fn change(name: &str, before: &str, after: &str) -> (String, String, String, String) {
    (name.into(), "noarch".into(), before.into(), after.into())
}

#[tokio::test]
async fn a_dry_run_then_a_named_dnf_upgrade_change_exactly_what_they_say() {
    if !can_manage_roots() {
        return;
    }
    let system = System::new();
    assert_eq!(system.installed("pal-a"), "pal-a-1.0-1.noarch");
    let signer = Signer::new();
    let state = enrolled(&signer);
    let mut control = Control::start_with_root(Some(state.path()), &system.root()).await;

    let (pieces, result) = control
        .run_streamed(signer.sign(command("dry-1", upgrade(&[], true))))
        .await;
    assert_eq!(result.status, CommandStatus::Succeeded as i32, "{result:?}");
    assert_eq!(
        changes(&result),
        [
            change("pal-a", "1.0-1", "1.1-1"),
            change("pal-b", "1.0-1", "1.1-1"),
        ]
    );
    let output = common::whole(&pieces, "dry-1");
    assert!(output.contains("/usr/bin/dnf"), "{output}");
    assert!(output.contains("# 2 packages installed"), "{output}");
    assert_eq!(result.streamed_bytes, output.len() as u64);
    assert_eq!(
        system.installed("pal-a"),
        "pal-a-1.0-1.noarch",
        "a dry run changes nothing"
    );

    let named = upgrade(&[("pal-a", "noarch", "1.1-1")], false);
    let (pieces, result) = control
        .run_streamed(signer.sign(command("run-1", named)))
        .await;
    assert_eq!(result.status, CommandStatus::Succeeded as i32, "{result:?}");
    assert_eq!(changes(&result), [change("pal-a", "1.0-1", "1.1-1")]);
    let output = common::whole(&pieces, "run-1");
    assert!(output.contains("Upgraded:"), "{output}");
    assert!(output.contains("Complete!"), "{output}");
    assert!(output.contains("# 1 packages changed"), "{output}");
    assert!(
        output.ends_with(&result.output),
        "the result keeps the end of the output:\n{output:?}\n---\n{:?}",
        result.output
    );
    assert_eq!(system.installed("pal-a"), "pal-a-1.1-1.noarch");
    assert_eq!(
        system.installed("pal-b"),
        "pal-b-1.0-1.noarch",
        "only what was named"
    );
    control.stop().await;
}
