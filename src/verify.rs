//! OpenPGP verification of kernel.org sums files and tarball signatures.
//!
//! Trust starts from a pinned *primary* fingerprint: [`Keyring::pinned`] finds the key,
//! checks its self-signatures, revocations and expiry, and works out which of its
//! components may sign data (the primary if marked for signing, and every subkey with a
//! valid binding signature, back-signature and signing flag that is neither revoked nor
//! expired). [`verify_sums`] checks a cleartext-signed `sha256sums.asc`;
//! [`DetachedVerifier`] checks a `.tar.sign` while the tar streams through it.
//!
//! Data signatures hashed with MD5, SHA-1 or RIPEMD-160 are refused. Self-signatures
//! may use SHA-1 (kernel.org's autosigner key from 2013 has only a SHA-1 self-signature,
//! and GnuPG accepts it); MD5 self-signatures are ignored.

use std::collections::HashMap;
use std::io::{self, Cursor, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use pgp::composed::{Deserializable, DetachedSignature, SignedPublicKey};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{
    PublicKey, PublicSubkey, Signature, SignatureType, SignatureVersion, SignatureVersionSpecific,
    SubpacketData,
};
use pgp::types::{KeyDetails, Tag, VerifyingKey};
use sha2::digest::DynDigest;

use crate::error::{Error, IoContext, Result};

/// Tolerated clock skew for signatures that claim to be made in the future (seconds).
const CLOCK_SKEW: u64 = 24 * 60 * 60;

/// A set of OpenPGP public keys (from --keyring files or fetched key files).
#[derive(Clone, Debug, Default)]
pub struct Keyring {
    keys: Vec<SignedPublicKey>,
}

impl Keyring {
    /// An empty keyring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Read a key file: ASCII-armored (one or several blocks) or binary transferable
    /// public keys, possibly concatenated.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).ctx(|| format!("reading {}", path.display()))?;
        let keys = parse_keys(&bytes).map_err(|m| Error::input(path, m))?;
        Ok(Keyring { keys })
    }

    /// Parse key material received from `origin` (a file name or URL, for messages).
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let keys = parse_keys(bytes).map_err(|m| Error::verify(origin, m))?;
        Ok(Keyring { keys })
    }

    /// Add every key of `other`.
    pub fn extend(&mut self, other: Keyring) {
        self.keys.extend(other.keys);
    }

    /// Whether the keyring holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key with this primary fingerprint is present (valid or not).
    pub fn contains(&self, fingerprint: &str) -> bool {
        let want = fingerprint.trim().to_ascii_uppercase();
        self.keys.iter().any(|k| hex_fpr(&k.primary_key) == want)
    }

    /// The key whose PRIMARY fingerprint equals `fingerprint` (40 hex digits, any case,
    /// spaces ignored), validated: self-signatures verify, the primary is not revoked and
    /// not expired now. Subkey fingerprints never match a pin.
    pub fn pinned(&self, fingerprint: &str) -> Result<PinnedKey> {
        let want: String = fingerprint
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_uppercase();
        if !(want.len() == 40 || want.len() == 64) || !want.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::verify(
                fingerprint,
                "not an OpenPGP fingerprint (40 hex digits expected)",
            ));
        }
        let now = now_secs();
        let mut first_err = None;
        for key in &self.keys {
            if hex_fpr(&key.primary_key) != want {
                continue;
            }
            match validate_key(key, now) {
                Ok(pinned) => return Ok(pinned),
                Err(m) => {
                    first_err.get_or_insert(m);
                }
            }
        }
        Err(Error::verify(
            want.clone(),
            first_err.unwrap_or_else(|| {
                format!("no key with primary fingerprint {want} in the keyring")
            }),
        ))
    }
}

/// A validated public key whose primary fingerprint matched a pin.
#[derive(Clone, Debug)]
pub struct PinnedKey {
    fingerprint: String,
    user_id: Option<String>,
    primary: PublicKey,
    primary_can_sign: bool,
    subkeys: Vec<SubkeyState>,
}

/// A subkey of a pinned key and whether it may sign data.
#[derive(Clone, Debug)]
struct SubkeyState {
    key: PublicSubkey,
    fingerprint: String,
    /// `None` if usable for signing, otherwise why not ("is revoked", ...).
    unusable: Option<String>,
}

impl PinnedKey {
    /// The primary fingerprint, 40 uppercase hex digits.
    pub fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }

    /// The primary user id, if the key has one.
    pub fn user_id(&self) -> Option<String> {
        self.user_id.clone()
    }

    /// Fingerprints of the subkeys that may sign data (uppercase hex).
    pub fn signing_subkeys(&self) -> impl Iterator<Item = &str> {
        self.subkeys
            .iter()
            .filter(|s| s.unusable.is_none())
            .map(|s| s.fingerprint.as_str())
    }

    /// The component of this key that issued `sig`, if it may sign data.
    fn signer_for(&self, sig: &Signature) -> std::result::Result<SignerKey, Problem> {
        let fprs = sig.issuer_fingerprint();
        let ids = sig.issuer_key_id();
        if fprs.is_empty() && ids.is_empty() {
            return Err(Problem::Foreign("signature names no issuer key".into()));
        }
        let matches = |fpr: pgp::types::Fingerprint, id: pgp::types::KeyId| {
            fprs.iter().any(|f| **f == fpr) || ids.iter().any(|i| **i == id)
        };
        if matches(self.primary.fingerprint(), self.primary.legacy_key_id()) {
            if !self.primary_can_sign {
                return Err(Problem::Own(format!(
                    "signature by primary key {}, which is not marked for signing",
                    self.fingerprint
                )));
            }
            return Ok(SignerKey::Primary(self.primary.clone()));
        }
        // A usable subkey wins over an unusable one with a colliding key id.
        let mut unusable = None;
        for sub in &self.subkeys {
            if !matches(sub.key.fingerprint(), sub.key.legacy_key_id()) {
                continue;
            }
            match &sub.unusable {
                None => return Ok(SignerKey::Subkey(sub.key.clone())),
                Some(why) => {
                    unusable.get_or_insert(format!(
                        "signature by subkey {} of {}, which {why}",
                        sub.fingerprint, self.fingerprint
                    ));
                }
            }
        }
        if let Some(m) = unusable {
            return Err(Problem::Own(m));
        }
        let issuer = fprs
            .first()
            .map(|f| format!("{f:X}"))
            .or_else(|| ids.first().map(|i| i.to_string().to_ascii_uppercase()))
            .unwrap_or_default();
        Err(Problem::Foreign(format!(
            "signature by key {issuer} which is not the pinned key {} or one of its subkeys",
            self.fingerprint
        )))
    }

    /// Find the signer of `sig` and check everything about the signature that does not
    /// depend on the signed data.
    fn prepare(
        &self,
        sig: &Signature,
        typ: SignatureType,
    ) -> std::result::Result<SignerKey, Problem> {
        let signer = self.signer_for(sig)?;
        check_data_sig(sig, typ, &signer, now_secs()).map_err(Problem::Own)?;
        Ok(signer)
    }
}

