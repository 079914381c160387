//! The collector's package side on a dpkg root made here, with real inotify:
//! nothing is sent before the backend says what it holds, then the whole
//! inventory; a package operation (dpkg replacing its status file) is read
//! within seconds and sent as a change; unrelated files are ignored; the
//! reboot flag alone is sent as an empty change.

use std::path::Path;
use std::time::Duration;

use palisade_agent_collector::PackageWatch;
use palisade_agent_collector::sample::Sources;
use palisade_proto::msg::FromChild;
use palisade_proto::pb;

fn package(name: &str, version: &str) -> String {
    format!(
        "Package: {name}\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: {version}\nDescription: {name}\n\n"
    )
}

/// Writes the status file as dpkg does: a new file renamed over the old.
fn write_status(root: &Path, packages: &[(&str, &str)]) {
    let dir = root.join("var/lib/dpkg");
    let text: String = packages.iter().map(|(n, v)| package(n, v)).collect();
    std::fs::write(dir.join("status-new"), text).expect("write status-new");
    std::fs::rename(dir.join("status-new"), dir.join("status")).expect("rename");
}

fn reports(messages: Vec<FromChild>) -> Vec<pb::PackageReport> {
    messages
        .into_iter()
        .map(|m| match m {
            FromChild::Packages(p) => p,
            other => panic!("not a package report: {other:?}"),
        })
        .collect()
}

async fn next(watch: &mut PackageWatch) -> Vec<pb::PackageReport> {
    reports(
        tokio::time::timeout(Duration::from_secs(20), watch.next())
            .await
            .expect("a reading within seconds of the change"),
    )
}

#[tokio::test]
async fn a_package_operation_is_read_within_seconds_and_sent_as_a_change() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    for d in ["var/lib/dpkg", "var/lib/apt/lists", "run"] {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    write_status(
        root,
        &[("dpkg", "1.21.22"), ("openssl", "3.0.11-1~deb12u1")],
    );
    let mut watch = PackageWatch::new(Sources::under(root));

    // The first reading happens at once; nothing is sent before the backend
    // said what it holds.
    assert!(next(&mut watch).await.is_empty());
    let whole = reports(watch.held(None));
    assert_eq!(whole.len(), 1);
    let Some(pb::package_report::Change::Whole(inventory)) = &whole[0].change else {
        panic!("the whole inventory first: {whole:?}")
    };
    let names: Vec<&str> = inventory
        .installed
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert_eq!(names, ["dpkg", "openssl"]);
    assert_eq!(inventory.manager, pb::PackageManager::Dpkg as i32);

    // dpkg installs curl and upgrades openssl.
    write_status(
        root,
        &[
            ("curl", "7.88.1-10+deb12u5"),
            ("dpkg", "1.21.22"),
            ("openssl", "3.0.13-1~deb12u1"),
        ],
    );
    let change = next(&mut watch).await;
    assert_eq!(change.len(), 1, "{change:?}");
    let Some(pb::package_report::Change::Delta(delta)) = &change[0].change else {
        panic!("a change, not the whole: {change:?}")
    };
    let set: Vec<(&str, &str)> = delta
        .installed_set
        .iter()
        .map(|p| (p.name.as_str(), p.version.as_str()))
        .collect();
    assert_eq!(
        set,
        [
            ("curl", "7.88.1-10+deb12u5"),
            ("openssl", "3.0.13-1~deb12u1")
        ]
    );
    assert_eq!(delta.installed_removed.len(), 1, "the old openssl");
    assert_eq!(delta.installed_removed[0].version, "3.0.11-1~deb12u1");

    // Files dpkg keeps beside its status are not package changes.
    std::fs::write(root.join("var/lib/dpkg/diversions"), "").expect("write");
    std::fs::write(root.join("run/unrelated"), "").expect("write");
    let quiet = tokio::time::timeout(Duration::from_secs(4), watch.next()).await;
    assert!(
        quiet.is_err(),
        "nothing read for unrelated files: {quiet:?}"
    );

    // A package asks for a reboot: only that is sent.
    std::fs::write(root.join("run/reboot-required.pkgs"), "linux-image-amd64\n").expect("write");
    std::fs::write(
        root.join("run/reboot-required"),
        "*** System restart required ***\n",
    )
    .expect("write");
    let reboot = next(&mut watch).await;
    assert_eq!(reboot.len(), 1, "{reboot:?}");
    assert!(reboot[0].reboot_required);
    assert_eq!(
        reboot[0].reboot_reasons,
        ["/run/reboot-required exists (for linux-image-amd64)"]
    );
    let Some(pb::package_report::Change::Delta(delta)) = &reboot[0].change else {
        panic!("an empty change: {reboot:?}")
    };
    assert_eq!(delta.base_sha256, delta.result_sha256);
    assert!(delta.installed_set.is_empty() && delta.installed_removed.is_empty());

    // Nothing changed since: the backend holding this inventory gets nothing.
    let Some(pb::package_report::Change::Delta(last)) = &change[0].change else {
        unreachable!()
    };
    let held: [u8; 32] = last.result_sha256.as_slice().try_into().expect("digest");
    assert!(reports(watch.held(Some(held))).is_empty());
}
