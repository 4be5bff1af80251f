//! Reading a key: the armored secret key to sign with (checked, its signing component chosen and
//! unlocked) and the armored public key to verify with.

use std::fmt;

use chrono::{DateTime, Utc};
use pgp::composed::{Any, ArmorOptions, Deserializable as _, SignedPublicKey, SignedSecretKey};
use pgp::packet;
use pgp::types::{KeyDetails as _, Password, S2kParams, SecretParams, StringToKey};

use super::KeyError;
use super::cert::{Certificate, Standing, algorithm_signs, hex_of};

/// The public part of a key, to check signatures with.
#[derive(Clone)]
pub struct PublicKey {
    pub(super) cert: SignedPublicKey,
    pub(super) fingerprint: String,
    /// The components whose signatures count: the primary key first, then every subkey bound
    /// for signing (expiry and revocation aside: they bound when a key may sign, not whether a
    /// signature it made is genuine).
    pub(super) verifiers: Vec<Component>,
    /// `cert` armored, made once when the key is read.
    pub(super) armored: Vec<u8>,
}

/// A public component whose signatures count.
#[derive(Clone)]
pub(super) enum Component {
    Primary(packet::PublicKey),
    Subkey(packet::PublicSubkey),
}

/// The unlocked component that signs.
pub(super) enum Signer {
    Primary(packet::SecretKey),
    Subkey(packet::SecretSubkey),
}

/// A secret key, checked and unlocked, ready to clearsign.
pub struct SigningKey {
    pub(super) public: PublicKey,
    pub(super) signer: Signer,
    pub(super) signer_fingerprint: String,
    /// When the signer stops being valid: the earlier of the primary key's and its own expiry.
    pub(super) expires_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("fingerprint", &self.public.fingerprint)
            .field("signer", &self.signer_fingerprint)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PublicKey")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

/// What an armored `OpenPGP` block is: a key (secret or public), or something else.
enum Armored {
    Secret(Box<SignedSecretKey>),
    Public(Box<SignedPublicKey>),
}

fn read_armored(armored: &[u8]) -> Result<Armored, KeyError> {
    let (any, _headers) = Any::from_armor(armored).map_err(|source| {
        if armored.trim_ascii_start().starts_with(b"-----BEGIN PGP ") {
            KeyError::Unreadable { source }
        } else {
            KeyError::NotOpenPgp { source }
        }
    })?;
    match any {
        Any::SecretKey(_) => {
            // `Any` reads only the first key of a block: count them all.
            let (keys, _) = SignedSecretKey::from_armor_many(armored)
                .map_err(|source| KeyError::Unreadable { source })?;
            let mut keys = keys
                .collect::<Result<Vec<_>, _>>()
                .map_err(|source| KeyError::Unreadable { source })?;
            match keys.len() {
                1 => Ok(Armored::Secret(Box::new(keys.remove(0)))),
                count => Err(KeyError::SeveralKeys { count }),
            }
        }
        Any::PublicKey(key) => Ok(Armored::Public(Box::new(key))),
        Any::Cleartext(_) => Err(KeyError::NotAKey {
            what: "clearsigned message",
        }),
        Any::Message(_) => Err(KeyError::NotAKey { what: "message" }),
        Any::Signature(_) => Err(KeyError::NotAKey { what: "signature" }),
    }
}

impl PublicKey {
    /// Reads an armored public key (`gpg --export --armor`, or Spack's key blob). An armored
    /// secret key is accepted too, for its public part.
    pub fn from_armored(armored: &[u8]) -> Result<Self, KeyError> {
        let cert = match read_armored(armored)? {
            Armored::Public(cert) => *cert,
            Armored::Secret(key) => key.to_public_key(),
        };
        Self::from_cert(cert)
    }