/// Why a signature was not accepted.
enum Problem {
    /// The signature is not by the pinned key at all.
    Foreign(String),
    /// The signature claims the pinned key but is unacceptable or bad.
    Own(String),
}

/// Keep the most telling problem: one about the pinned key beats a foreign signer.
fn pick(best: &mut Option<Problem>, p: Problem) {
    match (best.as_ref(), &p) {
        (None, _) | (Some(Problem::Foreign(_)), Problem::Own(_)) => *best = Some(p),
        _ => {}
    }
}

fn problem_message(p: Option<Problem>) -> String {
    match p {
        Some(Problem::Foreign(m) | Problem::Own(m)) => m,
        None => "no signature found".into(),
    }
}

/// The key component that made a data signature.
#[derive(Clone, Debug)]
enum SignerKey {
    Primary(PublicKey),
    Subkey(PublicSubkey),
}

impl SignerKey {
    fn created_at(&self) -> u64 {
        match self {
            SignerKey::Primary(k) => u64::from(k.created_at().as_secs()),
            SignerKey::Subkey(k) => u64::from(k.created_at().as_secs()),
        }
    }

    fn verify(&self, hash: HashAlgorithm, digest: &[u8], sig: &pgp::types::SignatureBytes) -> bool {
        match self {
            SignerKey::Primary(k) => k.verify(hash, digest, sig).is_ok(),
            SignerKey::Subkey(k) => k.verify(hash, digest, sig).is_ok(),
        }
    }

    fn describe(&self) -> String {
        match self {
            SignerKey::Primary(k) => format!("key {:X}", k.fingerprint()),
            SignerKey::Subkey(k) => format!("subkey {:X}", k.fingerprint()),
        }
    }
}

/// A verified `sha256sums.asc`.
#[derive(Clone, Debug)]
pub struct SumsFile {
    entries: Vec<(String, String)>,
    index: HashMap<String, usize>,
    signer: String,
}

impl SumsFile {
    /// The lowercase hex SHA-256 listed for `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.index.get(name).map(|&i| self.entries[i].1.as_str())
    }

    /// The file names, in file order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// The number of listed files.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no file is listed.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The primary fingerprint of the key that signed the file.
    pub fn signer(&self) -> &str {
        &self.signer
    }
}

/// Verify a cleartext-signed sums file (`-----BEGIN PGP SIGNED MESSAGE-----`, dash-escaped
/// text, lines `<64 hex>  <name>`) signed by `key` (its primary or a valid signing subkey).
///
/// Only lines inside the signed text count; anything before the `BEGIN` line or after the
/// signature is ignored. Blank lines are skipped; any other malformed line is an error
/// naming its line number.
pub fn verify_sums(text: &[u8], key: &PinnedKey, origin: &str) -> Result<SumsFile> {
    let err = |m: String| Error::verify(origin, m);
    if text.len() as u64 > MAX_SUMS_FILE {
        return Err(err(format!(
            "{} bytes is more than the {} MiB a sums file may have",
            text.len(),
            MAX_SUMS_FILE >> 20
        )));
    }
    let text = std::str::from_utf8(text).map_err(|_| err("not UTF-8 text".into()))?;
    let block = locate_cleartext(text).map_err(err)?;
    let signatures = parse_detached(block.armor.as_bytes())
        .map_err(|m| err(format!("malformed cleartext signature: {m}")))?;
    let signed = signed_text(block.body);

    let mut best = None;
    let mut signer = None;
    for sig in &signatures {
        match check_cleartext_sig(sig, key, signed.as_bytes(), &block.hashes) {
            Ok(()) => {
                signer = Some(key.fingerprint());
                break;
            }
            Err(p) => pick(&mut best, p),
        }
    }
    let Some(signer) = signer else {
        return Err(err(problem_message(best)));
    };

    let mut entries: Vec<(String, String)> = Vec::new();
    let mut index = HashMap::new();
    for (i, line) in signed.split("\r\n").enumerate() {
        let line_no = block.first_body_line + i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let (hash, name) = parse_sums_line(line)
            .ok_or_else(|| err(format!("line {line_no}: not `<sha256>  <file name>`")))?;
        match index.get(name) {
            Some(&j) => {
                let (_, earlier): &(String, String) = &entries[j];
                if *earlier != hash {
                    return Err(err(format!(
                        "line {line_no}: {name} is listed twice with different hashes"
                    )));
                }
            }
            None => {
                index.insert(name.to_string(), entries.len());
                entries.push((name.to_string(), hash));
            }
        }
    }
    Ok(SumsFile {
        entries,
        index,
        signer,
    })
}

