//! apt's `Release` and `InRelease` files: what a repository says about
//! itself (Origin, Label, Suite, Codename, ...). apt pins and
//! unattended-upgrades' origin patterns match on these fields, and so does
//! the security classification of a pending update.
//!
//! `InRelease` is the same paragraph inside an OpenPGP clear-signed message.
//! The signature is apt's to check (it did, before it stored the file under
//! `/var/lib/apt/lists`); here the armour is removed and the text read.

use super::control::{self, SyntaxError};

/// The largest Release file accepted (Debian's main archive lists every
/// index's hashes: about 200 KiB).
pub const MAX_SIZE: usize = 16 << 20;

/// The fields of a Release file that select and describe a repository.
/// Missing fields are empty strings, as apt treats them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Release {
    pub origin: String,
    pub label: String,
    /// The archive (`a=` in pins): `stable`, `bookworm-security`, ...
    pub suite: String,
    /// `n=` in pins: `bookworm`, `bookworm-security`, ...
    pub codename: String,
    /// `v=` in pins: `12.5`, ...
    pub version: String,
    pub components: Vec<String>,
    pub architectures: Vec<String>,
    /// `NotAutomatic: yes`: apt never upgrades to it on its own (priority 1).
    pub not_automatic: bool,
    /// With `NotAutomatic`, upgrades of packages installed from it are
    /// still taken (priority 100), as for backports.
    pub but_automatic_upgrades: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    #[error("the Release file is larger than {MAX_SIZE} bytes")]
    TooLarge,
    #[error("the Release file is empty")]
    Empty,
    #[error("a clear-signed message without its text or its signature")]
    BadArmour,
    #[error(transparent)]
    Syntax(#[from] SyntaxError),
}

impl Release {
    /// Parses a `Release` file or an `InRelease` file.
    pub fn parse(input: &[u8]) -> Result<Release, ReleaseError> {
        if input.len() > MAX_SIZE {
            return Err(ReleaseError::TooLarge);
        }
        let text = if input.starts_with(b"-----BEGIN PGP SIGNED MESSAGE-----") {
            clear_signed_text(input)?
        } else {
            input.to_vec()
        };
        let paragraph = control::paragraphs(&text)
            .next()
            .ok_or(ReleaseError::Empty)??;
        let text_of = |name: &str| -> Result<String, ReleaseError> {
            Ok(paragraph.text(name)?.unwrap_or("").trim().to_owned())
        };
        let yes = |name: &str| -> Result<bool, ReleaseError> {
            Ok(text_of(name)?.eq_ignore_ascii_case("yes"))
        };
        let words = |name: &str| -> Result<Vec<String>, ReleaseError> {
            Ok(text_of(name)?
                .split_ascii_whitespace()
                .map(str::to_owned)
                .collect())
        };
        Ok(Release {
            origin: text_of("Origin")?,
            label: text_of("Label")?,
            suite: text_of("Suite")?,
            codename: text_of("Codename")?,
            version: text_of("Version")?,
            components: words("Components")?,
            architectures: words("Architectures")?,
            not_automatic: yes("NotAutomatic")?,
            but_automatic_upgrades: yes("ButAutomaticUpgrades")?,
        })
    }

    /// Whether this is a security archive, by the conventions of the
    /// distributions: Debian labels its security archive `Debian-Security`
    /// and names the suite `<codename>-security` (before bullseye,
    /// `<codename>/updates`); Ubuntu's is the `<codename>-security` pocket.
    /// This is what unattended-upgrades' default origin patterns select.
    pub fn is_security(&self) -> bool {
        let security_suite = |s: &str| s.ends_with("-security") || s.ends_with("/updates");
        self.label.to_ascii_lowercase().contains("security")
            || security_suite(&self.suite)
            || security_suite(&self.codename)
    }
}

/// The text of an OpenPGP clear-signed message (RFC 4880 section 7): the
/// lines between the armour header block and the signature, dash-escaping
/// removed.
fn clear_signed_text(input: &[u8]) -> Result<Vec<u8>, ReleaseError> {
    let mut lines = input
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    lines.next(); // -----BEGIN PGP SIGNED MESSAGE-----
    // Armour headers ("Hash: SHA512") up to the first empty line.
    loop {
        match lines.next() {
            Some([]) => break,
            Some(_) => {}
            None => return Err(ReleaseError::BadArmour),
        }
    }
    let mut text = Vec::with_capacity(input.len());
    for line in lines {
        if line.starts_with(b"-----BEGIN PGP SIGNATURE-----") {
            return Ok(text);
        }
        let line = line.strip_prefix(b"- ").unwrap_or(line);
        text.extend_from_slice(line);
        text.push(b'\n');
    }
    Err(ReleaseError::BadArmour)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECURITY: &str = "Origin: Debian\nLabel: Debian-Security\nSuite: stable-security\n\
Version: 12\nCodename: bookworm-security\nDate: Sat, 30 Nov 2024 10:00:00 UTC\n\
Architectures: amd64 arm64\nComponents: updates/main updates/contrib\nDescription: Debian 12\n\
MD5Sum:\n 0123 100 main/binary-amd64/Packages\n";

    #[test]
    fn plain_release_file() {
        let release = Release::parse(SECURITY.as_bytes()).unwrap();
        assert_eq!(release.origin, "Debian");
        assert_eq!(release.label, "Debian-Security");
        assert_eq!(release.suite, "stable-security");
        assert_eq!(release.codename, "bookworm-security");
        assert_eq!(release.version, "12");
        assert_eq!(release.components, ["updates/main", "updates/contrib"]);
        assert_eq!(release.architectures, ["amd64", "arm64"]);
        assert!(!release.not_automatic);
        assert!(release.is_security());
    }

    #[test]
    fn clear_signed_release_file() {
        let signed = format!(
            "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\n{}- Description: dash-escaped\n\
-----BEGIN PGP SIGNATURE-----\n\nwsFzBAEBCgAnBQJ\n-----END PGP SIGNATURE-----\n",
            "Origin: Debian Backports\nLabel: Debian Backports\nSuite: bookworm-backports\n\
Codename: bookworm-backports\nNotAutomatic: yes\nButAutomaticUpgrades: yes\n"
        );
        let release = Release::parse(signed.as_bytes()).unwrap();
        assert_eq!(release.origin, "Debian Backports");
        assert!(release.not_automatic && release.but_automatic_upgrades);
        assert!(!release.is_security());
    }

    #[test]
    fn bad_files_are_errors() {
        assert_eq!(Release::parse(b""), Err(ReleaseError::Empty));
        assert_eq!(
            Release::parse(b"-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\nOrigin: x\n"),
            Err(ReleaseError::BadArmour)
        );
        assert!(matches!(
            Release::parse(b"Origin x\n"),
            Err(ReleaseError::Syntax(_))
        ));
    }

    #[test]
    fn ubuntu_security_pocket() {
        let release =
            Release::parse(b"Origin: Ubuntu\nLabel: Ubuntu\nSuite: noble-security\n").unwrap();
        assert!(release.is_security());
        let release =
            Release::parse(b"Origin: Ubuntu\nLabel: Ubuntu\nSuite: noble-updates\n").unwrap();
        assert!(!release.is_security());
    }
}
