//! The real gpg (`GnuPG`), driven for the tests: it makes the keys (as a site would), and it checks our
//! signatures (as Spack does, with `gpg --verify`). Each [`Gpg`] is a throw-away `GNUPGHOME`;
//! its agent is stopped when it is dropped. A missing gpg fails the test, naming the package.

use std::io::Write as _;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

pub struct Gpg {
    home: tempfile::TempDir,
}

impl Drop for Gpg {
    fn drop(&mut self) {
        // Stops the gpg-agent this home started (and only it).
        let _ = Command::new("gpgconf")
            .env("GNUPGHOME", self.home.path())
            .args(["--kill", "all"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

impl Gpg {
    pub fn new() -> Self {
        static CHECKED: OnceLock<()> = OnceLock::new();
        CHECKED.get_or_init(|| match Command::new("gpg").arg("--version").output() {
            Ok(o) if o.status.success() => {}
            _ => panic!(
                "gpg is missing: the signing tests need GnuPG 2.2 or newer (apt-get install gnupg); CI installs it"
            ),
        });
        Self {
            home: tempfile::Builder::new().prefix("gpg").tempdir().unwrap(),
        }
    }

    pub fn run(&self, args: &[&str], input: Option<&[u8]>) -> Output {
        let mut child = Command::new("gpg")
            .env("GNUPGHOME", self.home.path())
            .args(["--batch", "--no-tty", "--pinentry-mode", "loopback"])
            .args(args)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        if let Some(input) = input {
            // Inputs are a few KiB: the pipe takes them before gpg answers.
            child.stdin.take().unwrap().write_all(input).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    pub fn ok(&self, args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        let out = self.run(args, input);
        assert!(
            out.status.success(),
            "gpg {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// The primary key's fingerprint of the one key matching `who`.
    pub fn fingerprint(&self, who: &str) -> String {
        let listing =
            String::from_utf8(self.ok(&["--with-colons", "--list-keys", who], None)).unwrap();
        listing
            .lines()
            .find(|l| l.starts_with("fpr:"))
            .and_then(|l| l.split(':').nth(9))
            .unwrap()
            .to_owned()
    }

    pub fn path(&self, name: &str) -> String {
        self.home.path().join(name).to_string_lossy().into_owned()
    }

    pub fn write(&self, name: &str, bytes: &[u8]) -> String {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// `gpg --verify` as Spack runs it, on a home holding only `public`: whether it passed, and
    /// its status lines.
    pub fn verify(public: &[u8], signed: &[u8]) -> (bool, String) {
        let gpg = Gpg::new();
        gpg.ok(&["--import"], Some(public));
        let file = gpg.write("manifest.json.sig", signed);
        let out = gpg.run(&["--status-fd", "1", "--verify", &file], None);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    }

    /// What `gpg --decrypt --output` extracts from a clearsigned message.
    pub fn decrypt(public: &[u8], signed: &[u8]) -> Vec<u8> {
        let gpg = Gpg::new();
        gpg.ok(&["--import"], Some(public));
        let file = gpg.write("manifest.json.sig", signed);
        let out = gpg.path("manifest.json");
        gpg.ok(&["--output", &out, "--decrypt", &file], None);
        std::fs::read(out).unwrap()
    }
}

/// A key as gpg made and exported it.
pub struct Exported {
    pub fingerprint: String,
    /// `gpg --export-secret-keys --armor`
    pub secret: Vec<u8>,
    /// `gpg --export --armor`
    pub public: Vec<u8>,
    /// `gpg --export-secret-subkeys --armor`: the primary key's secret left out (a stub)
    pub secret_subkeys: Vec<u8>,
    /// The fingerprint of the last subkey, if any
    pub subkey: Option<String>,
}

/// How a test key is made: `--quick-gen-key` arguments, then `--quick-add-key` ones.
pub struct Recipe {
    pub algo: &'static str,
    pub usage: &'static str,
    pub expire: &'static str,
    pub add: Option<(&'static str, &'static str)>,
    pub passphrase: &'static str,
    /// `--faked-system-time` for the generation, to make a key that has already expired
    pub at: Option<&'static str>,
    /// Import the revocation certificate gpg stored, before exporting
    pub revoke: bool,
}

pub const PASSPHRASE: &str = "correct horse battery staple";

impl Recipe {
    pub const fn new(algo: &'static str, usage: &'static str) -> Self {
        Self {
            algo,
            usage,
            expire: "never",
            add: None,
            passphrase: "",
            at: None,
            revoke: false,
        }
    }

    pub fn make(&self) -> Exported {
        let gpg = Gpg::new();
        let uid = "Test Mirror <mirror@example.org>";
        let mut gen_args = vec!["--passphrase", self.passphrase];
        if let Some(at) = self.at {
            gen_args.extend(["--faked-system-time", at]);
        }
        gen_args.extend(["--quick-gen-key", uid, self.algo, self.usage, self.expire]);
        gpg.ok(&gen_args, None);
        let fingerprint = gpg.fingerprint(uid);
        if let Some((algo, usage)) = self.add {
            gpg.ok(
                &[
                    "--passphrase",
                    self.passphrase,
                    "--quick-add-key",
                    &fingerprint,
                    algo,
                    usage,
                    "never",
                ],
                None,
            );
        }
        if self.revoke {
            let rev =
                std::fs::read_to_string(gpg.path(&format!("openpgp-revocs.d/{fingerprint}.rev")))
                    .unwrap();
            // gpg guards the stored certificate against an accidental import with a colon.
            let rev = rev.replace(
                ":-----BEGIN PGP PUBLIC KEY BLOCK-----",
                "-----BEGIN PGP PUBLIC KEY BLOCK-----",
            );
            gpg.ok(&["--import"], Some(rev.as_bytes()));
        }
        let listing =
            String::from_utf8(gpg.ok(&["--with-colons", "--list-keys", &fingerprint], None))
                .unwrap();
        let subkey = listing
            .lines()
            .skip_while(|l| !l.starts_with("sub:"))
            .filter(|l| l.starts_with("fpr:"))
            .last()
            .and_then(|l| l.split(':').nth(9))
            .map(str::to_owned);
        let export = |what: &str| {
            gpg.ok(
                &[
                    "--passphrase",
                    self.passphrase,
                    "--armor",
                    what,
                    &fingerprint,
                ],
                None,
            )
        };
        Exported {
            secret: export("--export-secret-keys"),
            public: export("--export"),
            secret_subkeys: export("--export-secret-subkeys"),
            fingerprint,
            subkey,
        }
    }
}

/// Each kind of key is made once per test run and shared: rsa keys take gpg a moment.
macro_rules! shared_key {
    ($name:ident, $recipe:expr) => {
        pub fn $name() -> &'static Exported {
            static KEY: OnceLock<Exported> = OnceLock::new();
            KEY.get_or_init(|| $recipe.make())
        }
    };
}

// gpg's defaults: an ed25519 primary key that signs, and rsa3072 `[SC]` with an `[E]` subkey.
shared_key!(ed25519, Recipe::new("ed25519", "sign"));
shared_key!(rsa, Recipe::new("default", "default"));
shared_key!(
    ed25519_protected,
    Recipe {
        passphrase: PASSPHRASE,
        ..Recipe::new("ed25519", "sign")
    }
);
shared_key!(
    rsa_protected,
    Recipe {
        passphrase: PASSPHRASE,
        ..Recipe::new("rsa3072", "sign")
    }
);
// A certify-only primary key with a signing subkey, as careful sites keep theirs.
shared_key!(
    signing_subkey,
    Recipe {
        add: Some(("ed25519", "sign")),
        ..Recipe::new("ed25519", "cert")
    }
);
shared_key!(
    encrypt_only,
    Recipe {
        add: Some(("cv25519", "encr")),
        ..Recipe::new("ed25519", "cert")
    }
);
// Made in 2020, valid for a day.
shared_key!(
    expired,
    Recipe {
        expire: "1d",
        at: Some("20200101T000000!"),
        ..Recipe::new("ed25519", "sign")
    }
);
shared_key!(
    revoked,
    Recipe {
        revoke: true,
        ..Recipe::new("ed25519", "sign")
    }
);
shared_key!(brainpool, Recipe::new("brainpoolP256r1", "sign"));
// Valid for one day from now, to sign past its end.
shared_key!(
    one_day,
    Recipe {
        expire: "1d",
        ..Recipe::new("ed25519", "sign")
    }
);