fn check_cleartext_sig(
    sig: &Signature,
    key: &PinnedKey,
    signed: &[u8],
    announced: &[String],
) -> std::result::Result<(), Problem> {
    let signer = key.prepare(sig, SignatureType::Text)?;
    let alg = sig.hash_alg().unwrap_or(HashAlgorithm::None);
    if !announced.is_empty()
        && !announced
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&alg.to_string()))
    {
        return Err(Problem::Own(format!(
            "signature uses {alg} but the Hash: header announces {}",
            announced.join(", ")
        )));
    }
    let mut hasher = start_hash(sig).map_err(Problem::Own)?;
    // `signed_text()` is already dash-unescaped and CRLF-normalized, as text signatures hash.
    hasher.update(signed);
    finish_hash(sig, hasher, &signer).map_err(Problem::Own)
}

/// The largest sums file korgpkg reads (kernel.org's are a few KiB).
pub const MAX_SUMS_FILE: u64 = 4 << 20;

/// The cleartext-signed block inside a larger text.
#[derive(Debug)]
struct CleartextBlock<'a> {
    /// The dash-escaped signed lines, each with its line break (the last one's break
    /// is not signed).
    body: &'a str,
    /// From the `BEGIN PGP SIGNATURE` line through the `END PGP SIGNATURE` line.
    armor: &'a str,
    /// Values of the `Hash:` armor headers.
    hashes: Vec<String>,
    /// 0-based line number (in the whole file) of the first signed line.
    first_body_line: usize,
}

/// Find the cleartext-signed message in `text` in one pass over its lines.
fn locate_cleartext(text: &str) -> std::result::Result<CleartextBlock<'_>, String> {
    const BEGIN: &str = "-----BEGIN PGP SIGNED MESSAGE-----";
    const END: &str = "-----END PGP SIGNATURE-----";
    let mut start = None;
    let mut begin_line = 0;
    let mut hashes = Vec::new();
    let mut in_headers = false;
    let mut first_body_line = 0;
    let mut body_start = 0;
    let mut armor_start = None;
    let mut pos = 0;
    for (no, raw) in text.split_inclusive('\n').enumerate() {
        let line = raw.trim_end();
        match start {
            None if line == BEGIN => {
                start = Some(pos);
                begin_line = no;
                in_headers = true;
            }
            None => {}
            Some(_) => {
                if in_headers {
                    if line.is_empty() {
                        in_headers = false;
                        first_body_line = no + 1;
                        body_start = pos + raw.len();
                    } else if let Some(v) = line.strip_prefix("Hash:") {
                        hashes.extend(
                            v.split(',')
                                .map(|h| h.trim().to_string())
                                .filter(|h| !h.is_empty()),
                        );
                    } else {
                        return Err(format!(
                            "malformed cleartext signature: line {}: unexpected armor header",
                            no + 1
                        ));
                    }
                } else if armor_start.is_none() && raw.starts_with("-----") {
                    // Signed lines that start with a dash are escaped (`- `), so the
                    // first line starting with five dashes ends the signed text.
                    armor_start = Some(pos);
                }
                if line == END && armor_start.is_some() {
                    let end = pos + raw.len();
                    if text[end..].lines().any(|l| l.trim_end() == BEGIN) {
                        return Err("more than one signed message".into());
                    }
                    let armor_start = armor_start.unwrap_or(end);
                    return Ok(CleartextBlock {
                        body: &text[body_start..armor_start],
                        armor: &text[armor_start..end],
                        hashes,
                        first_body_line,
                    });
                }
            }
        }
        pos += raw.len();
    }
    Err(match start {
        None => format!("no `{BEGIN}` line"),
        Some(_) => format!(
            "signed message from line {} has no `{END}` line",
            begin_line + 1
        ),
    })
}

/// The text a cleartext signature covers (RFC 9580, 7.1): the signed lines without
/// their dash escapes and trailing spaces and tabs, joined with CR LF, without the line
/// break that precedes the signature.
fn signed_text(body: &str) -> String {
    let mut out = String::with_capacity(body.len() + body.len() / 32);
    for (i, line) in body.split_inclusive('\n').enumerate() {
        let content = line.strip_suffix('\n').unwrap_or(line);
        let content = content.strip_suffix('\r').unwrap_or(content);
        let content = content.strip_prefix("- ").unwrap_or(content);
        if i > 0 {
            out.push_str("\r\n");
        }
        out.push_str(content.trim_end_matches([' ', '\t']));
    }
    out
}

/// Parse `<64 hex>  <name>` (or `<64 hex> *<name>`); returns the lowercase hash.
fn parse_sums_line(line: &str) -> Option<(String, &str)> {
    let hash = line.get(..64)?;
    if !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let rest = line.get(64..)?;
    let name = rest
        .strip_prefix("  ")
        .or_else(|| rest.strip_prefix(" *"))?;
    if name.is_empty() || name.trim() != name || name.chars().any(char::is_control) {
        return None;
    }
    Some((hash.to_ascii_lowercase(), name))
}

/// Streaming verifier for a detached signature (`.tar.sign`, armored or binary) over the
/// data written to it. Memory stays bounded: data is hashed as it arrives, never kept.
pub struct DetachedVerifier {
    origin: String,
    fingerprint: String,
    candidates: Vec<Candidate>,
    written: u64,
}

/// One signature by the pinned key and its running hash.
struct Candidate {
    sig: Signature,
    signer: SignerKey,
    hasher: Box<dyn DynDigest + Send>,
}

impl std::fmt::Debug for DetachedVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DetachedVerifier")
            .field("origin", &self.origin)
            .field("fingerprint", &self.fingerprint)
            .field("signatures", &self.candidates.len())
            .field("written", &self.written)
            .finish()
    }
}

