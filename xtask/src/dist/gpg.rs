//! Signing with GnuPG: the operator's key, never one kept in the tree.
//!
//! Everything is signed through `gpg` (rpmsign calls it too), so a key held
//! by gpg-agent or a smartcard works as well as a key file.
//!
//! Signatures are dated like the rest of the build: at `SOURCE_DATE_EPOCH`,
//! or at the key's creation if the key is newer (a signature cannot predate
//! its key), through gpg's `--faked-system-time`. With an RSA or Ed25519 key,
//! whose signatures are deterministic, two builds then sign identically; an
//! ECDSA key still signs correctly, only not reproducibly.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

use super::files::PrivateDir;
use crate::util;

/// The public key as APT's `signed-by` takes it (binary OpenPGP).
pub const APT_KEYRING_FILE: &str = "palisade-archive-keyring.gpg";
/// The public key as `rpm --import` and `gpgkey=` take it (armored).
pub const RPM_KEY_FILE: &str = "RPM-GPG-KEY-palisade";

/// Where the signing key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signing {
    /// An armored secret key file, imported into a private, temporary GnuPG
    /// home that is deleted afterwards.
    KeyFile {
        path: PathBuf,
        passphrase_file: Option<PathBuf>,
    },
    /// A key in a GnuPG keyring, by id, fingerprint or user id.
    KeyId {
        id: String,
        /// `GNUPGHOME`; gpg's default when `None`.
        gnupg_home: Option<PathBuf>,
        passphrase_file: Option<PathBuf>,
    },
    /// Explicitly unsigned artifacts (`--unsigned`).
    Unsigned,
}

impl Signing {
    /// Decides from the environment (passed in) and `--unsigned`. Without a
    /// key and without `--unsigned` this is an error: nothing is called
    /// signed unless it is.
    pub fn choose(
        key: Option<OsString>,
        passphrase_file: Option<OsString>,
        gnupg_home: Option<OsString>,
        unsigned: bool,
    ) -> anyhow::Result<Signing> {
        let key = key.filter(|k| !k.is_empty());
        if unsigned {
            if key.is_some() {
                println!(
                    "note: --unsigned given, so {} is not used",
                    super::SIGNING_KEY_ENV
                );
            }
            return Ok(Signing::Unsigned);
        }
        let Some(key) = key else {
            bail!(
                "no signing key: set {} to an armored secret key file or to a GnuPG key id \
                 (see `cargo xtask help dist`), or pass --unsigned to build explicitly unsigned \
                 artifacts",
                super::SIGNING_KEY_ENV
            );
        };
        let passphrase_file = passphrase_file.filter(|p| !p.is_empty()).map(PathBuf::from);
        if let Some(file) = &passphrase_file
            && !file.is_file()
        {
            bail!(
                "{}={} is not a file",
                super::PASSPHRASE_FILE_ENV,
                file.display()
            );
        }
        let path = PathBuf::from(&key);
        if path.is_file() {
            return Ok(Signing::KeyFile {
                path,
                passphrase_file,
            });
        }
        let id = key.into_string().map_err(|_| {
            anyhow::anyhow!("{} is neither a file nor a key id", super::SIGNING_KEY_ENV)
        })?;
        if id.contains('/') {
            bail!(
                "{}={id} looks like a path, but there is no such file",
                super::SIGNING_KEY_ENV
            );
        }
        Ok(Signing::KeyId {
            id,
            gnupg_home: gnupg_home.filter(|h| !h.is_empty()).map(PathBuf::from),
            passphrase_file,
        })
    }
}

/// A key ready to sign with.
pub struct Signer {
    /// A private GnuPG home holding an imported key file; removed on drop.
    _imported: Option<PrivateDir>,
    home: Option<PathBuf>,
    fingerprint: String,
    passphrase_file: Option<PathBuf>,
    timestamp: u64,
    gpg: PathBuf,
}

impl Drop for Signer {
    fn drop(&mut self) {
        // The agent started for an imported key holds it in memory; stop it
        // before its home goes away. Nothing to do for the operator's own.
        if self._imported.is_some()
            && let Some(home) = &self.home
        {
            let _ = util::output(
                Command::new("gpgconf")
                    .arg("--homedir")
                    .arg(home)
                    .args(["--kill", "all"]),
            );
        }
    }
}

