//! A fresh Debian root to install the packages into, as an operator's
//! server would be (minus a running systemd).
//!
//! debootstrap runs once per machine; its result is cached outside the clone
//! (`$PALISADE_CACHE_DIR`, else `$XDG_CACHE_HOME/palisade`, else
//! `~/.cache/palisade`) and each test works on a copy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, bail};

use crate::util;

/// The Debian release the root runs: the one the packages are built on.
pub const SUITE: &str = "bookworm";
/// What the root has beyond a minimal base: systemd's sysusers and
/// tmpfiles (the packages depend on them; systemd itself never runs), and
/// curl to ask the backend for /healthz from inside.
const INCLUDE: &str = "systemd,curl";
const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";

fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("PALISADE_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("palisade"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set: set PALISADE_CACHE_DIR")?;
    Ok(PathBuf::from(home).join(".cache/palisade"))
}

/// The cached pristine root, made with debootstrap if it is not there.
pub fn cached_root() -> anyhow::Result<PathBuf> {
    let dir = cache_dir()?.join("debootstrap");
    let root = dir.join(format!("{SUITE}-amd64"));
    // The stamp names how the root was made; a root made differently, or
    // left half-made by an interrupted run, is made again.
    let stamp = dir.join(format!("{SUITE}-amd64.done"));
    let recipe = format!("variant=minbase include={INCLUDE}\n");
    if root.is_dir() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == recipe) {
        println!("Debian root (cached): {}", root.display());
        return Ok(root);
    }
    let mirror = std::env::var("PALISADE_DEBIAN_MIRROR").unwrap_or_else(|_| DEFAULT_MIRROR.into());
    let partial = dir.join(format!("{SUITE}-amd64.partial"));
    for old in [&partial, &root] {
        if old.exists() {
            std::fs::remove_dir_all(old)
                .with_context(|| format!("cannot remove {}", old.display()))?;
        }
    }
    let _ = std::fs::remove_file(&stamp);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    util::heading(&format!(
        "debootstrap {SUITE} into {} (once; about a minute)",
        root.display()
    ));
    util::run(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
            .arg(&partial)
            .arg(&mirror),
    )
    .context("debootstrap failed")?;
    std::fs::rename(&partial, &root)
        .with_context(|| format!("cannot move {} to {}", partial.display(), root.display()))?;
    std::fs::write(&stamp, recipe).with_context(|| format!("cannot write {}", stamp.display()))?;
    Ok(root)
}

/// A copy of the cached root with /proc mounted. On drop, every process
/// running inside it is killed (they are the test's own: it started them
/// there) and /proc is unmounted; the directory stays for a look after a
/// failure and is replaced by the next run.
pub struct DebianRoot {
    path: PathBuf,
    proc_mounted: bool,
    children: Vec<Child>,
}