impl DetachedVerifier {
    /// Parse `signature` and check up front that it is a binary-document signature by
    /// `key` (primary or valid signing subkey) with an acceptable hash algorithm.
    pub fn new(signature: &[u8], key: &PinnedKey, origin: &str) -> Result<Self> {
        let sigs = parse_detached(signature).map_err(|m| Error::verify(origin, m))?;
        let mut best = None;
        let mut candidates = Vec::new();
        for sig in sigs {
            let prepared = key
                .prepare(&sig, SignatureType::Binary)
                .and_then(|signer| start_hash(&sig).map(|h| (signer, h)).map_err(Problem::Own));
            match prepared {
                Ok((signer, hasher)) => candidates.push(Candidate {
                    sig,
                    signer,
                    hasher,
                }),
                Err(p) => pick(&mut best, p),
            }
        }
        if candidates.is_empty() {
            return Err(Error::verify(origin, problem_message(best)));
        }
        Ok(DetachedVerifier {
            origin: origin.to_string(),
            fingerprint: key.fingerprint(),
            candidates,
            written: 0,
        })
    }

    /// `Ok(primary fingerprint of the signer)` if the signature is good over everything
    /// written.
    pub fn finish(self) -> Result<String> {
        let mut first_err = None;
        for c in self.candidates {
            match finish_hash(&c.sig, c.hasher, &c.signer) {
                Ok(()) => return Ok(self.fingerprint),
                Err(m) => {
                    first_err.get_or_insert(m);
                }
            }
        }
        Err(Error::verify(
            self.origin,
            format!(
                "{} (over {} bytes)",
                first_err.unwrap_or_else(|| "no signature".into()),
                self.written
            ),
        ))
    }
}

impl Write for DetachedVerifier {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for c in &mut self.candidates {
            c.hasher.update(buf);
        }
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn parse_detached(bytes: &[u8]) -> std::result::Result<Vec<Signature>, String> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    if start == bytes.len() {
        return Err("empty signature file".into());
    }
    let (iter, _) = DetachedSignature::from_reader_many(Cursor::new(&bytes[start..]))
        .map_err(|e| format!("malformed signature: {e}"))?;
    let mut sigs = Vec::new();
    for s in iter {
        sigs.push(
            s.map_err(|e| format!("malformed signature: {e}"))?
                .signature,
        );
    }
    if sigs.is_empty() {
        return Err("no signature packet found".into());
    }
    Ok(sigs)
}

/// Checks on a data signature that do not need the data.
fn check_data_sig(
    sig: &Signature,
    typ: SignatureType,
    signer: &SignerKey,
    now: u64,
) -> std::result::Result<(), String> {
    if !matches!(sig.version(), SignatureVersion::V4 | SignatureVersion::V6) {
        return Err(format!("unsupported signature version {:?}", sig.version()));
    }
    let alg = sig.hash_alg().unwrap_or(HashAlgorithm::None);
    if matches!(
        alg,
        HashAlgorithm::Md5 | HashAlgorithm::Sha1 | HashAlgorithm::Ripemd160
    ) {
        return Err(format!("weak hash algorithm {alg} is refused"));
    }
    match sig.typ() {
        Some(t) if t == typ => {}
        Some(SignatureType::Text) => {
            return Err("text-mode signature (type 0x01) over binary data is not supported".into())
        }
        Some(SignatureType::Binary) => {
            return Err("binary signature where a text signature was expected".into())
        }
        other => return Err(format!("not a document signature (type {other:?})")),
    }
    let created = sig
        .created()
        .map(|t| u64::from(t.as_secs()))
        .ok_or("signature has no creation time")?;
    if created > now + CLOCK_SKEW {
        return Err(format!(
            "signature created in the future ({})",
            format_date(created)
        ));
    }
    if created < signer.created_at() {
        return Err(format!("signature predates its {}", signer.describe()));
    }
    if let Some(d) = sig.signature_expiration_time().filter(|d| d.as_secs() > 0) {
        let expiry = created + u64::from(d.as_secs());
        if expiry <= now {
            return Err(format!("signature expired on {}", format_date(expiry)));
        }
    }
    Ok(())
}

fn start_hash(sig: &Signature) -> std::result::Result<Box<dyn DynDigest + Send>, String> {
    let config = sig.config().ok_or("unsupported signature")?;
    let mut hasher = config
        .hash_alg
        .new_hasher()
        .map_err(|_| format!("unsupported hash algorithm {}", config.hash_alg))?;
    if let SignatureVersionSpecific::V6 { salt } = &config.version_specific {
        if config.hash_alg.salt_len() != Some(salt.len()) {
            return Err("malformed v6 signature salt".into());
        }
        hasher.update(salt);
    }
    Ok(hasher)
}

fn finish_hash(
    sig: &Signature,
    mut hasher: Box<dyn DynDigest + Send>,
    signer: &SignerKey,
) -> std::result::Result<(), String> {
    let bad = || format!("BAD signature by {}", signer.describe());
    let config = sig.config().ok_or("unsupported signature")?;
    let len = config.hash_signature_data(&mut hasher).map_err(|_| bad())?;
    hasher.update(&config.trailer(len).map_err(|_| bad())?);
    let digest = hasher.finalize();
    let (Some(prefix), Some(bytes)) = (sig.signed_hash_value(), sig.signature()) else {
        return Err(bad());
    };
    if digest.len() < 2
        || prefix != [digest[0], digest[1]]
        || !signer.verify(config.hash_alg, &digest, bytes)
    {
        return Err(bad());
    }
    Ok(())
}