impl Signer {
    /// Opens the key `signing` names (`None` for unsigned builds) and checks
    /// it can sign, by signing a test message.
    pub fn open(signing: &Signing, source_date_epoch: u64) -> anyhow::Result<Option<Signer>> {
        let gpg = find_program("gpg")?;
        let (imported, home, id, passphrase_file) = match signing {
            Signing::Unsigned => return Ok(None),
            Signing::KeyFile {
                path,
                passphrase_file,
            } => {
                let dir = PrivateDir::new("palisade-gpg")?;
                let home = dir.path().to_owned();
                let mut cmd = Command::new(&gpg);
                cmd.arg("--homedir")
                    .arg(&home)
                    .args(["--batch", "--no-tty", "--quiet", "--import"])
                    .arg(path);
                util::output(&mut cmd).with_context(|| {
                    format!("cannot import the signing key file {}", path.display())
                })?;
                (Some(dir), Some(home), None, passphrase_file.clone())
            }
            Signing::KeyId {
                id,
                gnupg_home,
                passphrase_file,
            } => (
                None,
                gnupg_home.clone(),
                Some(id.clone()),
                passphrase_file.clone(),
            ),
        };
        let listing = {
            let mut cmd = Command::new(&gpg);
            if let Some(home) = &home {
                cmd.arg("--homedir").arg(home);
            }
            cmd.args(["--batch", "--with-colons", "--list-secret-keys"]);
            if let Some(id) = &id {
                cmd.arg("--").arg(id);
            }
            util::output(&mut cmd).with_context(|| match &id {
                Some(id) => format!("there is no secret key {id:?} in the GnuPG keyring"),
                None => "the signing key file holds no secret key".to_owned(),
            })?
        };
        let key = parse_secret_key_listing(&listing)?;
        let signer = Signer {
            _imported: imported,
            home,
            fingerprint: key.fingerprint,
            passphrase_file,
            timestamp: source_date_epoch.max(key.newest_creation),
            gpg,
        };
        signer.check_can_sign()?;
        Ok(Some(signer))
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The creation time every signature carries.
    pub fn timestamp(&self) -> u64 {
        self.timestamp
    }

    /// The options every signing gpg call takes.
    fn signing_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--batch".into(),
            "--no-tty".into(),
            "--yes".into(),
            format!("--faked-system-time={}!", self.timestamp).into(),
            "--digest-algo=SHA512".into(),
            "--local-user".into(),
            self.fingerprint.clone().into(),
        ];
        if let Some(file) = &self.passphrase_file {
            args.push("--pinentry-mode=loopback".into());
            let mut arg = OsString::from("--passphrase-file=");
            arg.push(file);
            args.push(arg);
        }
        args
    }

    fn gpg(&self) -> Command {
        let mut cmd = Command::new(&self.gpg);
        if let Some(home) = &self.home {
            cmd.arg("--homedir").arg(home);
        }
        cmd.env("TZ", "UTC").env("LC_ALL", "C");
        cmd
    }

    fn check_can_sign(&self) -> anyhow::Result<()> {
        let mut cmd = self.gpg();
        cmd.args(self.signing_args()).args([
            "--quiet",
            "--armor",
            "--detach-sign",
            "--output",
            "-",
            "/dev/null",
        ]);
        util::output(&mut cmd).with_context(|| {
            format!(
                "the key {} cannot sign (a passphrase is needed? set {})",
                self.fingerprint,
                super::PASSPHRASE_FILE_ENV
            )
        })?;
        Ok(())
    }

    /// `InRelease`: the file with its signature inline.
    pub fn clearsign(&self, input: &Path, output: &Path) -> anyhow::Result<()> {
        let mut cmd = self.gpg();
        cmd.args(self.signing_args())
            .args(["--quiet", "--clearsign", "--output"])
            .arg(output)
            .arg(input);
        util::output(&mut cmd).map(drop)
    }

    /// A detached, armored signature of `input`.
    pub fn detach_sign(&self, input: &Path, output: &Path) -> anyhow::Result<()> {
        let mut cmd = self.gpg();
        cmd.args(self.signing_args())
            .args(["--quiet", "--armor", "--detach-sign", "--output"])
            .arg(output)
            .arg(input);
        util::output(&mut cmd).map(drop)
    }

    /// Signs an RPM in place with rpmsign, which calls this same gpg with
    /// these same options; then checks the signature is there (rpmsign has
    /// been seen to exit 0 when gpg could not even be started).
    pub fn sign_rpm(&self, rpm: &Path) -> anyhow::Result<()> {
        let extra: Vec<String> = self
            .signing_args()
            .into_iter()
            .filter(|a| a != "--local-user" && a != self.fingerprint.as_str())
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let mut cmd = Command::new(find_program("rpmsign")?);
        cmd.arg("--addsign")
            .arg("--define")
            .arg(format!("__gpg {}", self.gpg.display()))
            .arg("--define")
            .arg(format!("_gpg_name {}", self.fingerprint))
            .arg("--define")
            .arg(format!("_gpg_sign_cmd_extra_args {}", extra.join(" ")))
            .arg(rpm)
            .env("TZ", "UTC")
            .env("LC_ALL", "C");
        if let Some(home) = &self.home {
            cmd.env("GNUPGHOME", home);
        }
        util::output(&mut cmd).with_context(|| format!("cannot sign {}", rpm.display()))?;
        let signature = util::output(
            Command::new(find_program("rpm")?)
                .args(["-qp", "--qf", "%{RSAHEADER:pgpsig}"])
                .arg(rpm),
        )?;
        if signature.trim().is_empty() || signature.contains("(none)") {
            bail!("rpmsign left {} unsigned", rpm.display());
        }
        println!(
            "signed {}: {}",
            super::file_name(rpm).to_string_lossy(),
            signature.trim()
        );
        Ok(())
    }

    /// Writes the public key, binary or armored.
    pub fn export_public_key(&self, output: &Path, armored: bool) -> anyhow::Result<()> {
        let mut cmd = self.gpg();
        cmd.args([
            "--batch",
            "--yes",
            "--export-options",
            "export-minimal",
            "--output",
        ])
        .arg(output);
        if armored {
            cmd.arg("--armor");
        }
        cmd.args(["--export", &self.fingerprint]);
        util::output(&mut cmd)
            .with_context(|| format!("cannot export the public key to {}", output.display()))?;
        Ok(())
    }
}

