//! The cleartext signature framework (RFC 9580 §7) as gpg uses it for Spack's manifests:
//! signing a text into a clearsigned message and reading one back.
//!
//! Framing, as `gpg --clearsign` writes it and rpgp's `CleartextSignedMessage` serializes it:
//! `-----BEGIN PGP SIGNED MESSAGE-----`, `Hash: SHA512`, an empty line, the dash-escaped text, a
//! line break, then the armored signature (`-----BEGIN PGP SIGNATURE-----`, an empty line, base64
//! in 64-column lines, `=` and the CRC-24, `-----END PGP SIGNATURE-----` and a line break).
//!
//! The signed text is the lines of the text joined by CR LF, each without trailing spaces and
//! tabs, and without the line break before the signature. gpg reads its input file as lines, so a
//! text with or without one final `\n` gives the same message; this module does the same. Spack
//! writes its manifests without a final newline and reads them back with a regular expression
//! that keeps that line break (and any dash escapes) before parsing the JSON, which a JSON parser
//! does not mind; no line of a manifest starts with `-`.
//!
//! For such text the message is byte for byte what gpg 2.2 writes with the same key at the same
//! second (a test checks it, RSA and Ed25519 signatures being deterministic). One difference is
//! known and harmless: gpg also dash-escapes lines that start with `From `, rpgp does not; either
//! verifies everywhere, and no manifest line starts so.

use chrono::{DateTime, Utc};
use pgp::composed::{ArmorOptions, CleartextSignedMessage};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{
    PacketHeader, PacketTrait as _, Signature, SignatureConfig, SignatureType, SignatureVersion,
    Subpacket, SubpacketData,
};
use pgp::types::{
    KeyDetails, KeyVersion, PacketHeaderVersion, Password, Tag, Timestamp, VerifyingKey,
};

use super::cert::hex_of;
use super::key::{Component, PublicKey, Signer, SigningKey};
use super::{SignError, VerifyError};

const SIGNED_MESSAGE_HEADER: &[u8] = b"-----BEGIN PGP SIGNED MESSAGE-----";

/// What the signature hashes: the lines joined by CR LF, trailing spaces and tabs cut.
fn hashed_text(body: &str) -> String {
    body.split('\n')
        .map(|line| line.trim_end_matches([' ', '\t']))
        .collect::<Vec<_>>()
        .join("\r\n")
}

fn timestamp(now: DateTime<Utc>) -> Timestamp {
    Timestamp::from_secs(u32::try_from(now.timestamp().max(0)).unwrap_or(u32::MAX))
}

/// A text signature (type 0x01) over `hashed`, with the subpackets gpg writes: the issuer's
/// fingerprint and the creation time hashed, the issuer's key id unhashed (v4 only).
fn sign_text<K: pgp::types::SigningKey>(
    key: &K,
    hashed: &str,
    now: DateTime<Utc>,
) -> pgp::errors::Result<Signature> {
    let mut config = if key.version() == KeyVersion::V6 {
        SignatureConfig::v6(
            rand::thread_rng(),
            SignatureType::Text,
            key.algorithm(),
            HashAlgorithm::Sha512,
        )?
    } else {
        SignatureConfig::v4(SignatureType::Text, key.algorithm(), HashAlgorithm::Sha512)
    };
    config.hashed_subpackets = vec![
        Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint()))?,
        Subpacket::regular(SubpacketData::SignatureCreationTime(timestamp(now)))?,
    ];
    if key.version() == KeyVersion::V4 {
        config.unhashed_subpackets = vec![Subpacket::regular(SubpacketData::IssuerKeyId(
            key.legacy_key_id(),
        ))?];
    }
    // The secret was decrypted when the key was read.
    legacy_format(config.sign(key, &Password::empty(), hashed.as_bytes())?)
}

/// gpg 2.2 writes a v4 signature packet in the legacy packet format (`0x88`/`0x89` headers, as in
/// Spack's fixture), rpgp in the `OpenPGP` format (`0xc2`). Both are valid; the legacy header makes
/// the whole message byte for byte what gpg writes. A v6 signature keeps the `OpenPGP` format,
/// the only one RFC 9580 allows for it.
fn legacy_format(sig: Signature) -> pgp::errors::Result<Signature> {
    let (Some(config), Some(signed_hash_value), Some(bytes)) =
        (sig.config(), sig.signed_hash_value(), sig.signature())
    else {
        return Ok(sig);
    };
    if config.version() != SignatureVersion::V4 {
        return Ok(sig);
    }
    let header = PacketHeader::from_parts(
        PacketHeaderVersion::Old,
        Tag::Signature,
        sig.packet_header().packet_length(),
    )?;
    Ok(Signature::v4(
        header,
        config.typ,
        config.pub_alg,
        config.hash_alg,
        signed_hash_value,
        bytes.clone(),
        config.hashed_subpackets.clone(),
        config.unhashed_subpackets.clone(),
    ))
}

impl SigningKey {
    /// Clearsigns `text`: an `OpenPGP` cleartext-signed message with `Hash: SHA512`, framed as
    /// `gpg --clearsign` frames it. One final `\n` of `text` is framing, not signed text (as in
    /// gpg); a `\r` anywhere is refused.
    pub fn clearsign(&self, text: &str) -> Result<Vec<u8>, SignError> {
        self.clearsign_at(text, Utc::now())
    }