/// Parse key material (armored blocks or binary packets) into keys.
fn parse_keys(bytes: &[u8]) -> std::result::Result<Vec<SignedPublicKey>, String> {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    if start == bytes.len() {
        return Err("empty key file".into());
    }
    let bytes = &bytes[start..];
    let mut keys = Vec::new();
    let mut first_err = None;
    let take = |iter: Box<dyn Iterator<Item = pgp::errors::Result<SignedPublicKey>> + '_>,
                keys: &mut Vec<SignedPublicKey>,
                first_err: &mut Option<String>| {
        for k in iter {
            match k {
                Ok(k) => keys.push(k),
                Err(e) => {
                    first_err.get_or_insert(e.to_string());
                }
            }
        }
    };
    if bytes[0] & 0x80 != 0 {
        let iter = SignedPublicKey::from_bytes_many(Cursor::new(bytes))
            .map_err(|e| format!("malformed key data: {e}"))?;
        take(iter, &mut keys, &mut first_err);
    } else {
        const BEGIN: &str = "-----BEGIN PGP PUBLIC KEY BLOCK-----";
        const END: &str = "-----END PGP PUBLIC KEY BLOCK-----";
        let text = std::str::from_utf8(bytes)
            .map_err(|_| "neither binary OpenPGP data nor ASCII armor".to_string())?;
        let mut blocks = 0;
        let mut block_start = None;
        let mut pos = 0;
        for raw in text.split_inclusive('\n') {
            let line = raw.trim();
            if line == BEGIN {
                block_start = Some(pos);
            } else if line == END {
                if let Some(s) = block_start.take() {
                    blocks += 1;
                    let block = &text[s..pos + raw.len()];
                    match SignedPublicKey::from_armor_many(Cursor::new(block.as_bytes())) {
                        Ok((iter, _)) => take(iter, &mut keys, &mut first_err),
                        Err(e) => {
                            first_err.get_or_insert(e.to_string());
                        }
                    }
                }
            }
            pos += raw.len();
        }
        if blocks == 0 {
            return Err(format!("no `{BEGIN}` ... `{END}` block"));
        }
    }
    if keys.is_empty() {
        return Err(format!(
            "no usable OpenPGP public key: {}",
            first_err.unwrap_or_else(|| "no key packets".into())
        ));
    }
    Ok(keys)
}

/// Validate a key: self-signatures, revocation, expiry, and which components may sign.
fn validate_key(key: &SignedPublicKey, now: u64) -> std::result::Result<PinnedKey, String> {
    let primary = &key.primary_key;
    let fpr = hex_fpr(primary);
    let self_sig_ok = |s: &Signature| self_sig_usable(s, now);

    let key_sigs = key
        .details
        .revocation_signatures
        .iter()
        .chain(&key.details.direct_signatures);
    let mut direct: Option<&Signature> = None;
    for sig in key_sigs {
        if !self_sig_ok(sig) || sig.verify_key(primary).is_err() {
            continue;
        }
        match sig.typ() {
            Some(SignatureType::KeyRevocation) => {
                let reason = sig
                    .revocation_reason_string()
                    .map(|r| String::from_utf8_lossy(r).trim().to_string())
                    .filter(|r| !r.is_empty())
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default();
                return Err(format!("key {fpr} is revoked{reason}"));
            }
            Some(SignatureType::Key) => keep_newest(&mut direct, sig),
            _ => {}
        }
    }

    // The latest valid self-certification of each user id that is not revoked.
    let mut bindings: Vec<(&Signature, String)> = Vec::new();
    for user in &key.details.users {
        let mut latest: Option<&Signature> = None;
        let mut revoked = false;
        for sig in &user.signatures {
            if !self_sig_ok(sig)
                || sig
                    .verify_certification(primary, Tag::UserId, &user.id)
                    .is_err()
            {
                continue;
            }
            match sig.typ() {
                Some(SignatureType::CertRevocation) => revoked = true,
                Some(_) if sig.is_certification() => keep_newest(&mut latest, sig),
                _ => {}
            }
        }
        if let (Some(sig), false) = (latest, revoked) {
            bindings.push((sig, String::from_utf8_lossy(user.id.id()).into_owned()));
        }
    }
    let binding = bindings
        .iter()
        .filter(|(s, _)| s.is_primary())
        .max_by_key(|(s, _)| created(s))
        .or_else(|| bindings.iter().max_by_key(|(s, _)| created(s)));
    if binding.is_none() && direct.is_none() {
        return Err(format!("key {fpr} has no valid self-signature"));
    }

    // A direct-key signature's settings take precedence over the user id binding's.
    let has_flags = |s: &Signature| {
        s.config().is_some_and(|c| {
            c.hashed_subpackets()
                .any(|p| matches!(p.data, SubpacketData::KeyFlags(_)))
        })
    };
    let flag_sig = direct
        .filter(|d| has_flags(d))
        .or_else(|| binding.map(|(s, _)| *s).filter(|s| has_flags(s)));
    let primary_can_sign = flag_sig.is_none_or(|s| s.key_flags().sign());

    let expiration = direct
        .and_then(|d| d.key_expiration_time())
        .or_else(|| binding.and_then(|(s, _)| s.key_expiration_time()));
    if let Some(d) = expiration.filter(|d| d.as_secs() > 0) {
        let expiry = u64::from(primary.created_at().as_secs()) + u64::from(d.as_secs());
        if expiry <= now {
            return Err(format!("key {fpr} expired on {}", format_date(expiry)));
        }
    }

    let subkeys = key
        .public_subkeys
        .iter()
        .map(|sub| SubkeyState {
            key: sub.key.clone(),
            fingerprint: hex_fpr(&sub.key),
            unusable: subkey_problem(primary, &sub.key, &sub.signatures, now),
        })
        .collect();

    Ok(PinnedKey {
        fingerprint: fpr,
        user_id: binding.map(|(_, uid)| uid.clone()),
        primary: primary.clone(),
        primary_can_sign,
        subkeys,
    })
}

