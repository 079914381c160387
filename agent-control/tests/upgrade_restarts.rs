//! After a real `upgrade_packages`, control reports whether the host needs
//! a reboot and which processes still run files the upgrade replaced,
//! through the real control binary (under its sandbox, without
//! `CAP_SYS_PTRACE`), the real apt-get and dpkg, on a private root the test
//! made.
//!
//! The root has pal-daemon 1.0 installed, which ships a program
//! (`/usr/lib/palisade-test/pal-daemon`, a copy of `sleep`); the test
//! starts it twice from the root, once as root and once as `nobody`
//! (whose maps control, root without `CAP_SYS_PTRACE`, may read only as
//! that user, depending on the kernel). pal-daemon 1.1 replaces the program, and its postinst asks for a
//! reboot the way Debian's kernel and libc packages do
//! (`/run/reboot-required` and `.pkgs`).
//!
//! - a dry run reads nothing of the kind: no reboot status, no restarts;
//! - the real upgrade's result says a reboot is required and lists both
//!   processes with the replaced program, and the output says so too.
//!
//! Needs root (dpkg chroots into the root to run maintainer scripts), apt,
//! dpkg-deb and apt-ftparchive; without them it says so and passes, except
//! under `CI=true`, where it fails.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{AGENT, Control, MINUTE, Signer, enrolled, now_ms};
use palisade_packages::inventory::Manager;
use palisade_proto::msg::{CommandAction, TypedCommand};
use palisade_proto::pb::{self, CommandStatus};
use palisade_proto::upgrade::{Target, Upgrade};
use palisade_testkit::apt::{
    add_shell, add_to_suite, dpkg, make_apt_root, make_dpkg_root, run, suite_fields,
};

/// Where pal-daemon puts its program, inside the root.
const PROGRAM: &str = "usr/lib/palisade-test/pal-daemon";
/// `nobody`'s ids on Debian (whether or not the test machine names them).
const NOBODY: u32 = 65534;

/// What pal-daemon 1.1's postinst does: what Debian's packages do through
/// `/usr/share/update-notifier/notify-reboot-required`.
const ASK_FOR_A_REBOOT: &str =
    "echo pal-daemon >> /run/reboot-required.pkgs\n: > /run/reboot-required";

