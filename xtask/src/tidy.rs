//! Repository checks written as tests (rust-analyzer's "tidy"), so `cargo
//! test` and CI run them like any other test:
//!
//! - every Rust source file opens with a `//!` doc comment;
//! - no source file is longer than [`MAX_LINES`] lines outside its test
//!   module (tests, benches and fuzz targets are exempt);
//! - every `unsafe` block, function or impl has a `// SAFETY:` comment just
//!   above it (or on its line).
//!
//! That every migration exists for every SQL dialect is checked beside the
//! migrations, in `backend/src/db/migrate.rs`.

#![cfg(test)]

use std::path::{Path, PathBuf};

use crate::util::workspace_root;

/// The longest a source file may be (its `#[cfg(test)]` module excluded).
const MAX_LINES: usize = 1200;

/// Every `.rs` file of the repository, outside build output and VCS data.
fn rust_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if path.is_dir() {
                if matches!(
                    name.as_ref(),
                    "target" | ".git" | "node_modules" | "corpus" | "artifacts"
                ) {
                    continue;
                }
                walk(&path, out);
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    walk(&workspace_root(), &mut files);
    files.sort();
    assert!(
        files.len() > 50,
        "found only {} Rust files under {}",
        files.len(),
        workspace_root().display()
    );
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(workspace_root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Whether the file is a test, bench or fuzz target (exempt from the length rule).
fn is_test_code(path: &Path) -> bool {
    let rel = relative(path);
    rel.split('/')
        .any(|part| matches!(part, "tests" | "benches" | "fuzz" | "fuzz_targets"))
        || path
            .file_name()
            .is_some_and(|n| n == "tests.rs" || n == "testing.rs")
}

#[test]
fn every_source_file_opens_with_a_doc_comment() {
    let missing: Vec<String> = rust_files()
        .into_iter()
        .filter(|path| {
            let text = read(path);
            let first = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("");
            !first.starts_with("//!")
        })
        .map(|p| relative(&p))
        .collect();
    assert!(
        missing.is_empty(),
        "these files do not open with a `//!` comment saying what they are:\n{}",
        missing.join("\n")
    );
}

/// Lines before the file's test module.
fn code_lines(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .count()
}

#[test]
fn no_source_file_is_too_long() {
    let long: Vec<String> = rust_files()
        .into_iter()
        .filter(|p| !is_test_code(p))
        .filter_map(|path| {
            let lines = code_lines(&read(&path));
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", relative(&path)))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these files into modules (at most {MAX_LINES} lines each):\n{}",
        long.join("\n")
    );
}

/// Whether `line` opens an unsafe block, function or impl (not in a comment).
fn opens_unsafe(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    let mut rest = code;
    while let Some(i) = rest.find("unsafe") {
        let before = rest[..i].chars().last();
        let after = rest[i + "unsafe".len()..].trim_start();
        let word_start = before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if word_start
            && (after.starts_with('{') || after.starts_with("fn ") || after.starts_with("impl"))
        {
            return true;
        }
        rest = &rest[i + "unsafe".len()..];
    }
    false
}

/// Whether the comment block right above line `i` (attributes skipped), or
/// the line itself, says `SAFETY:`.
fn has_safety_comment(lines: &[&str], i: usize) -> bool {
    if lines[i].contains("SAFETY:") {
        return true;
    }
    let mut j = i;
    while j > 0 {
        j -= 1;
        let line = lines[j].trim();
        if line.starts_with("#[") || line.starts_with("#![") {
            continue;
        }
        if !line.starts_with("//") {
            return false;
        }
        if line.contains("SAFETY:") {
            return true;
        }
    }
    false
}

#[test]
fn every_unsafe_block_says_why_it_is_sound() {
    let mut missing = Vec::new();
    let mut seen = 0;
    for path in rust_files() {
        if relative(&path).starts_with("xtask/src/tidy.rs") {
            continue;
        }
        let text = read(&path);
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            if opens_unsafe(line) {
                seen += 1;
                if !has_safety_comment(&lines, i) {
                    missing.push(format!("{}:{}: {}", relative(&path), i + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        seen > 0,
        "no unsafe code found at all: is the search broken?"
    );
    assert!(
        missing.is_empty(),
        "`unsafe` without a `// SAFETY:` comment above it:\n{}",
        missing.join("\n")
    );
}

#[test]
fn the_checks_catch_what_they_look_for() {
    assert!(opens_unsafe("    let x = unsafe { f() };"));
    assert!(opens_unsafe("unsafe fn g() {}"));
    assert!(!opens_unsafe("let unsafe_program = 1;"));
    assert!(!opens_unsafe("// unsafe { in a comment }"));
    let lines = [
        "// SAFETY: f is sound here.",
        "#[allow(unsafe_code)]",
        "let x = unsafe { f() };",
        "let y = unsafe { g() };",
    ];
    assert!(has_safety_comment(&lines, 2));
    assert!(!has_safety_comment(&lines, 3));
    assert_eq!(code_lines("a\nb\n#[cfg(test)]\nmod tests {}\n"), 2);
}