/// Why a subkey may not sign data, or `None` if it may.
fn subkey_problem(
    primary: &PublicKey,
    sub: &PublicSubkey,
    sigs: &[Signature],
    now: u64,
) -> Option<String> {
    let mut latest: Option<&Signature> = None;
    for sig in sigs {
        if !self_sig_usable(sig, now) || sig.verify_subkey_binding(primary, sub).is_err() {
            continue;
        }
        match sig.typ() {
            Some(SignatureType::SubkeyRevocation) => return Some("is revoked".into()),
            Some(SignatureType::SubkeyBinding) => keep_newest(&mut latest, sig),
            _ => {}
        }
    }
    let Some(binding) = latest else {
        return Some("has no valid binding signature".into());
    };
    if !binding.key_flags().sign() {
        return Some("is not marked for signing".into());
    }
    let backsig_ok = binding
        .embedded_signature()
        .is_some_and(|b| b.verify_primary_key_binding(sub, primary).is_ok());
    if !backsig_ok {
        return Some("has no valid primary key binding (back-signature)".into());
    }
    if let Some(d) = binding.key_expiration_time().filter(|d| d.as_secs() > 0) {
        let expiry = u64::from(sub.created_at().as_secs()) + u64::from(d.as_secs());
        if expiry <= now {
            return Some(format!("expired on {}", format_date(expiry)));
        }
    }
    None
}

/// Whether a self-signature may be considered at all (hash, times); crypto is checked apart.
fn self_sig_usable(sig: &Signature, now: u64) -> bool {
    if matches!(sig.hash_alg(), Some(HashAlgorithm::Md5) | None) {
        return false;
    }
    let Some(c) = sig.created().map(|t| u64::from(t.as_secs())) else {
        return false;
    };
    if c > now + CLOCK_SKEW {
        return false;
    }
    match sig.signature_expiration_time().filter(|d| d.as_secs() > 0) {
        Some(d) => c + u64::from(d.as_secs()) > now,
        None => true,
    }
}

/// Put `sig` into `slot` unless the signature there is newer.
fn keep_newest<'a>(slot: &mut Option<&'a Signature>, sig: &'a Signature) {
    if slot.is_none_or(|old| created(sig) > created(old)) {
        *slot = Some(sig);
    }
}

fn created(sig: &Signature) -> u32 {
    sig.created().map(|t| t.as_secs()).unwrap_or(0)
}