    /// [`SigningKey::clearsign`] with the signature's creation time `now`.
    pub fn clearsign_at(&self, text: &str, now: DateTime<Utc>) -> Result<Vec<u8>, SignError> {
        if let Some(expired_at) = self.expires_at.filter(|at| *at <= now) {
            return Err(SignError::Expired {
                fingerprint: self.signer_fingerprint.clone(),
                expired_at,
            });
        }
        if text.contains('\r') {
            return Err(SignError::CarriageReturn);
        }
        let failed = |source| SignError::Sign {
            fingerprint: self.signer_fingerprint.clone(),
            source,
        };
        let body = text.strip_suffix('\n').unwrap_or(text);
        let hashed = hashed_text(body);
        let signature = match &self.signer {
            Signer::Primary(k) => sign_text(k, &hashed, now),
            Signer::Subkey(k) => sign_text(k, &hashed, now),
        }
        .map_err(failed)?;
        // rpgp frames the message (dash escapes, the Hash header from the signature's hash);
        // the signature over the text is ours.
        let message =
            CleartextSignedMessage::new_many(body, |_| Ok(vec![signature])).map_err(failed)?;
        // What rpgp reads back must be what we signed: check before anyone publishes it.
        match &self.signer {
            Signer::Primary(k) => message.verify(k.public_key()).map(|_| ()),
            Signer::Subkey(k) => message.verify(k.public_key()).map(|_| ()),
        }
        .map_err(failed)?;
        message
            .to_armored_bytes(ArmorOptions::default())
            .map_err(failed)
    }
}

impl Component {
    fn fingerprint(&self) -> String {
        match self {
            Component::Primary(k) => hex_of(&k.fingerprint()),
            Component::Subkey(k) => hex_of(&k.fingerprint()),
        }
    }

    /// Whether `sig` names this component as its issuer, by fingerprint or key id.
    fn issued(&self, sig: &Signature) -> bool {
        fn named(k: &impl KeyDetails, sig: &Signature) -> bool {
            sig.issuer_fingerprint().contains(&&k.fingerprint())
                || sig.issuer_key_id().contains(&&k.legacy_key_id())
        }
        match self {
            Component::Primary(k) => named(k, sig),
            Component::Subkey(k) => named(k, sig),
        }
    }

    fn check(&self, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
        fn check(k: &impl VerifyingKey, sig: &Signature, data: &[u8]) -> pgp::errors::Result<()> {
            sig.verify(k, data)
        }
        match self {
            Component::Primary(k) => check(k, sig, data),
            Component::Subkey(k) => check(k, sig, data),
        }
    }
}

/// The issuers a signature names, for an error message: its fingerprints, and the key ids that
/// are not the end of one of them.
fn issuers(sig: &Signature) -> Vec<String> {
    let fingerprints: Vec<String> = sig.issuer_fingerprint().into_iter().map(hex_of).collect();
    let key_ids: Vec<String> = sig
        .issuer_key_id()
        .into_iter()
        .map(|id| hex::encode_upper(id.as_ref()))
        .filter(|id| !fingerprints.iter().any(|f| f.ends_with(id.as_str())))
        .collect();
    fingerprints.into_iter().chain(key_ids).collect()
}

/// Whether `bytes` are a clearsigned message (they start as `gpg --clearsign` output does).
pub fn is_clearsigned(bytes: &[u8]) -> bool {
    bytes.starts_with(SIGNED_MESSAGE_HEADER)
}

/// The text a clearsigned message carries, as [`PublicKey::verify_clearsigned`] returns it, but
/// without checking any signature: for reading what a manifest names when no key is at hand.
pub fn signed_text(signed: &[u8]) -> Result<String, VerifyError> {
    Ok(parse(signed)?.signed_text().replace("\r\n", "\n"))
}

/// Reads a clearsigned message, signatures unchecked.
fn parse(signed: &[u8]) -> Result<CleartextSignedMessage, VerifyError> {
    if !is_clearsigned(signed) {
        return Err(VerifyError::NotClearsigned);
    }
    let text =
        std::str::from_utf8(signed).map_err(|e| VerifyError::Malformed { source: e.into() })?;
    let (message, _headers) = CleartextSignedMessage::from_string(text)
        .map_err(|source| VerifyError::Malformed { source })?;
    Ok(message)
}

impl PublicKey {
    /// Checks a clearsigned message against this key and returns the text its signature covers:
    /// dash escapes undone, trailing spaces and tabs cut, `\n` line ends, no final line break
    /// (for a Spack manifest, the manifest JSON exactly as it would be unsigned). Expiry and
    /// revocation are not checked: a genuine signature stays genuine.
    pub fn verify_clearsigned(&self, signed: &[u8]) -> Result<String, VerifyError> {
        let message = parse(signed)?;
        if message.signatures().is_empty() {
            return Err(VerifyError::NoSignature);
        }
        let signed_text = message.signed_text();
        let mut bad = None;
        let mut named = Vec::new();
        for sig in message.signatures() {
            let anonymous = sig.issuer_fingerprint().is_empty() && sig.issuer_key_id().is_empty();
            named.extend(issuers(sig));
            for component in self.verifiers.iter().filter(|c| anonymous || c.issued(sig)) {
                match component.check(sig, signed_text.as_bytes()) {
                    Ok(()) => return Ok(signed_text.replace("\r\n", "\n")),
                    // rpgp's own message (a hash prefix assertion) adds nothing for a reader.
                    Err(_) => bad = Some(component.fingerprint()),
                }
            }
        }
        if let Some(signer) = bad {
            return Err(VerifyError::BadSignature { signer });
        }
        named.dedup();
        Err(VerifyError::OtherKey {
            fingerprint: self.fingerprint.clone(),
            issuers: if named.is_empty() {
                "an unnamed key".to_owned()
            } else {
                named.join(", ")
            },
        })
    }
}