    fn from_cert(cert: SignedPublicKey) -> Result<Self, KeyError> {
        let fingerprint = hex_of(&cert.primary_key.fingerprint());
        // Without its algorithm, not even the primary key's self-signatures can be checked.
        if let Err(algorithm) = algorithm_signs(&cert.primary_key) {
            return Err(KeyError::UnsupportedAlgorithm {
                fingerprint,
                algorithm,
            });
        }
        let read = Certificate::read(&cert);
        if read.primary.is_none() {
            return Err(KeyError::NoSigningKey {
                fingerprint,
                reasons: "no self-signature of its primary key verifies".to_owned(),
            });
        }
        let mut verifiers = vec![Component::Primary(cert.primary_key.clone())];
        verifiers.extend(
            read.subkeys
                .iter()
                .filter(|s| s.signs && s.unsupported.is_none())
                .filter_map(|s| s.subkey.and_then(|i| cert.public_subkeys.get(i)))
                .map(|sub| Component::Subkey(sub.key.clone())),
        );
        let armored = cert
            .to_armored_bytes(ArmorOptions::default())
            .map_err(|source| KeyError::Unreadable { source })?;
        Ok(Self {
            cert,
            fingerprint,
            verifiers,
            armored,
        })
    }

    /// The primary key's fingerprint as gpg prints it and Spack names the key's files:
    /// uppercase hex, 40 characters for a v4 key, 64 for a v6 key.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// The armored public key: the primary key, its user ids and subkeys with their
    /// self-signatures, as `gpg --export --armor` gives it (no armor headers, a CRC line).
    pub fn to_armored(&self) -> Vec<u8> {
        self.armored.clone()
    }
}

/// The secret key packet of a component, if the file holds it (not a gpg stub).
enum Secret<'a> {
    Primary(&'a packet::SecretKey),
    Subkey(&'a packet::SecretSubkey),
}

impl Secret<'_> {
    fn params(&self) -> &SecretParams {
        match self {
            Secret::Primary(k) => k.secret_params(),
            Secret::Subkey(k) => k.secret_params(),
        }
    }

    /// gpg writes a "gnu-dummy" S2K (a private type, 101) where it has no secret to export.
    fn is_stub(&self) -> bool {
        let SecretParams::Encrypted(enc) = self.params() else {
            return false;
        };
        match enc.string_to_key_params() {
            S2kParams::Cfb { s2k, .. }
            | S2kParams::MalleableCfb { s2k, .. }
            | S2kParams::Aead { s2k, .. } => matches!(s2k, StringToKey::Private { .. }),
            S2kParams::Unprotected | S2kParams::LegacyCfb { .. } => false,
        }
    }

    /// The component with its secret decrypted (a copy; the original stays locked).
    fn unlock(&self, fingerprint: &str, passphrase: Option<&str>) -> Result<Signer, KeyError> {
        let pw = match (self.params().is_encrypted(), passphrase) {
            (false, _) => Password::empty(),
            (true, None) => {
                return Err(KeyError::PassphraseRequired {
                    fingerprint: fingerprint.to_owned(),
                });
            }
            (true, Some(p)) => Password::from(p),
        };
        let unlocked = match self {
            Secret::Primary(k) => {
                let mut k = (*k).clone();
                k.remove_password(&pw).map(|()| Signer::Primary(k))
            }
            Secret::Subkey(k) => {
                let mut k = (*k).clone();
                k.remove_password(&pw).map(|()| Signer::Subkey(k))
            }
        };
        unlocked.map_err(|source| match source {
            pgp::errors::Error::Unsupported { .. } | pgp::errors::Error::Unimplemented { .. } => {
                KeyError::UnsupportedProtection {
                    fingerprint: fingerprint.to_owned(),
                    reason: source.to_string(),
                }
            }
            source => KeyError::WrongPassphrase {
                fingerprint: fingerprint.to_owned(),
                source,
            },
        })
    }
}

/// Why one signing-capable component cannot sign now, as the error to give if it is the only one.
fn refusal(s: &Standing, secret: &Secret<'_>, now: DateTime<Utc>) -> Option<KeyError> {
    let fingerprint = hex_of(&s.fingerprint);
    if s.revoked {
        Some(KeyError::Revoked { fingerprint })
    } else if let Some(expired_at) = s.expires_at.filter(|_| s.is_expired_at(now)) {
        Some(KeyError::Expired {
            fingerprint,
            expired_at,
        })
    } else if let Some(algorithm) = s.unsupported.clone() {
        Some(KeyError::UnsupportedAlgorithm {
            fingerprint,
            algorithm,
        })
    } else if secret.is_stub() {
        Some(KeyError::SecretMissing { fingerprint })
    } else {
        None
    }
}

impl SigningKey {
    /// Reads an armored secret key (`gpg --export-secret-keys --armor`), chooses the component
    /// that signs and unlocks it with `passphrase` (ignored for a key without one). Checked
    /// against the clock now; [`SigningKey::from_armored_at`] takes the time.
    pub fn from_armored(armored: &[u8], passphrase: Option<&str>) -> Result<Self, KeyError> {
        Self::from_armored_at(armored, passphrase, Utc::now())
    }

