//! Spec blobs made with one reused compressor, and kept compressed. A run holds every new
//! spec from the moment its config is read until its manifest is recorded; held as its spec
//! blob (about a fifth of the JSON) the spec costs far less memory, and the JSON comes back,
//! byte for byte, when the ledger needs it. A gzip compressor's state is a few hundred KiB:
//! made anew for each of thousands of small specs, it left the allocator's heap fragmented,
//! so [`SpecBlobMaker`] keeps one and resets it.

use flate2::{Compress, Compression, Crc, Decompress, FlushCompress, FlushDecompress, Status};

use super::Error;
use crate::model::Digest;

/// What Spack writes around the spec's JSON in a spec blob (layout version 2, as Spack 1.1
/// writes into its own v3 mirrors), and the gzip level it uses.
const HEAD: &[u8] = br#"{"spec":"#;
const TAIL: &[u8] = br#","buildcache_layout_version":2}"#;
const LEVEL: u32 = 6;

/// The gzip header `flate2`'s `GzEncoder` writes at level 6: no name, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// A spec blob: the gzip of `{"spec":<spec JSON verbatim>,"buildcache_layout_version":2}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpecBlob {
    bytes: Vec<u8>,
    digest: Digest,
    json_len: usize,
}

impl SpecBlob {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The length of the spec JSON inside.
    pub fn json_len(&self) -> usize {
        self.json_len
    }
}

/// Makes spec blobs, byte-identical to `GzEncoder` at level 6 over the whole text, and reads
/// their JSON back, with one compressor and one decompressor reset between blobs.
#[derive(Debug, Default)]
pub struct SpecBlobMaker {
    deflate: Option<Compress>,
    inflate: Option<Decompress>,
}

impl SpecBlobMaker {
    /// The spec blob of `spec_json` (a config's `spec` value, verbatim).
    ///
    /// # Panics
    /// Never: compressing into memory cannot fail, and the output grows as needed.
    pub fn make(&mut self, spec_json: &str) -> SpecBlob {
        let deflate = self
            .deflate
            .get_or_insert_with(|| Compress::new(Compression::new(LEVEL), false));
        deflate.reset();
        let parts = [HEAD, spec_json.as_bytes(), TAIL];
        let mut crc = Crc::new();
        let mut bytes = Vec::with_capacity(GZIP_HEADER.len() + spec_json.len() / 3 + 64);
        bytes.extend_from_slice(&GZIP_HEADER);
        for (i, part) in parts.iter().enumerate() {
            crc.update(part);
            let flush = if i + 1 == parts.len() {
                FlushCompress::Finish
            } else {
                FlushCompress::None
            };
            let mut input = *part;
            loop {
                if bytes.capacity() - bytes.len() < 64 {
                    bytes.reserve(bytes.capacity().max(256));
                }
                let before = deflate.total_in();
                let status = deflate
                    .compress_vec(input, &mut bytes, flush)
                    .expect("deflate into memory with room to write cannot fail");
                let used = usize::try_from(deflate.total_in() - before)
                    .expect("no more than the input was read");
                input = &input[used..];
                match (status, flush) {
                    (Status::StreamEnd, _) => break,
                    (_, FlushCompress::None) if input.is_empty() => break,
                    _ => {}
                }
            }
        }
        bytes.extend_from_slice(&crc.sum().to_le_bytes());
        bytes.extend_from_slice(&crc.amount().to_le_bytes());
        bytes.shrink_to_fit();
        SpecBlob {
            digest: Digest::of(&bytes),
            bytes,
            json_len: spec_json.len(),
        }
    }

    /// The JSON of a spec blob made by [`Self::make`], checked against the blob's own length
    /// and CRC.
    pub fn spec_json(&mut self, blob: &SpecBlob) -> Result<String, Error> {
        self.json_of(&blob.bytes, &blob.digest, blob.json_len)
    }

    /// [`Self::spec_json`] of a blob's bytes read back from where it was put, with the
    /// digest and JSON length its [`SpecBlob`] had.
    pub fn json_of(
        &mut self,
        bytes: &[u8],
        digest: &Digest,
        json_len: usize,
    ) -> Result<String, Error> {
        let bad = |reason: &str| Error::SpecBlob {
            digest: digest.clone(),
            reason: reason.to_owned(),
        };
        let body = bytes
            .strip_prefix(&GZIP_HEADER)
            .ok_or_else(|| bad("no gzip header"))?;
        let (deflated, trailer) = body
            .split_last_chunk::<8>()
            .ok_or_else(|| bad("truncated"))?;
        let want = HEAD.len() + json_len + TAIL.len();
        let inflate = self.inflate.get_or_insert_with(|| Decompress::new(false));
        inflate.reset(false);
        let mut text = Vec::with_capacity(want);
        let status = inflate
            .decompress_vec(deflated, &mut text, FlushDecompress::Finish)
            .map_err(|e| bad(&e.to_string()))?;
        let mut crc = Crc::new();
        crc.update(&text);
        let (sum, amount) = trailer.split_at(4);
        if status != Status::StreamEnd
            || text.len() != want
            || sum != crc.sum().to_le_bytes()
            || amount != crc.amount().to_le_bytes()
        {
            return Err(bad("its length or checksum does not match"));
        }
        let json = text
            .strip_prefix(HEAD)
            .and_then(|t| t.strip_suffix(TAIL))
            .ok_or_else(|| bad("not a spec in its wrapper"))?;
        String::from_utf8(json.to_vec()).map_err(|_| bad("not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;

    /// What Spack's layout needs, made the plain way: one `GzEncoder` over the whole text.
    fn reference(spec_json: &str) -> Vec<u8> {
        let text = format!(r#"{{"spec":{spec_json},"buildcache_layout_version":2}}"#);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), Compression::new(LEVEL));
        gz.write_all(text.as_bytes()).unwrap();
        gz.finish().unwrap()
    }

    fn samples() -> Vec<String> {
        let mut out = vec![
            String::from("{}"),
            String::from(r#"{"_meta":{"version":5},"nodes":[]}"#),
        ];
        // Large and incompressible-ish, so the compressor needs more output room mid-way.
        let mut rng = fastrand::Rng::with_seed(7);
        for len in [1_000, 40_000, 300_000] {
            let noise: String = (0..len).map(|_| rng.alphanumeric()).collect();
            out.push(format!(r#"{{"nodes":[{{"name":"{noise}"}}]}}"#));
        }
        out
    }

    #[test]
    fn blobs_match_a_fresh_gzip_encoder_byte_for_byte_with_the_compressor_reused() {
        let mut maker = SpecBlobMaker::default();
        for _ in 0..2 {
            for json in samples() {
                let blob = maker.make(&json);
                assert_eq!(blob.bytes(), reference(&json).as_slice(), "{}", json.len());
                assert_eq!(blob.digest(), &Digest::of(blob.bytes()));
                assert_eq!(blob.json_len(), json.len());
            }
        }
    }

    #[test]
    fn the_json_comes_back_verbatim() {
        let mut maker = SpecBlobMaker::default();
        for json in samples() {
            let blob = maker.make(&json);
            assert_eq!(maker.spec_json(&blob).unwrap(), json);
        }
    }

    #[test]
    fn a_damaged_blob_is_an_error_naming_its_digest() {
        let mut blob = SpecBlobMaker::default().make("{}");
        let n = blob.bytes.len();
        blob.bytes[n / 2] ^= 0xff;
        let err = SpecBlobMaker::default()
            .spec_json(&blob)
            .unwrap_err()
            .to_string();
        assert!(err.contains(blob.digest().as_str()), "{err}");
    }
}
