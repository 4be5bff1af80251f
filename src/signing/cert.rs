//! What an `OpenPGP` certificate (the public part of a key) says about each of its components, read
//! from its verified self-signatures as gpg reads them: the newest valid self-signature of the
//! primary key (over a user id or directly on the key) and the newest valid binding signature of
//! each subkey give the expiry and the key flags; a valid revocation revokes. A signing subkey
//! counts only when it is cross-certified (its embedded primary-key binding verifies), as gpg ≥
//! 2.0 demands. Signatures that do not verify are ignored, never trusted.

use chrono::{DateTime, TimeDelta, Utc};
use pgp::composed::{SignedPublicKey, SignedPublicSubKey};
use pgp::crypto::public_key::PublicKeyAlgorithm;
use pgp::packet::{self, Signature, SignatureType, SubpacketData};
use pgp::types::{
    EcdsaPublicParams, EddsaLegacyPublicParams, Fingerprint, KeyDetails, KeyVersion, PublicParams,
    Tag, Timestamp,
};

/// One component of a certificate, the primary key or a subkey, as its self-signatures say.
#[derive(Debug, Clone)]
pub(super) struct Standing {
    pub fingerprint: Fingerprint,
    /// `None` for the primary key, else the subkey's place in `public_subkeys`.
    pub subkey: Option<usize>,
    pub created: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked: bool,
    /// The flags (or, without a flags subpacket, the algorithm) allow signing, and for a subkey
    /// the back-signature verifies.
    pub signs: bool,
    /// Why this component cannot sign whatever its flags say, if it cannot.
    pub unsupported: Option<String>,
}

impl Standing {
    pub fn is_expired_at(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|at| at <= now)
    }
}

/// The primary key's standing and every subkey that has a valid binding.
#[derive(Debug, Clone)]
pub(super) struct Certificate {
    /// `None` when no self-signature of the primary key verifies: gpg will not use such a key.
    pub primary: Option<Standing>,
    pub subkeys: Vec<Standing>,
}

/// Uppercase hex, as gpg prints a fingerprint and as Spack names its key files.
pub(super) fn hex_of(fp: &Fingerprint) -> String {
    format!("{fp:X}")
}

pub(super) fn time_of(t: Timestamp) -> DateTime<Utc> {
    DateTime::from_timestamp(i64::from(t.as_secs()), 0).unwrap_or_default()
}

fn expiry(created: DateTime<Utc>, sig: &Signature) -> Option<DateTime<Utc>> {
    // A key expiration time of 0, like its absence, means the key does not expire.
    sig.key_expiration_time()
        .map(pgp::types::Duration::as_secs)
        .filter(|&secs| secs > 0)
        .map(|secs| created + TimeDelta::seconds(i64::from(secs)))
}

fn has_key_flags(sig: &Signature) -> bool {
    sig.config().is_some_and(|c| {
        c.hashed_subpackets()
            .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
    })
}

/// Whether a key of these parameters can make signatures here: `Err` names an algorithm that
/// could sign but that rpgp cannot (or that we refuse); `Ok(false)` an encryption-only one.
pub(super) fn algorithm_signs(key: &impl KeyDetails) -> Result<bool, String> {
    if !matches!(key.version(), KeyVersion::V4 | KeyVersion::V6) {
        return Err(format!("a version {} key", u8::from(key.version())));
    }
    match key.public_params() {
        PublicParams::RSA(_) => Ok(key.algorithm() != PublicKeyAlgorithm::RSAEncrypt),
        PublicParams::ECDSA(EcdsaPublicParams::Unsupported { curve, .. }) => {
            Err(format!("ecdsa on curve {}", curve.name()))
        }
        PublicParams::EdDSALegacy(EddsaLegacyPublicParams::Unsupported { curve, .. }) => {
            Err(format!("eddsa on curve {}", curve.name()))
        }
        PublicParams::DSA(_)
        | PublicParams::Ed25519(_)
        | PublicParams::Ed448(_)
        | PublicParams::ECDSA(_)
        | PublicParams::EdDSALegacy(_) => Ok(true),
        PublicParams::ECDH(_)
        | PublicParams::Elgamal(_)
        | PublicParams::X25519(_)
        | PublicParams::X448(_) => Ok(false),
        // An algorithm id rpgp does not know (its post-quantum ones are not built in).
        PublicParams::Unknown { .. } => Err(format!("algorithm {:?}", key.algorithm())),
    }
}

