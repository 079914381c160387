//! One package reading as the collector does it, on this machine or on a
//! root given as the argument, and what would be uploaded: the whole
//! inventory once, then per interval with no change. For BENCHMARKS.md:
//! `/usr/bin/time -f "%U %S %M" target/release/examples/read_packages /`.

use palisade_agent_collector::packages::{self, Uploads};
use palisade_agent_collector::sample::Sources;
use prost::Message;

fn main() -> anyhow::Result<()> {
    let root = std::env::args().nth(1).unwrap_or_else(|| "/".to_owned());
    let Some(reading) = packages::read(&Sources::under(&root))? else {
        anyhow::bail!("no dpkg or rpm database under {root}");
    };
    let mut uploads = Uploads::default();
    let first = uploads.read(reading.clone(), 1);
    let whole = uploads.held(None, 2);
    let held = reading.inventory.digest();
    let unchanged = uploads.read(reading.clone(), 3);
    let reconnect = uploads.held(Some(held), 4);
    let bytes = |reports: &[palisade_proto::pb::PackageReport]| -> usize {
        reports.iter().map(Message::encoded_len).sum()
    };
    println!(
        "installed {} updates {} (security {}) reboot_required {} problems {}",
        reading.inventory.installed.len(),
        reading.inventory.updates.len(),
        reading
            .inventory
            .updates
            .values()
            .filter(|u| u.security)
            .count(),
        reading.reboot_required,
        reading.problems.len()
    );
    println!(
        "bytes: before the backend answered {}, whole {} in {} report(s), unchanged interval {}, reconnect to a backend holding it {}",
        bytes(&first),
        bytes(&whole),
        whole.len(),
        bytes(&unchanged),
        bytes(&reconnect)
    );
    Ok(())
}