    /// [`SigningKey::from_armored`] as of `now`.
    pub fn from_armored_at(
        armored: &[u8],
        passphrase: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Self, KeyError> {
        let key = match read_armored(armored)? {
            Armored::Secret(key) => key,
            Armored::Public(cert) => {
                return Err(KeyError::PublicOnly {
                    fingerprint: hex_of(&cert.primary_key.fingerprint()),
                });
            }
        };
        let public = PublicKey::from_cert(key.to_public_key())?;
        let read = Certificate::read(&public.cert);
        let primary = read.primary.clone().ok_or_else(|| KeyError::NoSigningKey {
            fingerprint: public.fingerprint.clone(),
            reasons: "no self-signature of its primary key verifies".to_owned(),
        })?;
        // The primary key's own state bounds every subkey's.
        if primary.revoked {
            return Err(KeyError::Revoked {
                fingerprint: public.fingerprint,
            });
        }
        if let Some(expired_at) = primary.expires_at.filter(|_| primary.is_expired_at(now)) {
            return Err(KeyError::Expired {
                fingerprint: public.fingerprint,
                expired_at,
            });
        }

        // Candidates in gpg's order of preference: signing subkeys, newest first, then the
        // primary key. A subkey whose secret the file lacks is no candidate's secret.
        let mut subkeys: Vec<(&Standing, Secret<'_>)> = read
            .subkeys
            .iter()
            .filter(|s| s.signs)
            .filter_map(|s| {
                key.secret_subkeys
                    .iter()
                    .find(|k| k.key.fingerprint() == s.fingerprint)
                    .map(|k| (s, Secret::Subkey(&k.key)))
            })
            .collect();
        subkeys.sort_by_key(|(s, _)| std::cmp::Reverse(s.created));
        let mut candidates = subkeys;
        if primary.signs {
            candidates.push((&primary, Secret::Primary(&key.primary_key)));
        }

        let mut refusals = Vec::new();
        for (standing, secret) in &candidates {
            if let Some(why) = refusal(standing, secret, now) {
                refusals.push(why);
                continue;
            }
            let signer_fingerprint = hex_of(&standing.fingerprint);
            let signer = secret.unlock(&signer_fingerprint, passphrase)?;
            let expires_at = [primary.expires_at, standing.expires_at]
                .into_iter()
                .flatten()
                .min();
            return Ok(Self {
                public,
                signer,
                signer_fingerprint,
                expires_at,
            });
        }
        if refusals.len() == 1 {
            return Err(refusals.remove(0));
        }
        let reasons = if refusals.is_empty() {
            "neither its primary key nor a cross-certified subkey has the sign flag".to_owned()
        } else {
            refusals
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ")
        };
        Err(KeyError::NoSigningKey {
            fingerprint: public.fingerprint,
            reasons,
        })
    }

    /// The primary key's fingerprint (uppercase hex), the name of the key's files in the mirror.
    pub fn fingerprint(&self) -> String {
        self.public.fingerprint()
    }

    /// The fingerprint of the component that signs: the primary key's, or a signing subkey's.
    pub fn signer_fingerprint(&self) -> String {
        self.signer_fingerprint.clone()
    }

    /// When signing stops being possible, if the key expires.
    pub fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.expires_at
    }

    /// The armored public key, what `gpg --export --armor` gives: the blob Spack publishes.
    pub fn public_key_armored(&self) -> Vec<u8> {
        self.public.to_armored()
    }

    /// The public part, to verify this key's signatures with.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }
}