/// Whether the flags of `sig` (or the algorithm, when it carries none) allow signing, and why
/// the algorithm cannot if it cannot.
fn flags_sign(sig: &Signature, key: &impl KeyDetails) -> (bool, Option<String>) {
    match algorithm_signs(key) {
        Err(why) => (!has_key_flags(sig) || sig.key_flags().sign(), Some(why)),
        Ok(can) if has_key_flags(sig) => (can && sig.key_flags().sign(), None),
        Ok(can) => (can, None),
    }
}

fn newest<'a>(sigs: impl Iterator<Item = &'a Signature>) -> Option<&'a Signature> {
    sigs.max_by_key(|s| s.created().map_or(0, Timestamp::as_secs))
}

fn primary_standing(cert: &SignedPublicKey) -> Option<Standing> {
    let primary = &cert.primary_key;
    let by_user = cert.details.users.iter().flat_map(|u| {
        u.signatures
            .iter()
            .filter(|s| s.verify_certification(primary, Tag::UserId, &u.id).is_ok())
    });
    let direct = cert
        .details
        .direct_signatures
        .iter()
        .filter(|s| s.verify_key(primary).is_ok());
    let sig = newest(by_user.chain(direct))?;
    let revoked =
        cert.details.revocation_signatures.iter().any(|s| {
            s.typ() == Some(SignatureType::KeyRevocation) && s.verify_key(primary).is_ok()
        });
    let created = time_of(primary.created_at());
    let (signs, unsupported) = flags_sign(sig, primary);
    Some(Standing {
        fingerprint: primary.fingerprint(),
        subkey: None,
        created,
        expires_at: expiry(created, sig),
        revoked,
        signs,
        unsupported,
    })
}

fn subkey_standing(
    primary: &packet::PublicKey,
    sub: &SignedPublicSubKey,
    index: usize,
) -> Option<Standing> {
    let valid = |typ: SignatureType| {
        sub.signatures
            .iter()
            .filter(move |s| s.typ() == Some(typ))
            .filter(|s| s.verify_subkey_binding(primary, &sub.key).is_ok())
    };
    let binding = newest(valid(SignatureType::SubkeyBinding))?;
    let revoked = valid(SignatureType::SubkeyRevocation).next().is_some();
    let created = time_of(sub.key.created_at());
    let (flags, unsupported) = flags_sign(binding, &sub.key);
    // A signing subkey must sign the primary key back, or anyone could bind our subkey to theirs.
    // One of an algorithm rpgp lacks cannot be checked; it stays a candidate only to be refused
    // by name.
    let cross_certified = unsupported.is_some()
        || binding
            .embedded_signature()
            .is_some_and(|back| back.verify_primary_key_binding(&sub.key, primary).is_ok());
    Some(Standing {
        fingerprint: sub.key.fingerprint(),
        subkey: Some(index),
        created,
        expires_at: expiry(created, binding),
        revoked,
        signs: flags && cross_certified,
        unsupported,
    })
}

impl Certificate {
    pub fn read(cert: &SignedPublicKey) -> Self {
        Self {
            primary: primary_standing(cert),
            subkeys: cert
                .public_subkeys
                .iter()
                .enumerate()
                .filter_map(|(i, s)| subkey_standing(&cert.primary_key, s, i))
                .collect(),
        }
    }
}
