//! The sandbox of every agent process, tested on the real binaries as root.
//!
//! - Hostile probes run inside each real, sandboxed process (`--selftest`,
//!   `palisade-agent selftest`) and the kernel stops them, with exactly the
//!   outcome the design says: SIGSYS where the seccomp allowlist has no
//!   such call, EACCES where Landlock refuses, EPERM where control's
//!   deny-list refuses.
//! - A panic under a filter ends in SIGABRT, not SIGSYS.
//! - End to end (backend, enrolled agent): every thread of the platform, the
//!   launcher and the three children shows the expected ids, capabilities,
//!   NoNewPrivs and seccomp mode in `/proc`; a child killed with SIGKILL
//!   comes back with the same sandbox, and the platform stays unprivileged;
//!   no agent process holds a listening socket, and only the platform holds
//!   network sockets; the state directory is handed over as designed.
//! - Started as root on a host without its system users, the agent refuses
//!   to start and names them and the commands that create them.
//!
//! As root (CI runs as root). As an ordinary user the tests skip loudly,
//! and fail under CI=true.

mod sandbox_support;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::signal::Signal;
use palisade_agent_sys::sandbox::Profile;
use palisade_agent_sys::sandbox::creds::{PRIVILEGED_DROPPED, ProcStatus, mask};
use palisade_agent_sys::sandbox::users::{self, SystemUser};
use sandbox_support::*;

const SIGSYS: i32 = Signal::SIGSYS as i32;
const SIGABRT: i32 = Signal::SIGABRT as i32;

/// What a probe must end in.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// The seccomp filter killed the process.
    Sigsys,
    /// The probe reported this (`ok` or an errno name).
    Says(&'static str),
}