/// What `gpg --with-colons --list-secret-keys` says about the one key.
#[derive(Debug, PartialEq, Eq)]
struct SecretKey {
    fingerprint: String,
    /// The newest creation time of the key and its subkeys.
    newest_creation: u64,
}

/// Parses the colon listing of exactly one secret key (with its subkeys).
fn parse_secret_key_listing(listing: &str) -> anyhow::Result<SecretKey> {
    let mut primaries = 0;
    let mut fingerprint = None;
    let mut newest_creation = 0;
    let mut last_record = "";
    for line in listing.lines() {
        let fields: Vec<&str> = line.split(':').collect();
        let Some(&record) = fields.first() else {
            continue;
        };
        match record {
            "sec" | "ssb" => {
                if record == "sec" {
                    primaries += 1;
                }
                let created: u64 = fields
                    .get(5)
                    .and_then(|f| f.parse().ok())
                    .with_context(|| format!("gpg listed a key without a creation time: {line}"))?;
                newest_creation = newest_creation.max(created);
            }
            "fpr" if last_record == "sec" => {
                fingerprint = fields.get(9).map(|f| (*f).to_owned());
            }
            _ => {}
        }
        last_record = record;
    }
    match (primaries, fingerprint) {
        (1, Some(fingerprint)) if !fingerprint.is_empty() => Ok(SecretKey {
            fingerprint,
            newest_creation,
        }),
        (0, _) => bail!("no secret key found"),
        (1, _) => bail!("gpg listed the secret key without its fingerprint"),
        (n, _) => bail!("{n} secret keys match; name exactly one (its fingerprint)"),
    }
}

/// `name` on `PATH`, as an absolute path (rpm runs gpg by absolute path).
pub fn find_program(name: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .with_context(|| format!("{name} is not installed (not found on PATH)"))
}

/// A key made for one test run: an RSA key (deterministic signatures) with
/// a random passphrase, exported as an armored secret key file the way an
/// operator would hand one over. Its GnuPG home is gone once it is made.
pub struct ThrowawayKey {
    pub secret_key_file: PathBuf,
    pub passphrase_file: PathBuf,
    pub fingerprint: String,
}