impl DebianRoot {
    pub fn fresh(cached: &Path, path: &Path) -> anyhow::Result<DebianRoot> {
        if path.exists() {
            // A previous run that died may have left /proc mounted.
            let _ = util::output(Command::new("umount").arg(path.join("proc")));
            std::fs::remove_dir_all(path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        util::output(Command::new("cp").arg("-a").arg(cached).arg(path))
            .context("cannot copy the cached Debian root")?;
        let path = std::fs::canonicalize(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?;
        let mut root = DebianRoot {
            path,
            proc_mounted: false,
            children: Vec::new(),
        };
        util::output(
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(root.path.join("proc")),
        )
        .context("cannot mount /proc in the Debian root")?;
        root.proc_mounted = true;
        Ok(root)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `path` (absolute inside the root) as seen from outside.
    pub fn host_path(&self, path: &str) -> PathBuf {
        self.path.join(path.trim_start_matches('/'))
    }

    /// A command run inside the root, as root, with a plain environment.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("chroot");
        cmd.arg(&self.path)
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", "/root")
            .env("LANG", "C.UTF-8")
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    }

    /// A command run inside the root as `user` (and its groups), the way
    /// systemd would start a unit with `User=`/`Group=`.
    pub fn command_as(&self, user: &str, group: &str, program: &str) -> Command {
        let mut cmd = self.command("setpriv");
        cmd.arg(format!("--reuid={user}"))
            .arg(format!("--regid={group}"))
            .args(["--init-groups", "--no-new-privs", "--"])
            .arg(program);
        cmd
    }

    /// Starts `cmd` in the background; it is killed when the root is dropped.
    pub fn spawn(&mut self, cmd: &mut Command) -> anyhow::Result<&mut Child> {
        let line = util::display(cmd);
        println!("$ {line} &");
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start `{line}`"))?;
        self.children.push(child);
        let last = self.children.len() - 1;
        Ok(&mut self.children[last])
    }

    /// The processes running inside the root: (pid, executable as seen from
    /// outside).
    pub fn processes(&self) -> Vec<(i32, PathBuf)> {
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let proc_dir = entry.path();
            if std::fs::read_link(proc_dir.join("root")).is_ok_and(|r| r == self.path) {
                let exe = std::fs::read_link(proc_dir.join("exe")).unwrap_or_default();
                found.push((pid, exe));
            }
        }
        found
    }

    /// Users and groups as the root's /etc/passwd and /etc/group name them.
    pub fn accounts(&self) -> anyhow::Result<Accounts> {
        let read = |file: &str| {
            let path = self.host_path(file);
            std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))
        };
        Ok(Accounts::parse(&read("/etc/passwd")?, &read("/etc/group")?))
    }
}

impl Drop for DebianRoot {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        // Whatever those started (the agent's children, say).
        for _ in 0..50 {
            let left = self.processes();
            if left.is_empty() {
                break;
            }
            for (pid, _) in left {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        if self.proc_mounted {
            let proc = self.path.join("proc");
            if util::output(Command::new("umount").arg(&proc)).is_err() {
                let _ = util::output(Command::new("umount").arg("-l").arg(&proc));
            }
        }
    }
}

/// A user from /etc/passwd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// The root's users and groups, by name.
#[derive(Debug, Default)]
pub struct Accounts {
    pub users: BTreeMap<String, User>,
    pub groups: BTreeMap<String, u32>,
}

impl Accounts {
    pub fn parse(passwd: &str, group: &str) -> Accounts {
        let mut accounts = Accounts::default();
        for line in passwd.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if let [name, _, uid, gid, _, home, shell] = f[..]
                && let (Ok(uid), Ok(gid)) = (uid.parse(), gid.parse())
            {
                accounts.users.insert(
                    name.to_owned(),
                    User {
                        uid,
                        gid,
                        home: home.to_owned(),
                        shell: shell.to_owned(),
                    },
                );
            }
        }
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if let [name, _, gid, ..] = f[..]
                && let Ok(gid) = gid.parse()
            {
                accounts.groups.insert(name.to_owned(), gid);
            }
        }
        accounts
    }

    pub fn uid(&self, name: &str) -> anyhow::Result<u32> {
        match self.users.get(name) {
            Some(user) => Ok(user.uid),
            None => bail!("there is no user {name} in the Debian root"),
        }
    }

    pub fn gid(&self, name: &str) -> anyhow::Result<u32> {
        match self.groups.get(name) {
            Some(gid) => Ok(*gid),
            None => bail!("there is no group {name} in the Debian root"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_are_read_from_passwd_and_group() {
        let accounts = Accounts::parse(
            "root:x:0:0:root:/root:/bin/bash\npalisade-backend:x:997:996:Palisade backend:/var/lib/palisade-backend:/usr/sbin/nologin\nbroken line\n",
            "root:x:0:\npalisade-backend:x:996:\n",
        );
        assert_eq!(
            accounts.users["palisade-backend"],
            User {
                uid: 997,
                gid: 996,
                home: "/var/lib/palisade-backend".into(),
                shell: "/usr/sbin/nologin".into()
            }
        );
        assert_eq!(accounts.gid("palisade-backend").expect("group"), 996);
        assert!(accounts.uid("nobody-here").is_err());
        assert_eq!(accounts.users.len(), 2);
    }
}