fn check_probes(who: &str, program: &Path, extra_args: &[&str], table: &[(&str, Expect)]) {
    let mut failures = Vec::new();
    for (probe, expect) in table {
        let args: Vec<&str> = match program.file_name().and_then(|n| n.to_str()) {
            Some("palisade-agent") => [&["selftest", probe][..], extra_args].concat(),
            _ => [&["--selftest", probe][..], extra_args].concat(),
        };
        let outcome = run_probe(program, &args, probe);
        let ok = match (expect, &outcome) {
            (Expect::Sigsys, Outcome::Signal(s)) => *s == SIGSYS,
            (Expect::Says(want), Outcome::Said(got)) => want == got,
            _ => false,
        };
        if !ok {
            failures.push(format!(
                "{who} probe {probe}: expected {expect:?}, got {outcome:?}"
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn probe_table_start(test: &str) -> bool {
    if !root_or_skip(test) {
        return false;
    }
    ensure_users();
    true
}

#[test]
fn collector_probes_are_stopped_by_the_kernel() {
    if !probe_table_start("collector_probes_are_stopped_by_the_kernel") {
        return;
    }
    check_probes(
        "collector",
        &bin("palisade-agent-collector"),
        &[],
        &[
            ("exec", Expect::Sigsys),
            ("socket-inet", Expect::Sigsys),
            ("listen", Expect::Sigsys),
            // /tmp is writable by every user: only Landlock refuses.
            ("write-outside", Expect::Says("EACCES")),
            ("ptrace", Expect::Sigsys),
            ("module", Expect::Sigsys),
            ("read-shadow", Expect::Says("EACCES")),
            ("setuid-root", Expect::Sigsys),
        ],
    );
}

#[test]
fn monitor_probes_are_stopped_by_the_kernel() {
    if !probe_table_start("monitor_probes_are_stopped_by_the_kernel") {
        return;
    }
    check_probes(
        "monitor",
        &bin("palisade-agent-monitor"),
        &[],
        &[
            ("exec", Expect::Sigsys),
            ("socket-inet", Expect::Sigsys),
            ("listen", Expect::Sigsys),
            ("write-outside", Expect::Says("EACCES")),
            ("ptrace", Expect::Sigsys),
            ("module", Expect::Sigsys),
            // What CAP_DAC_READ_SEARCH is for: it reads any file.
            ("read-shadow", Expect::Says("ok")),
            ("setuid-root", Expect::Sigsys),
        ],
    );
}

#[test]
fn control_probes_are_refused_by_its_deny_list() {
    if !probe_table_start("control_probes_are_refused_by_its_deny_list") {
        return;
    }
    check_probes(
        "control",
        &bin("palisade-agent-control"),
        &[],
        &[
            // What package managers need stays possible...
            ("exec", Expect::Says("ok")),
            ("write-outside", Expect::Says("ok")),
            ("read-shadow", Expect::Says("ok")),
            // ...what none needs is refused with a clean EPERM.
            ("ptrace", Expect::Says("EPERM")),
            ("module", Expect::Says("EPERM")),
        ],
    );
}

#[test]
fn platform_probes_are_stopped_by_the_kernel() {
    if !probe_table_start("platform_probes_are_stopped_by_the_kernel") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let state_arg = state.to_str().expect("utf-8 path");
    check_probes(
        "platform",
        &bin("palisade-agent"),
        &["--state-dir", state_arg],
        &[
            ("exec", Expect::Sigsys),
            // It is the one process that talks to the network...
            ("socket-inet", Expect::Says("ok")),
            ("resolve", Expect::Says("ok")),
            // ...but never listens: listen(2) is not in its allowlist.
            ("listen", Expect::Sigsys),
            ("write-outside", Expect::Says("EACCES")),
            ("ptrace", Expect::Sigsys),
            ("module", Expect::Sigsys),
            ("read-shadow", Expect::Says("EACCES")),
            ("setuid-root", Expect::Sigsys),
        ],
    );
}

#[test]
fn a_panic_under_the_filter_ends_in_abort_not_sigsys() {
    if !probe_table_start("a_panic_under_the_filter_ends_in_abort_not_sigsys") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let runs: [(&str, Vec<&str>); 4] = [
        ("palisade-agent-collector", vec!["--selftest", "panic"]),
        ("palisade-agent-monitor", vec!["--selftest", "panic"]),
        ("palisade-agent-control", vec!["--selftest", "panic"]),
        (
            "palisade-agent",
            vec![
                "selftest",
                "panic",
                "--state-dir",
                state.to_str().expect("utf-8"),
            ],
        ),
    ];
    for (program, args) in runs {
        let outcome = run_probe(&bin(program), &args, "panic");
        assert_eq!(outcome, Outcome::Signal(SIGABRT), "{program}");
    }
}

/// What `/proc/<pid>/task/*/status` must show for one process.
struct Expected {
    name: &'static str,
    uid: u32,
    gid: u32,
    cap_prm_eff: u64,
    cap_bnd: u64,
    no_new_privs: u8,
}

fn expected_user(name: &'static str, user: SystemUser, kept: u64) -> Expected {
    Expected {
        name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        cap_prm_eff: kept,
        cap_bnd: 0,
        no_new_privs: 1,
    }
}

/// Control and the launcher: root, with the capabilities of this machine's
/// bounding set (a container may have fewer) minus the ones they give up.
fn expected_privileged(name: &'static str) -> Expected {
    let ours = ProcStatus::current().expect("our own status");
    let caps = ours.cap_bnd & !mask(PRIVILEGED_DROPPED);
    Expected {
        name,
        uid: 0,
        gid: 0,
        cap_prm_eff: caps,
        cap_bnd: caps,
        no_new_privs: 0,
    }
}

/// Checks every thread of `pid`; returns the number of threads checked.
fn check_threads(pid: u32, want: &Expected) -> usize {
    let threads = thread_statuses(pid);
    assert!(
        !threads.is_empty(),
        "{} ({pid}) has no threads in /proc",
        want.name
    );
    for (tid, s) in &threads {
        let at = format!("{} pid {pid} thread {tid}: {s:?}", want.name);
        assert_eq!(s.uid, [want.uid; 4], "Uid of {at}");
        assert_eq!(s.gid, [want.gid; 4], "Gid of {at}");
        if want.uid != 0 {
            assert!(s.groups.is_empty(), "Groups of {at}");
        }
        assert_eq!(s.cap_prm, want.cap_prm_eff, "CapPrm of {at}");
        assert_eq!(s.cap_eff, want.cap_prm_eff, "CapEff of {at}");
        assert_eq!(s.cap_inh, 0, "CapInh of {at}");
        assert_eq!(s.cap_amb, 0, "CapAmb of {at}");
        assert_eq!(s.cap_bnd, want.cap_bnd, "CapBnd of {at}");
        assert_eq!(s.no_new_privs, want.no_new_privs, "NoNewPrivs of {at}");
        assert_eq!(s.seccomp, 2, "Seccomp of {at}");
    }
    threads.len()
}

/// The platform's launcher and the launcher's three children, once all are
/// up and sandboxed (a child applies its sandbox a moment after it starts).
struct Tree {
    launcher: u32,
    collector: u32,
    monitor: u32,
    control: u32,
}

fn find_tree(platform: u32) -> Option<Tree> {
    let launcher = children_of(platform)
        .into_iter()
        .find(|(_, name)| name == "palisade-agent")?
        .0;
    let kids = children_of(launcher);
    let find = |name: &str| {
        kids.iter()
            .find(|(_, n)| n == name)
            .map(|(pid, _)| *pid)
            // Sandboxed means its filter is on.
            .filter(|pid| thread_statuses(*pid).iter().all(|(_, s)| s.seccomp == 2))
    };
    Some(Tree {
        launcher,
        collector: find("palisade-agent-collector")?,
        monitor: find("palisade-agent-monitor")?,
        control: find("palisade-agent-control")?,
    })
}

fn user(name: &'static str) -> SystemUser {
    users::require(name).expect("the system user exists")
}

#[test]
fn every_thread_of_every_agent_process_is_confined_and_restarts_keep_it() {
    let test = "every_thread_of_every_agent_process_is_confined_and_restarts_keep_it";
    if !probe_table_start(test) {
        return;
    }
    // A private (0700, root) directory above the state directory: the
    // platform, once it is palisade-agent, must still reach its state.
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
        .expect("chmod 0700");
    let backend_dir = dir.path().join("backend");
    let state = dir.path().join("agent");
    let (_backend, server) = start_backend(&backend_dir);
    enroll(&backend_dir, &server, &state);
    let mut agent = start_agent(&state);
    let platform = agent.pid();

    let agent_user = user(users::AGENT_USER);
    let platform_want = expected_user("platform", agent_user, 0);
    let collector_want = expected_user("collector", user(users::COLLECTOR_USER), 0);
    let monitor_want = expected_user(
        "monitor",
        user(users::MONITOR_USER),
        // CAP_DAC_READ_SEARCH, bit 2.
        mask(Profile::Monitor.kept_caps()),
    );
    let control_want = expected_privileged("control");
    let launcher_want = expected_privileged("launcher");

    let tree = eventually("the launcher and three sandboxed children", || {
        assert!(
            agent.alive(),
            "the agent exited; log:\n{}",
            agent.log_text()
        );
        find_tree(platform)
    });
    // The uplink is up: the platform's threads are all running by now.
    eventually("the uplink connected", || {
        agent.log_text().contains("uplink connected").then_some(())
    });
    let mut threads = 0;
    threads += check_threads(platform, &platform_want);
    threads += check_threads(tree.launcher, &launcher_want);
    threads += check_threads(tree.collector, &collector_want);
    threads += check_threads(tree.monitor, &monitor_want);
    threads += check_threads(tree.control, &control_want);
    assert!(threads >= 7, "the platform alone runs several threads");

    // Each child said hello with what it applied.
    let log = agent.log_text();
    for line in [
        "user palisade-collector, caps none, no_new_privs, landlock",
        "user palisade-monitor, caps CAP_DAC_READ_SEARCH, no_new_privs, landlock",
        "user palisade-agent, caps none, no_new_privs, landlock",
        "seccomp deny-list",
    ] {
        assert!(log.contains(line), "the agent log lacks {line:?}:\n{log}");
    }
    assert!(!log.contains("NOT sandboxed"), "{log}");

    // No agent process listens on a network port (invariant 1), and only
    // the platform holds network sockets at all.
    let listening: Vec<u64> = ["tcp", "tcp6"]
        .iter()
        .flat_map(|t| net_sockets(t))
        .filter(|(_, state)| state == "0A")
        .map(|(inode, _)| inode)
        .collect();
    let network: Vec<u64> = ["tcp", "tcp6", "udp", "udp6"]
        .iter()
        .flat_map(|t| net_sockets(t))
        .map(|(inode, _)| inode)
        .collect();
    for (name, pid) in [
        ("platform", platform),
        ("launcher", tree.launcher),
        ("collector", tree.collector),
        ("monitor", tree.monitor),
        ("control", tree.control),
    ] {
        let held = socket_inodes(pid);
        assert!(
            !held.iter().any(|i| listening.contains(i)),
            "the {name} holds a listening TCP socket"
        );
        let holds_network = held.iter().any(|i| network.contains(i));
        if name == "platform" {
            // The uplink's socket: proves the matching above sees sockets.
            assert!(holds_network, "the platform holds no network socket");
        } else {
            assert!(!holds_network, "the {name} holds a network socket");
        }
    }

    // The state directory: the platform's files are its own, the directory
    // is root's and sticky.
    let meta = std::fs::metadata(&state).expect("state dir");
    assert_eq!((meta.uid(), meta.gid()), (0, agent_user.gid.as_raw()));
    assert_eq!(meta.permissions().mode() & 0o7777, 0o1770);
    for file in ["identity.key", "identity.redb", "spool.redb"] {
        let meta = std::fs::metadata(state.join(file)).expect("a platform file");
        assert_eq!(meta.uid(), agent_user.uid.as_raw(), "{file}");
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
    }
    if let Ok(meta) = std::fs::metadata(state.join("control")) {
        assert_eq!(meta.uid(), 0, "control/ stays root's");
    }

    let memory: Vec<(&str, (u64, u64))> = [
        ("platform", platform),
        ("launcher", tree.launcher),
        ("collector", tree.collector),
        ("monitor", tree.monitor),
        ("control", tree.control),
    ]
    .into_iter()
    .map(|(n, p)| (n, memory_kib(p)))
    .collect();
    eprintln!(
        "memory (KiB, (rss, pss)): {memory:?}; total rss {} KiB, pss {} KiB",
        memory.iter().map(|(_, (r, _))| r).sum::<u64>(),
        memory.iter().map(|(_, (_, p))| p).sum::<u64>()
    );

    // Kill each child hard: it comes back, with the same sandbox.
    for role in ["collector", "monitor", "control"] {
        let current = find_tree(platform).expect("the tree");
        let old = match role {
            "collector" => current.collector,
            "monitor" => current.monitor,
            _ => current.control,
        };
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(old as i32), Signal::SIGKILL)
            .expect("kill the child");
        let tree = eventually(&format!("the {role} restarted"), || {
            assert!(
                agent.alive(),
                "the agent exited; log:\n{}",
                agent.log_text()
            );
            find_tree(platform).filter(|t| match role {
                "collector" => t.collector != old,
                "monitor" => t.monitor != old,
                _ => t.control != old,
            })
        });
        let (new, want) = match role {
            "collector" => (tree.collector, &collector_want),
            "monitor" => (tree.monitor, &monitor_want),
            _ => (tree.control, &control_want),
        };
        check_threads(new, want);
        // The platform, which asked for the restart, is as unprivileged as before.
        check_threads(platform, &platform_want);
    }
}

/// Runs `program args...` in a private mount namespace where `/etc/passwd`
/// lacks the agent's users (as on a host where the package did not create
/// them); returns (exit code, stderr).
fn run_without_users(program: &Path, args: &[&str], scratch: &Path) -> (Option<i32>, String) {
    let passwd = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let filtered: String = passwd
        .lines()
        .filter(|l| !users::ALL.iter().any(|u| l.starts_with(&format!("{u}:"))))
        .map(|l| format!("{l}\n"))
        .collect();
    let fake = scratch.join("passwd");
    std::fs::write(&fake, filtered).expect("write the fake passwd");
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount --bind "$0" /etc/passwd && exec "$@""#)
        .arg(&fake)
        .arg(program)
        .args(args)
        .env_clear()
        .output()
        .expect("run unshare (util-linux)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn without_its_users_the_agent_refuses_to_start_and_says_what_to_do() {
    let test = "without_its_users_the_agent_refuses_to_start_and_says_what_to_do";
    if !root_or_skip(test) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let (code, stderr) = run_without_users(
        &bin("palisade-agent"),
        &[
            "selftest",
            "exec",
            "--state-dir",
            state.to_str().expect("utf-8"),
        ],
        dir.path(),
    );
    assert_eq!(code, Some(1), "{stderr}");
    for needle in [
        "palisade-agent, palisade-collector, palisade-monitor do not exist",
        "systemd-sysusers",
        "useradd --system --user-group --no-create-home --shell /usr/sbin/nologin palisade-agent",
        "does not create users",
    ] {
        assert!(stderr.contains(needle), "{needle:?} not in: {stderr}");
    }
    assert!(!state.exists(), "nothing was prepared before the refusal");

    // A child started as root without its user refuses too.
    let (code, stderr) = run_without_users(
        &bin("palisade-agent-collector"),
        &["--selftest", "exec"],
        dir.path(),
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert!(
        stderr.contains("palisade-collector do not exist"),
        "{stderr}"
    );
}
