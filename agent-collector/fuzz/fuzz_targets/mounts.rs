//! Fuzz target: the collector's `mounts` parser must never panic on any input.
#![no_main]

//! Besides not panicking: a parsed table, written back the way the kernel
//! writes it, parses to the same table.

use libfuzzer_sys::fuzz_target;
use palisade_agent_collector::procfs::parse_mounts;

/// Escapes what the parser treats as separators (space, line ends) and the
/// escape character itself, as octal, like the kernel does.
fn escape(field: &str) -> String {
    let mut out = String::new();
    for c in field.chars() {
        if c == ' ' || c == '\\' || c.is_ascii_control() {
            out.push_str(&format!("\\{:03o}", u32::from(c)));
        } else {
            out.push(c);
        }
    }
    out
}

fuzz_target!(|text: &str| {
    let Ok(mounts) = parse_mounts(text) else {
        return;
    };
    let rendered: String = mounts
        .iter()
        .map(|m| {
            format!(
                "{} {} {} rw 0 0\n",
                escape(&m.device),
                escape(&m.mount_point),
                escape(&m.fs_type)
            )
        })
        .collect();
    assert_eq!(parse_mounts(&rendered).as_ref(), Ok(&mounts));
});