/// Builds pal-daemon at `version` in `dir`: the program (a copy of `sleep`
/// with the version appended, so each version is its own file) and the
/// postinst when one is given.
fn daemon_deb(dir: &Path, version: &str, postinst: Option<&str>) -> PathBuf {
    let tree = dir.join(format!("pal-daemon_{version}"));
    std::fs::create_dir_all(tree.join("DEBIAN")).expect("mkdir");
    std::fs::write(
        tree.join("DEBIAN/control"),
        format!(
            "Package: pal-daemon\nVersion: {version}\nArchitecture: all\n\
             Maintainer: Palisade tests <tests@example.invalid>\nDescription: a test daemon\n"
        ),
    )
    .expect("control");
    if let Some(script) = postinst {
        let path = tree.join("DEBIAN/postinst");
        std::fs::write(&path, format!("#!/bin/sh\nset -e\n{script}\n")).expect("postinst");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let sleep = ["/usr/bin/sleep", "/bin/sleep"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("sleep (coreutils) is on every Linux system");
    let mut program = std::fs::read(sleep).expect("read sleep");
    program.extend_from_slice(format!("pal-daemon {version}").as_bytes());
    let path = tree.join(PROGRAM);
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(&path, program).expect("program");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let deb = dir.join(format!("pal-daemon_{version}_all.deb"));
    run(Command::new("dpkg-deb")
        .args(["--build", "--root-owner-group", "-Zgzip"])
        .arg(&tree)
        .arg(&deb));
    deb
}

/// A repository with pal-daemon 1.1 and a root with 1.0 installed.
struct System {
    dir: tempfile::TempDir,
}

impl System {
    fn new() -> System {
        let dir = tempfile::tempdir().expect("tempdir");
        // `nobody` runs the program from inside: the way there must be open.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        let (build, repo, root) = (
            dir.path().join("build"),
            dir.path().join("repo"),
            dir.path().join("root"),
        );
        std::fs::create_dir_all(&build).expect("mkdir");
        let new = daemon_deb(&build, "1.1", Some(ASK_FOR_A_REBOOT));
        add_to_suite(&repo, "stable", &new, &suite_fields("stable"));
        make_dpkg_root(&root);
        make_apt_root(&root, &repo, &["stable"]);
        add_shell(&root);
        std::fs::create_dir_all(root.join("run")).expect("mkdir run");
        let old = daemon_deb(&build, "1.0", None);
        dpkg(&root, &["--install", &old.display().to_string()], None);
        System { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    /// The program as the kernel names it in a process's maps.
    fn program(&self) -> String {
        std::fs::canonicalize(self.root())
            .expect("canonical root")
            .join(PROGRAM)
            .display()
            .to_string()
    }
}

/// The test's processes, killed however the test ends.
struct Daemons(Vec<Child>);

impl Daemons {
    /// Starts the root's program as root and as `nobody`, and waits until
    /// both map it.
    fn start(system: &System) -> Daemons {
        let program = system.root().join(PROGRAM);
        let mut daemons = Daemons(Vec::new());
        for user in [None, Some(NOBODY)] {
            let mut command = Command::new(&program);
            command
                .arg("300")
                .current_dir("/")
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            if let Some(id) = user {
                command.uid(id).gid(id);
            }
            daemons.0.push(command.spawn().expect("start the daemon"));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for pid in daemons.pids() {
            let maps = format!("/proc/{pid}/maps");
            while !std::fs::read_to_string(&maps).is_ok_and(|m| m.contains(PROGRAM)) {
                assert!(
                    Instant::now() < deadline,
                    "pid {pid} never mapped {PROGRAM}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        daemons
    }

    fn pids(&self) -> Vec<u32> {
        self.0.iter().map(Child::id).collect()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn command(id: &str, dry_run: bool) -> TypedCommand {
    let now = now_ms();
    TypedCommand {
        agent_id: AGENT.into(),
        command_id: id.into(),
        issued_at_unix_ms: now,
        expires_at_unix_ms: now + 5 * MINUTE,
        action: CommandAction::UpgradePackages(Upgrade {
            manager: Manager::Dpkg,
            all: false,
            packages: vec![Target {
                name: "pal-daemon".into(),
                arch: String::new(),
                version: "1.1".into(),
            }],
            dry_run,
            refresh_index: true,
            timeout: Duration::from_secs(120),
        }),
    }
}

/// The pids of the restarts that list `file`, sorted.
fn pids_running(result: &pb::CommandResult, file: &str) -> Vec<u32> {
    let mut pids: Vec<u32> = result
        .restarts
        .iter()
        .filter(|r| r.files.iter().any(|f| f == file))
        .flat_map(|r| r.pids.iter().copied())
        .collect();
    pids.sort_unstable();
    pids
}

#[tokio::test]
async fn a_real_upgrade_reports_the_reboot_it_needs_and_the_processes_running_replaced_files() {
    if !palisade_testkit::apt::can_manage_roots() {
        return;
    }
    let system = System::new();
    let daemons = Daemons::start(&system);
    let signer = Signer::new();
    let state = enrolled(&signer);
    let mut control = Control::start_with_root(Some(state.path()), &system.root()).await;

    let (_, dry) = control
        .run_streamed(signer.sign(command("dry-1", true)))
        .await;
    assert_eq!(dry.status, CommandStatus::Succeeded as i32, "{dry:?}");
    assert_eq!(dry.changes.len(), 1, "{dry:?}");
    assert_eq!(
        dry.reboot_required, None,
        "a dry run reads no reboot status"
    );
    assert!(dry.restarts.is_empty(), "a dry run reads no processes");

    let (pieces, result) = control
        .run_streamed(signer.sign(command("run-1", false)))
        .await;
    let output = common::whole(&pieces, "run-1");
    assert_eq!(result.status, CommandStatus::Succeeded as i32, "{output}");
    assert_eq!(
        (
            result.changes[0].name.as_str(),
            result.changes[0].after.as_str()
        ),
        ("pal-daemon", "1.1")
    );
    assert_eq!(result.reboot_required, Some(true), "{output}");
    assert!(
        output.contains("# reboot required: /run/reboot-required exists (for pal-daemon)"),
        "{output}"
    );

    let program = system.program();
    let mut expected = daemons.pids();
    expected.sort_unstable();
    assert_eq!(
        pids_running(&result, &program),
        expected,
        "both processes, root's and nobody's, run the replaced program: {:?}\n{output}",
        result.restarts
    );
    // Nothing outside the root the upgrade managed is listed.
    for restart in &result.restarts {
        for file in &restart.files {
            assert!(
                file.starts_with(&program),
                "{file} is not the root's: {restart:?}"
            );
        }
    }
    assert!(
        output.contains("# restart ") && output.contains(&program),
        "{output}"
    );
    assert!(
        palisade_proto::msg::validate_command_result(&result).is_ok(),
        "{result:?}"
    );
    drop(daemons);
    control.stop().await;
}