impl ThrowawayKey {
    pub fn create(dir: &Path) -> anyhow::Result<ThrowawayKey> {
        use base64::prelude::{BASE64_STANDARD, Engine as _};
        use std::io::Read;

        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let mut random = [0u8; 32];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut random))
            .context("cannot read /dev/urandom")?;
        let passphrase_file = dir.join("passphrase");
        super::files::write_private(&passphrase_file, BASE64_STANDARD.encode(random).as_bytes())?;

        let home = PrivateDir::new("palisade-testkey")?;
        let gpg = find_program("gpg")?;
        let gpg_cmd = || {
            let mut cmd = Command::new(&gpg);
            cmd.arg("--homedir")
                .arg(home.path())
                .args(["--batch", "--no-tty", "--pinentry-mode=loopback"])
                .arg({
                    let mut arg = OsString::from("--passphrase-file=");
                    arg.push(&passphrase_file);
                    arg
                });
            cmd
        };
        util::output(gpg_cmd().args([
            "--quick-generate-key",
            "Palisade packaging test (throwaway) <packaging-test@palisade.invalid>",
            "rsa3072",
            "sign",
            "never",
        ]))
        .context("cannot create the throwaway signing key")?;
        let listing = util::output(gpg_cmd().args(["--with-colons", "--list-secret-keys"]))?;
        let fingerprint = parse_secret_key_listing(&listing)?.fingerprint;
        let secret =
            util::output(gpg_cmd().args(["--armor", "--export-secret-keys", &fingerprint]))?;
        let secret_key_file = dir.join("secret-key.asc");
        super::files::write_private(&secret_key_file, secret.as_bytes())?;
        let _ = util::output(
            Command::new("gpgconf")
                .arg("--homedir")
                .arg(home.path())
                .args(["--kill", "all"]),
        );
        Ok(ThrowawayKey {
            secret_key_file,
            passphrase_file,
            fingerprint,
        })
    }

    /// Imports the key into a new GnuPG home, as an operator's keyring would
    /// hold it; returns the home (removed on drop).
    pub fn import_into_keyring(&self) -> anyhow::Result<PrivateDir> {
        let home = PrivateDir::new("palisade-keyring")?;
        util::output(
            Command::new(find_program("gpg")?)
                .arg("--homedir")
                .arg(home.path())
                .args(["--batch", "--no-tty", "--quiet", "--import"])
                .arg(&self.secret_key_file),
        )
        .context("cannot import the throwaway key into a keyring")?;
        Ok(home)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> Option<OsString> {
        Some(OsString::from(s))
    }

    #[test]
    fn without_a_key_dist_refuses_and_says_how_to_go_on() {
        let err = Signing::choose(None, None, None, false).expect_err("no key");
        let message = err.to_string();
        assert!(message.contains("PALISADE_SIGNING_KEY"), "{message}");
        assert!(message.contains("--unsigned"), "{message}");
        // An empty variable is no key either.
        assert!(Signing::choose(os(""), None, None, false).is_err());
    }

    #[test]
    fn unsigned_is_only_what_was_asked_for() {
        assert_eq!(
            Signing::choose(None, None, None, true).expect("valid"),
            Signing::Unsigned
        );
        assert_eq!(
            Signing::choose(os("ABCDEF0123456789"), None, None, true).expect("valid"),
            Signing::Unsigned
        );
    }

    #[test]
    fn a_key_is_a_file_or_an_id() {
        let dir = PrivateDir::new("palisade-signing-test").expect("temp dir");
        let file = dir.path().join("key.asc");
        std::fs::write(&file, "not read here").expect("write");
        assert_eq!(
            Signing::choose(Some(file.clone().into()), None, None, false).expect("valid"),
            Signing::KeyFile {
                path: file,
                passphrase_file: None
            }
        );
        assert_eq!(
            Signing::choose(os("0xDEADBEEF"), None, os("/home/u/.gnupg"), false).expect("valid"),
            Signing::KeyId {
                id: "0xDEADBEEF".into(),
                gnupg_home: Some("/home/u/.gnupg".into()),
                passphrase_file: None
            }
        );
        let missing = Signing::choose(os("/no/such/key.asc"), None, None, false)
            .expect_err("a missing file is not a key id");
        assert!(missing.to_string().contains("no such file"), "{missing}");
        assert!(Signing::choose(os("ABCD"), os("/no/such/passphrase"), None, false).is_err());
    }

    #[test]
    fn secret_key_listing() {
        let listing = "\
sec:u:3072:1:3AEC5F67DEED8A37:1795492562:::u:::scSC:::+:::23::0:
fpr:::::::::1F3077796071773CE9CDFA3F3AEC5F67DEED8A37:
grp:::::::::AA7C6437635F1E0D2E73441330A28248081A2F84:
uid:u::::1795492562::09FAD26349F978BDBEE8EC22D3491A84087D3F30::Test <t@example.invalid>::::::::::0:
ssb:u:3072:1:1111111111111111:1795492999::::::s:::+:::23:
fpr:::::::::2222222222222222222222222222222222222222:
";
        assert_eq!(
            parse_secret_key_listing(listing).expect("one key"),
            SecretKey {
                fingerprint: "1F3077796071773CE9CDFA3F3AEC5F67DEED8A37".into(),
                newest_creation: 1795492999,
            }
        );
        assert!(parse_secret_key_listing("").is_err());
        let two = format!("{listing}{listing}");
        let err = parse_secret_key_listing(&two).expect_err("ambiguous");
        assert!(err.to_string().contains("2 secret keys"), "{err}");
    }
}
