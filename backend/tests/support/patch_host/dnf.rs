//! A host for the dnf patch-run test: a private rpm root the test made,
//! managed with `dnf --installroot` by a real agent started with
//! `PALISADE_PACKAGE_ROOT` ([`super::start_agent`]).
//!
//! A local repository made with `createrepo_c` carries pal-sec 1.1, fixed
//! by a security advisory its `updateinfo.xml` names (added with
//! `modifyrepo_c`), whose `%pre` scriptlet takes six seconds and prints as
//! it goes; pal-plain 1.1, a normal update; and pal-excluded 1.1, which the
//! root's `dnf.conf` excludes. The root has the 1.0 versions installed, and
//! pal-base, which provides `/bin/sh` (rpm runs scriptlets chrooted into the
//! root with the shell copied there, and wants a package to provide it).
//! Its metadata is not fetched: that is control's job
//! (`refresh_inventory`, `dnf makecache`).

use std::path::{Path, PathBuf};

use palisade_testkit::apt::add_shell;
use palisade_testkit::rpm::{Sandbox, add_updateinfo, createrepo, link_control_dbpath, spec};

pub const INSTALLED: &[&str] = &["pal-base", "pal-sec", "pal-plain", "pal-excluded"];

/// The security advisory that fixes pal-sec 1.0.
pub const ADVISORY: &str = "PAL-SA-2026:1";
pub const CVE: &str = "CVE-2026-0001";

const UPDATEINFO: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<updates>
  <update from="security@example.invalid" status="final" type="security" version="2">
    <id>PAL-SA-2026:1</id>
    <title>Important: pal-sec security update</title>
    <issued date="2026-01-02 00:00:00"/>
    <severity>Important</severity>
    <references>
      <reference href="https://www.cve.org/CVERecord?id=CVE-2026-0001" id="CVE-2026-0001" type="cve" title="CVE-2026-0001"/>
    </references>
    <pkglist>
      <collection short="pal">
        <name>pal</name>
        <package name="pal-sec" epoch="0" version="1.1" release="1" arch="noarch">
          <filename>pal-sec-1.1-1.noarch.rpm</filename>
        </package>
      </collection>
    </pkglist>
  </update>
</updates>
"#;

/// pal-sec 1.1's `%pre`: six seconds, printing as it goes.
const SLOW_PRE: &str =
    "%pre\nfor i in 1 2 3 4 5 6; do echo \"pal-sec pre step $i\"; sleep 1; done\n";

/// Makes the repository and the managed root under `dir`, with the 1.0
/// versions installed; returns the root.
pub fn make(dir: &Path) -> PathBuf {
    let sandbox = Sandbox::new();
    let (repo, root) = (dir.join("repo"), dir.join("root"));
    std::fs::create_dir_all(&repo).expect("mkdir repo");
    let mut old = Vec::new();
    let builds = [
        ("pal-base", "1.0", "Provides: /bin/sh\n", ""),
        ("pal-sec", "1.0", "", ""),
        ("pal-sec", "1.1", "", SLOW_PRE),
        ("pal-plain", "1.0", "", ""),
        ("pal-plain", "1.1", "", ""),
        ("pal-excluded", "1.0", "", ""),
        ("pal-excluded", "1.1", "", ""),
    ];
    for (name, version, tags, scriptlets) in builds {
        // Sections may come in any order after the preamble: the
        // scriptlet follows `%files`.
        let text = format!("{}{scriptlets}", spec(name, version, "1", tags));
        for file in sandbox.build(&format!("{name}-{version}"), &text) {
            if version == "1.0" {
                old.push(file);
            } else {
                let to = repo.join(file.file_name().expect("file name"));
                std::fs::copy(&file, to).expect("copy into the repository");
            }
        }
    }
    createrepo(&sandbox, &repo);
    add_updateinfo(&sandbox, &repo, UPDATEINFO);

    // `var/cache/dnf` exists before the agent starts: the collector's
    // sandbox grants only paths that exist then, as on a real host.
    for dir in ["var/lib/rpm", "var/cache/dnf", "etc/dnf", "etc/yum.repos.d"] {
        std::fs::create_dir_all(root.join(dir)).expect("mkdir in root");
    }
    std::fs::write(
        root.join("etc/dnf/dnf.conf"),
        "[main]\ngpgcheck=0\nexcludepkgs=pal-excluded\n",
    )
    .expect("dnf.conf");
    std::fs::write(
        root.join("etc/yum.repos.d/pal.repo"),
        format!(
            "[pal]\nname=pal\nbaseurl=file://{}\ngpgcheck=0\n",
            repo.display()
        ),
    )
    .expect("pal.repo");
    link_control_dbpath(&root);
    add_shell(&root);
    // The collector reads the running kernel from the root's /proc.
    std::os::unix::fs::symlink("/proc", root.join("proc")).expect("proc link");

    let mut args = vec!["-i".to_owned()];
    args.extend(old.iter().map(|f| f.display().to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sandbox.rpm(&root, &args);
    // The agent's users must reach the root (tempdirs are 0700).
    for path in [dir, &root] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    root
}
