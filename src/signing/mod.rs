//! `OpenPGP` signing of a mirror's spec manifests (issue 16), in-process with rpgp (the `pgp`
//! crate): no gpg binary, no gpg-agent, no keyring on disk. [`SigningKey`] reads an armored
//! secret key as `gpg --export-secret-keys --armor` writes it, refuses one that cannot sign
//! (with the reason and the way out), unlocks it once and keeps only the unlocked signing
//! component; it clearsigns text exactly as `gpg --clearsign` frames it (`Hash: SHA512`) and gives
//! the armored public key that Spack publishes as a key blob. [`PublicKey`] checks such a
//! clearsigned manifest and returns the text its signature covers.
//!
//! Which component signs: like gpg, the newest valid signing subkey (not expired, not revoked,
//! cross-certified, its secret present), else the primary key if it may sign. A key made by
//! `gpg --quick-gen-key` (rsa3072 `[SC]` + `[E]`, or ed25519 `sign`) signs with its primary key.
//!
//! Pure: bytes in, bytes out. No file, environment or network access; time is a parameter of the
//! `_at` variants. The secret never reaches a `Debug` or `Display`: [`SigningKey`]'s `Debug` shows
//! fingerprints only, and no error carries key material. rpgp logs through the `log` crate, and
//! at `debug` its key parser prints the raw secret-key packet in hex, so whoever installs the
//! logger must keep the `pgp` target at `info` or quieter (issue 16's wiring).

mod cert;
mod cleartext;
mod key;

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "tests fail loudly on purpose")]
mod tests;

pub use cleartext::{is_clearsigned, signed_text};
pub use key::{PublicKey, SigningKey};

use chrono::{DateTime, Utc};

/// Why a key cannot be used to sign: a configuration error, named with the key and the remedy.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "the signing key is not ascii-armored openpgp; export it with `gpg --export-secret-keys --armor FINGERPRINT`"
    )]
    NotOpenPgp {
        #[source]
        source: pgp::errors::Error,
    },
    #[error(
        "the signing key file holds an openpgp {what}, not a key; export the key with `gpg --export-secret-keys --armor FINGERPRINT`"
    )]
    NotAKey { what: &'static str },
    #[error("the armored openpgp key cannot be read; export it again with gpg")]
    Unreadable {
        #[source]
        source: pgp::errors::Error,
    },
    #[error(
        "key {fingerprint} is a public key only and cannot sign; export the secret key with `gpg --export-secret-keys --armor {fingerprint}`"
    )]
    PublicOnly { fingerprint: String },
    #[error(
        "the signing key file holds {count} keys; export only the one to sign with: `gpg --export-secret-keys --armor FINGERPRINT`"
    )]
    SeveralKeys { count: usize },
    #[error("key {fingerprint} is protected by a passphrase; set [signing] passphrase_file")]
    PassphraseRequired { fingerprint: String },
    #[error(
        "the passphrase does not unlock key {fingerprint}; check the file [signing] passphrase_file names"
    )]
    WrongPassphrase {
        fingerprint: String,
        #[source]
        source: pgp::errors::Error,
    },
    #[error(
        "the secret of key {fingerprint} is protected in a way rpgp cannot unlock ({reason}); export it from gpg again"
    )]
    UnsupportedProtection { fingerprint: String, reason: String },
    #[error(
        "the secret of key {fingerprint} is not in the file (gpg exported a stub: the key is on a smartcard or was left out by --export-secret-subkeys); export a key whose secret gpg holds"
    )]
    SecretMissing { fingerprint: String },
    #[error(
        "key {fingerprint} expired at {expired_at}; extend it with `gpg --quick-set-expire` and export it again"
    )]
    Expired {
        fingerprint: String,
        expired_at: DateTime<Utc>,
    },
    #[error("key {fingerprint} is revoked; make a new signing key")]
    Revoked { fingerprint: String },
    #[error(
        "key {fingerprint} uses {algorithm}, which spack-mirrord cannot sign with; use an ed25519 or rsa key"
    )]
    UnsupportedAlgorithm {
        fingerprint: String,
        algorithm: String,
    },
    #[error(
        "key {fingerprint} has no component able to sign ({reasons}); add one with `gpg --quick-add-key {fingerprint} ed25519 sign`"
    )]
    NoSigningKey {
        fingerprint: String,
        reasons: String,
    },
}

/// Why a text could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(
        "signing key {fingerprint} expired at {expired_at}; extend it with `gpg --quick-set-expire`, export it again and reload"
    )]
    Expired {
        fingerprint: String,
        expired_at: DateTime<Utc>,
    },
    #[error(
        "the text to sign holds a carriage return, which the cleartext framework would not keep; sign text with \\n line ends"
    )]
    CarriageReturn,
    #[error("openpgp signing with key {fingerprint} failed")]
    Sign {
        fingerprint: String,
        #[source]
        source: pgp::errors::Error,
    },
}

/// Why a clearsigned text is not accepted as signed by the expected key.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "the manifest is not clearsigned (it does not start with -----BEGIN PGP SIGNED MESSAGE-----)"
    )]
    NotClearsigned,
    #[error("the clearsigned manifest cannot be read as openpgp")]
    Malformed {
        #[source]
        source: pgp::errors::Error,
    },
    #[error("the clearsigned manifest holds no signature")]
    NoSignature,
    #[error("the manifest is signed by {issuers}, not by the expected key {fingerprint}")]
    OtherKey {
        fingerprint: String,
        issuers: String,
    },
    #[error(
        "the signature by {signer} does not match the manifest: the signed text was changed after signing"
    )]
    BadSignature { signer: String },
}