fn hex_fpr(key: &impl KeyDetails) -> String {
    format!("{:X}", key.fingerprint())
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `YYYY-MM-DD` (UTC) for seconds since the epoch.
fn format_date(secs: u64) -> String {
    let (y, m, d) = crate::model::civil_date((secs / 86_400) as i64);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Test support: generate keys and signatures (not for production use).
///
/// Keys are deterministic for a given user id and options (seeded ChaCha RNG, creation
/// time [`testkeys::CREATED`], all self-signatures made at fixed times). Functions panic
/// on failure, as test helpers do.
#[doc(hidden)]
pub mod testkeys {
    use pgp::composed::{
        ArmorOptions, CleartextSignedMessage, DetachedSignature, KeyType, SecretKeyParamsBuilder,
        SignedPublicKey, SignedSecretKey, SubkeyParamsBuilder,
    };
    use pgp::crypto::hash::HashAlgorithm;
    use pgp::packet::{
        KeyFlags, RevocationCode, Signature, SignatureConfig, SignatureType, Subpacket,
        SubpacketData,
    };
    use pgp::ser::Serialize;
    use pgp::types::{Duration, KeyDetails, Password, SigningKey, Tag, Timestamp};
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use sha2::{Digest, Sha256};

    /// Creation time of every generated key and its self-signatures (2020-01-01).
    pub const CREATED: u32 = 1_577_836_800;
    /// Creation time of generated data signatures (2020-01-02).
    pub const SIGNED: u32 = CREATED + 86_400;

    /// Public-key algorithm of generated keys.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum Algo {
        /// EdDSA over Curve25519 (the legacy v4 encoding GnuPG uses).
        #[default]
        Ed25519,
        /// RSA, 2048 bits.
        Rsa2048,
    }

    /// Hash algorithm of generated signatures.
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub enum Hash {
        /// SHA-256.
        #[default]
        Sha256,
        /// SHA-512.
        Sha512,
        /// SHA-1 (weak).
        Sha1,
        /// MD5 (weak).
        Md5,
    }

    impl Hash {
        fn alg(self) -> HashAlgorithm {
            match self {
                Hash::Sha256 => HashAlgorithm::Sha256,
                Hash::Sha512 => HashAlgorithm::Sha512,
                Hash::Sha1 => HashAlgorithm::Sha1,
                Hash::Md5 => HashAlgorithm::Md5,
            }
        }
    }

    /// What kind of key to generate.
    #[derive(Clone, Copy, Debug, Default)]
    pub struct KeyOptions {
        /// Add a signing-capable subkey (with back-signature).
        pub signing_subkey: bool,
        /// The primary key expired on 2020-01-02.
        pub expired: bool,
        /// The primary key carries a key revocation signature.
        pub revoked: bool,
        /// Public-key algorithm of primary and subkey.
        pub algo: Algo,
        /// The primary key is certify-only (not marked for signing).
        pub certify_only: bool,
        /// The subkey carries a subkey revocation signature.
        pub subkey_revoked: bool,
        /// The subkey expired on 2020-01-02.
        pub subkey_expired: bool,
        /// The subkey binding lacks the primary key binding (back-signature).
        pub subkey_without_backsig: bool,
    }

    /// A generated secret key.
    #[derive(Clone, Debug)]
    pub struct TestKey {
        secret: SignedSecretKey,
    }

    fn subpacket(data: SubpacketData) -> Subpacket {
        Subpacket::regular(data).expect("subpacket")
    }

    fn config(
        typ: SignatureType,
        key: &impl KeyDetails,
        hash: HashAlgorithm,
        at: u32,
    ) -> SignatureConfig {
        let mut c = SignatureConfig::v4(typ, key.algorithm(), hash);
        c.hashed_subpackets = vec![
            subpacket(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
                at,
            ))),
            subpacket(SubpacketData::IssuerFingerprint(key.fingerprint())),
        ];
        c.unhashed_subpackets = vec![subpacket(SubpacketData::IssuerKeyId(key.legacy_key_id()))];
        c
    }

    /// Generate a key for `user_id`.
    pub fn generate(user_id: &str, options: KeyOptions) -> TestKey {
        let seed: [u8; 32] = Sha256::digest(format!("{user_id}\0{options:?}").as_bytes()).into();
        let mut rng = ChaCha8Rng::from_seed(seed);
        let key_type = match options.algo {
            Algo::Ed25519 => KeyType::Ed25519Legacy,
            Algo::Rsa2048 => KeyType::Rsa(2048),
        };
        let created = Timestamp::from_secs(CREATED);
        let mut params = SecretKeyParamsBuilder::default();
        params
            .key_type(key_type.clone())
            .can_certify(true)
            .can_sign(!options.certify_only)
            .created_at(created)
            .primary_user_id(user_id.to_string());
        if options.signing_subkey {
            params.subkey(
                SubkeyParamsBuilder::default()
                    .key_type(key_type)
                    .can_sign(true)
                    .created_at(created)
                    .build()
                    .expect("subkey params"),
            );
        }
        let mut secret = params
            .build()
            .expect("key params")
            .generate(&mut rng)
            .expect("key generation");

        // Replace the builder's self-signatures (made "now") with fixed-time ones.
        let pw = Password::empty();
        let primary = secret.primary_key.clone();
        let primary_pub = primary.public_key().clone();
        let mut flags = KeyFlags::default();
        flags.set_certify(true);
        flags.set_sign(!options.certify_only);
        let mut c = config(
            SignatureType::CertPositive,
            &primary,
            HashAlgorithm::Sha256,
            CREATED,
        );
        c.hashed_subpackets
            .push(subpacket(SubpacketData::KeyFlags(flags)));
        c.hashed_subpackets
            .push(subpacket(SubpacketData::IsPrimary(true)));
        if options.expired {
            c.hashed_subpackets
                .push(subpacket(SubpacketData::KeyExpirationTime(
                    Duration::from_secs(86_400),
                )));
        }
        for user in &mut secret.details.users {
            let sig = c
                .clone()
                .sign_certification(&primary, &primary_pub, &pw, Tag::UserId, &user.id)
                .expect("user id self-signature");
            user.signatures = vec![sig];
        }
        if options.revoked {
            let mut c = config(
                SignatureType::KeyRevocation,
                &primary,
                HashAlgorithm::Sha256,
                CREATED + 60,
            );
            c.hashed_subpackets
                .push(subpacket(SubpacketData::RevocationReason(
                    RevocationCode::KeyRetired,
                    "retired for a test".into(),
                )));
            let sig = c
                .sign_key(&primary, &pw, &primary_pub)
                .expect("key revocation");
            secret.details.revocation_signatures.push(sig);
        }
        for sub in &mut secret.secret_subkeys {
            let sub_pub = sub.key.public_key().clone();
            let back = config(
                SignatureType::KeyBinding,
                &sub.key,
                HashAlgorithm::Sha256,
                CREATED,
            )
            .sign_primary_key_binding(&sub.key, &sub_pub, &pw, &primary_pub)
            .expect("back-signature");
            let mut flags = KeyFlags::default();
            flags.set_sign(true);
            let mut c = config(
                SignatureType::SubkeyBinding,
                &primary,
                HashAlgorithm::Sha256,
                CREATED,
            );
            c.hashed_subpackets
                .push(subpacket(SubpacketData::KeyFlags(flags)));
            if options.subkey_expired {
                c.hashed_subpackets
                    .push(subpacket(SubpacketData::KeyExpirationTime(
                        Duration::from_secs(86_400),
                    )));
            }
            if !options.subkey_without_backsig {
                c.hashed_subpackets
                    .push(subpacket(SubpacketData::EmbeddedSignature(Box::new(back))));
            }
            let binding = c
                .sign_subkey_binding(&primary, &primary_pub, &pw, &sub_pub)
                .expect("subkey binding");
            sub.signatures = vec![binding];
            if options.subkey_revoked {
                let rev = config(
                    SignatureType::SubkeyRevocation,
                    &primary,
                    HashAlgorithm::Sha256,
                    CREATED + 60,
                )
                .sign_subkey_binding(&primary, &primary_pub, &pw, &sub_pub)
                .expect("subkey revocation");
                sub.signatures.push(rev);
            }
        }
        TestKey { secret }
    }

    impl TestKey {
        /// The transferable public key.
        pub fn public(&self) -> SignedPublicKey {
            self.secret.to_public_key()
        }

        /// The public key, ASCII-armored.
        pub fn public_armored(&self) -> String {
            self.public()
                .to_armored_string(ArmorOptions::default())
                .expect("armoring public key")
        }

        /// The public key, binary.
        pub fn public_binary(&self) -> Vec<u8> {
            self.public().to_bytes().expect("serializing public key")
        }

        /// The primary fingerprint, uppercase hex.
        pub fn fingerprint(&self) -> String {
            format!("{:X}", self.secret.primary_key.fingerprint())
        }

        /// The signing subkey's fingerprint, uppercase hex.
        pub fn subkey_fingerprint(&self) -> Option<String> {
            self.secret
                .secret_subkeys
                .first()
                .map(|s| format!("{:X}", s.key.fingerprint()))
        }

        /// The primary key id (16 uppercase hex digits).
        pub fn key_id(&self) -> String {
            self.secret
                .primary_key
                .legacy_key_id()
                .to_string()
                .to_ascii_uppercase()
        }

        fn sign(
            &self,
            typ: SignatureType,
            data: &[u8],
            hash: Hash,
            with_subkey: bool,
        ) -> Signature {
            let pw = Password::empty();
            if with_subkey {
                let sub = &self
                    .secret
                    .secret_subkeys
                    .first()
                    .expect("key has no subkey")
                    .key;
                sign_with(sub, typ, data, hash, &pw)
            } else {
                sign_with(&self.secret.primary_key, typ, data, hash, &pw)
            }
        }

        /// A cleartext-signed message (`-----BEGIN PGP SIGNED MESSAGE-----`) by the primary.
        pub fn sign_cleartext(&self, text: &str, hash: Hash) -> String {
            self.sign_cleartext_with(text, hash, false)
        }

        /// A cleartext-signed message by the primary or the signing subkey.
        pub fn sign_cleartext_with(&self, text: &str, hash: Hash, with_subkey: bool) -> String {
            let msg = CleartextSignedMessage::new_many(text, |normalized| {
                Ok(vec![self.sign(
                    SignatureType::Text,
                    normalized.as_bytes(),
                    hash,
                    with_subkey,
                )])
            })
            .expect("cleartext message");
            msg.to_armored_string(ArmorOptions::default())
                .expect("armoring cleartext message")
        }

        /// A detached binary-document signature over `data`.
        pub fn sign_detached(
            &self,
            data: &[u8],
            hash: Hash,
            armored: bool,
            with_subkey: bool,
        ) -> Vec<u8> {
            let sig =
                DetachedSignature::new(self.sign(SignatureType::Binary, data, hash, with_subkey));
            if armored {
                sig.to_armored_bytes(ArmorOptions::default())
                    .expect("armoring signature")
            } else {
                sig.to_bytes().expect("serializing signature")
            }
        }

        /// A detached text-mode (type 0x01) signature over `data`, armored.
        pub fn sign_detached_text(&self, data: &[u8]) -> Vec<u8> {
            let sig =
                DetachedSignature::new(self.sign(SignatureType::Text, data, Hash::Sha256, false));
            sig.to_armored_bytes(ArmorOptions::default())
                .expect("armoring signature")
        }
    }

    fn sign_with<K: SigningKey>(
        key: &K,
        typ: SignatureType,
        data: &[u8],
        hash: Hash,
        pw: &Password,
    ) -> Signature {
        config(typ, key, hash.alg(), SIGNED)
            .sign(key, pw, data)
            .expect("signing")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_lines() {
        let h = "AA069AB507E27B9193373E8F20D505B1BC01B713916F062D71D6BE9BB8DC68EA";
        let line = format!("{h}  llvm.tar.gz");
        let (hash, name) = parse_sums_line(&line).unwrap();
        assert_eq!(hash, h.to_ascii_lowercase());
        assert_eq!(name, "llvm.tar.gz");
        assert_eq!(
            parse_sums_line(&format!("{h} *bin.tar")).unwrap().1,
            "bin.tar"
        );
        assert!(parse_sums_line(&format!("{h} one-space")).is_none());
        assert!(parse_sums_line(&format!("{h}  ")).is_none());
        assert!(parse_sums_line(h).is_none());
        assert!(parse_sums_line(&format!("{}  x", &h[1..])).is_none());
        assert!(parse_sums_line(&format!("{}g  x", &h[1..])).is_none());
        assert!(parse_sums_line(
            "héllo wörld, this is not a hash line at all, no no no no no no no"
        )
        .is_none());
    }

    #[test]
    fn cleartext_block_is_located() {
        let text =
            "junk\n-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256, SHA512\n\nbody\n- -----dash\n\
                    -----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\ntrailer\n";
        let b = locate_cleartext(text).unwrap();
        assert_eq!(b.body, "body\n- -----dash\n");
        assert_eq!(signed_text(b.body), "body\r\n-----dash");
        assert!(b.armor.starts_with("-----BEGIN PGP SIGNATURE-----\n"));
        assert!(b.armor.ends_with("-----END PGP SIGNATURE-----\n"));
        assert_eq!(b.hashes, ["SHA256", "SHA512"]);
        assert_eq!(b.first_body_line, 4);

        assert!(locate_cleartext("no signature here\n")
            .unwrap_err()
            .contains("no `-----BEGIN"));
        let twice = format!("{text}{text}");
        assert!(locate_cleartext(&twice)
            .unwrap_err()
            .contains("more than one"));
        let open = "-----BEGIN PGP SIGNED MESSAGE-----\n\nbody\n";
        assert!(locate_cleartext(open).unwrap_err().contains("line 1"));
    }

    #[test]
    fn dates() {
        assert_eq!(format_date(0), "1970-01-01");
        assert_eq!(format_date(1_577_836_800), "2020-01-01");
        assert_eq!(format_date(1_704_067_199), "2023-12-31");
        assert_eq!(format_date(951_782_400), "2000-02-29");
    }

    #[test]
    fn fingerprint_syntax_is_checked() {
        let ring = Keyring::new();
        let e = ring.pinned("1234").unwrap_err().to_string();
        assert!(e.contains("not an OpenPGP fingerprint"), "{e}");
        let e = ring.pinned(&"g".repeat(40)).unwrap_err().to_string();
        assert!(e.contains("not an OpenPGP fingerprint"), "{e}");
        let e = ring.pinned(&"ab".repeat(20)).unwrap_err().to_string();
        assert!(e.contains("no key with primary fingerprint ABAB"), "{e}");
    }

    #[test]
    fn key_parsing_errors() {
        assert!(parse_keys(b"  \n").unwrap_err().contains("empty"));
        assert!(parse_keys(b"hello\n")
            .unwrap_err()
            .contains("no `-----BEGIN PGP PUBLIC KEY BLOCK-----`"));
        let garbage = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64!\n-----END PGP PUBLIC KEY BLOCK-----\n";
        assert!(parse_keys(garbage.as_bytes())
            .unwrap_err()
            .contains("no usable"));
    }

    #[test]
    fn verifier_is_send() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync>() {}
        send::<DetachedVerifier>();
        send_sync::<PinnedKey>();
        send_sync::<Keyring>();
    }
}
