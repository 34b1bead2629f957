//! Repository signing keys: generation (`korgpkg key generate`), loading with a
//! passphrase, and the signatures the repositories need.
//!
//! - OpenPGP v4 keys (Ed25519 by default, RSA 4096 on request) made with rPGP. Every
//!   data signature is v4 with SHA-512, which satisfies apt's Sequoia policy, gpgv and
//!   rpm: cleartext (`InRelease`), detached binary (`Release.gpg`, rpm headers) and
//!   detached armored (`repomd.xml.asc`, `Packages.asc`).
//! - A usign/signify Ed25519 key for OpenWrt feeds (`Packages.sig`), in signify's file
//!   formats so `signify-openbsd -V` and OpenWrt's `usign -V` both verify it.
//!
//! A key directory holds `openpgp.sec.asc` and `usign.sec` (mode 0600), plus
//! `openpgp.pub.asc`, `openpgp.pub.gpg` (binary keyring for apt's `signed-by`) and
//! `usign.pub`.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::Signer as _;
use pgp::composed::{
    ArmorOptions, CleartextSignedMessage, Deserializable, DetachedSignature, KeyType,
    SecretKeyParamsBuilder, SignedPublicKey, SignedSecretKey,
};
use pgp::crypto::hash::HashAlgorithm;
use pgp::packet::{SignatureConfig, SignatureType, Subpacket, SubpacketData};
use pgp::types::{KeyDetails, Password, Timestamp};
use rand::rngs::OsRng;
use rand::RngCore;
use sha2::{Digest, Sha512};

use crate::error::{Error, IoContext, Result};

/// File names inside a key directory.
pub const OPENPGP_SECRET: &str = "openpgp.sec.asc";
pub const OPENPGP_PUBLIC_ASC: &str = "openpgp.pub.asc";
pub const OPENPGP_PUBLIC_GPG: &str = "openpgp.pub.gpg";
pub const USIGN_SECRET: &str = "usign.sec";
pub const USIGN_PUBLIC: &str = "usign.pub";

/// Public-key algorithm of a generated OpenPGP key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Default)]
pub enum KeyAlgo {
    /// EdDSA over Curve25519 (v4 encoding, as GnuPG writes it).
    #[default]
    Ed25519,
    /// RSA with 4096 bits.
    Rsa4096,
}

/// What `korgpkg key generate` wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct GeneratedKeys {
    pub fingerprint: String,
    pub usign_fingerprint: String,
    pub files: Vec<PathBuf>,
}

fn pgp_err(what: &str) -> impl Fn(pgp::errors::Error) -> Error + '_ {
    move |e| Error::verify(what.to_string(), e.to_string())
}

/// Write `bytes` to a new file with `mode`, refusing to overwrite.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .ctx(|| {
            format!(
                "creating {} (an existing key is never overwritten)",
                path.display()
            )
        })?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .ctx(|| format!("writing {}", path.display()))
}

/// Generate an OpenPGP key and a usign key for `user_id` into `dir`.
pub fn generate(
    user_id: &str,
    algo: KeyAlgo,
    passphrase: Option<&str>,
    dir: &Path,
) -> Result<GeneratedKeys> {
    fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let key_type = match algo {
        KeyAlgo::Ed25519 => KeyType::Ed25519Legacy,
        KeyAlgo::Rsa4096 => KeyType::Rsa(4096),
    };
    let mut params = SecretKeyParamsBuilder::default();
    params
        .key_type(key_type)
        .can_certify(true)
        .can_sign(true)
        .created_at(Timestamp::now())
        .preferred_hash_algorithms(
            [HashAlgorithm::Sha512, HashAlgorithm::Sha256]
                .into_iter()
                .collect(),
        )
        .passphrase(passphrase.map(str::to_string))
        .primary_user_id(user_id.to_string());
    let secret = params
        .build()
        .map_err(|e| Error::Usage(format!("OpenPGP key parameters: {e}")))?
        .generate(OsRng)
        .map_err(pgp_err("generating the OpenPGP key"))?;
    let public = secret.to_public_key();
    let fingerprint = format!("{:X}", secret.primary_key.fingerprint());

    let mut seed = [0u8; 32];
    OsRng.fill_bytes(&mut seed);
    let usign = UsignKey::from_seed(seed);

    let armored_secret = secret
        .to_armored_string(ArmorOptions::default())
        .map_err(pgp_err("armoring the secret key"))?;
    let files = [
        (OPENPGP_SECRET, armored_secret.into_bytes(), 0o600),
        (
            OPENPGP_PUBLIC_ASC,
            armor_public(&public)?.into_bytes(),
            0o644,
        ),
        (OPENPGP_PUBLIC_GPG, binary_public(&public)?, 0o644),
        (
            USIGN_SECRET,
            usign.secret_file(user_id, passphrase)?.into_bytes(),
            0o600,
        ),
        (USIGN_PUBLIC, usign.public_file(user_id).into_bytes(), 0o644),
    ];
    for (name, _, _) in &files {
        if dir.join(name).exists() {
            return Err(Error::Usage(format!(
                "{} exists; an existing key is never overwritten",
                dir.join(name).display()
            )));
        }
    }
    let mut written = Vec::new();
    for (name, bytes, mode) in files {
        let path = dir.join(name);
        write_new(&path, &bytes, mode)?;
        written.push(path);
    }
    Ok(GeneratedKeys {
        fingerprint,
        usign_fingerprint: usign.keynum_hex(),
        files: written,
    })
}

fn armor_public(key: &SignedPublicKey) -> Result<String> {
    key.to_armored_string(ArmorOptions::default())
        .map_err(pgp_err("armoring the public key"))
}

fn binary_public(key: &SignedPublicKey) -> Result<Vec<u8>> {
    use pgp::ser::Serialize;
    key.to_bytes()
        .map_err(pgp_err("serializing the public key"))
}

/// Read a passphrase from the environment variable `env` or the first line of `file`.
pub fn read_passphrase(env: Option<&str>, file: Option<&Path>) -> Result<Option<String>> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) => Ok(Some(v)),
            Err(_) => Err(Error::Usage(format!(
                "--passphrase-env {var}: the variable is not set"
            ))),
        };
    }
    if let Some(path) = file {
        let text = fs::read_to_string(path)
            .ctx(|| format!("reading passphrase file {}", path.display()))?;
        return Ok(Some(text.lines().next().unwrap_or_default().to_string()));
    }
    Ok(None)
}

/// signify's default bcrypt_pbkdf rounds for passphrase-protected keys.
const SIGNIFY_KDF_ROUNDS: u32 = 42;

/// XOR `key` with `bcrypt_pbkdf(passphrase, salt, rounds)`, as signify encrypts and
/// decrypts secret keys.
fn xor_kdf(passphrase: &str, salt: &[u8], rounds: u32, key: &mut [u8; 64]) -> Result<()> {
    let mut stream = [0u8; 64];
    bcrypt_pbkdf::bcrypt_pbkdf(passphrase.as_bytes(), salt, rounds, &mut stream)
        .map_err(|e| Error::Usage(format!("deriving the usign key encryption: {e}")))?;
    for (k, s) in key.iter_mut().zip(stream) {
        *k ^= s;
    }
    Ok(())
}

/// A usign/signify Ed25519 key.
#[derive(Clone)]
pub struct UsignKey {
    key: ed25519_dalek::SigningKey,
    keynum: [u8; 8],
}

impl UsignKey {
    fn from_seed(seed: [u8; 32]) -> Self {
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        // usign derives the key number from the public key; any 8 bytes are valid.
        let digest = Sha512::digest(key.verifying_key().as_bytes());
        let mut keynum = [0u8; 8];
        keynum.copy_from_slice(&digest[..8]);
        UsignKey { key, keynum }
    }

    /// The key number as opkg names key files (`/etc/opkg/keys/<this>`).
    pub fn keynum_hex(&self) -> String {
        hex::encode(self.keynum)
    }

    /// The public key file (signify format).
    pub fn public_file(&self, comment: &str) -> String {
        let mut b = b"Ed".to_vec();
        b.extend_from_slice(&self.keynum);
        b.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "untrusted comment: {comment} public key\n{}\n",
            base64::engine::general_purpose::STANDARD.encode(b)
        )
    }

    /// The secret key file in signify's format: with a passphrase, the key is encrypted
    /// as signify does (XOR with `bcrypt_pbkdf(passphrase, salt, 42 rounds)`); without,
    /// kdf rounds are 0 and the key is stored plain.
    fn secret_file(&self, comment: &str, passphrase: Option<&str>) -> Result<String> {
        let sk = self.key.to_keypair_bytes();
        let mut salt = [0u8; 16];
        let rounds = match passphrase {
            Some(_) => {
                OsRng.fill_bytes(&mut salt);
                SIGNIFY_KDF_ROUNDS
            }
            None => 0,
        };
        let mut stored = sk;
        if let Some(p) = passphrase {
            xor_kdf(p, &salt, rounds, &mut stored)?;
        }
        let mut b = b"EdBK".to_vec();
        b.extend_from_slice(&rounds.to_be_bytes());
        b.extend_from_slice(&salt);
        b.extend_from_slice(&Sha512::digest(sk)[..8]);
        b.extend_from_slice(&self.keynum);
        b.extend_from_slice(&stored);
        Ok(format!(
            "untrusted comment: {comment} secret key\n{}\n",
            base64::engine::general_purpose::STANDARD.encode(b)
        ))
    }

    /// Read a signify secret key file, decrypting it with `passphrase` when its kdf
    /// rounds are not 0.
    pub fn load(path: &Path, passphrase: Option<&str>) -> Result<Self> {
        let bad = |m: &str| Error::verify(path.display().to_string(), m.to_string());
        let text = fs::read_to_string(path).ctx(|| format!("reading {}", path.display()))?;
        let line = text
            .lines()
            .nth(1)
            .ok_or_else(|| bad("not a signify secret key"))?;
        let b = base64::engine::general_purpose::STANDARD
            .decode(line.trim())
            .map_err(|_| bad("not a signify secret key (bad base64)"))?;
        if b.len() != 104 || &b[..4] != b"EdBK" {
            return Err(bad("not an Ed25519 signify secret key"));
        }
        let rounds = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        let mut keypair = [0u8; 64];
        keypair.copy_from_slice(&b[40..104]);
        if rounds > 0 {
            let p = passphrase.ok_or_else(|| {
                bad("the usign key is passphrase-protected: give --passphrase-env or --passphrase-file")
            })?;
            xor_kdf(p, &b[8..24], rounds, &mut keypair)?;
        }
        if Sha512::digest(keypair)[..8] != b[24..32] {
            return Err(bad(if rounds > 0 {
                "cannot unlock the usign key (wrong passphrase?)"
            } else {
                "checksum mismatch"
            }));
        }
        let key = ed25519_dalek::SigningKey::from_keypair_bytes(&keypair)
            .map_err(|_| bad("inconsistent key pair"))?;
        let mut keynum = [0u8; 8];
        keynum.copy_from_slice(&b[32..40]);
        Ok(UsignKey { key, keynum })
    }

    /// A signify signature file over `data`.
    pub fn sign(&self, data: &[u8], comment: &str) -> String {
        let mut b = b"Ed".to_vec();
        b.extend_from_slice(&self.keynum);
        b.extend_from_slice(&self.key.sign(data).to_bytes());
        format!(
            "untrusted comment: {comment}\n{}\n",
            base64::engine::general_purpose::STANDARD.encode(b)
        )
    }
}

/// The keys a repository is signed with.
pub struct Signer {
    secret: SignedSecretKey,
    password: Password,
    usign: Option<UsignKey>,
    /// Signature creation time (`SOURCE_DATE_EPOCH` or now).
    time: u32,
}

impl Signer {
    /// Load the keys of `dir` (see the module docs); the usign key is optional.
    pub fn load(dir: &Path, passphrase: Option<String>, time: u32) -> Result<Self> {
        let path = dir.join(OPENPGP_SECRET);
        let file = fs::File::open(&path).ctx(|| format!("opening {}", path.display()))?;
        let origin = path.display().to_string();
        let (secret, _) = SignedSecretKey::from_armor_single(std::io::BufReader::new(file))
            .map_err(|e| {
                Error::verify(origin.clone(), format!("not an OpenPGP secret key: {e}"))
            })?;
        let password = passphrase
            .clone()
            .map(Password::from)
            .unwrap_or_else(Password::empty);
        let usign_path = dir.join(USIGN_SECRET);
        let usign = if usign_path.exists() {
            Some(UsignKey::load(&usign_path, passphrase.as_deref())?)
        } else {
            None
        };
        let signer = Signer {
            secret,
            password,
            usign,
            time,
        };
        // Fail early (and clearly) on a wrong passphrase.
        signer
            .signature(SignatureType::Binary, &b""[..])
            .map_err(|_| {
                Error::verify(
                    origin,
                    "cannot unlock the secret key (wrong or missing passphrase?)",
                )
            })?;
        Ok(signer)
    }

    /// Primary key fingerprint, uppercase hex.
    pub fn fingerprint(&self) -> String {
        format!("{:X}", self.secret.primary_key.fingerprint())
    }

    /// The public key, armored.
    pub fn public_armored(&self) -> Result<String> {
        armor_public(&self.secret.to_public_key())
    }

    /// The public key, binary (an apt `signed-by` keyring).
    pub fn public_binary(&self) -> Result<Vec<u8>> {
        binary_public(&self.secret.to_public_key())
    }

    /// The usign key, if the key directory has one.
    pub fn usign(&self) -> Option<&UsignKey> {
        self.usign.as_ref()
    }

    fn signature(
        &self,
        typ: SignatureType,
        data: impl std::io::Read,
    ) -> pgp::errors::Result<pgp::packet::Signature> {
        let key = &self.secret.primary_key;
        let mut c = SignatureConfig::v4(typ, key.algorithm(), HashAlgorithm::Sha512);
        c.hashed_subpackets = vec![
            Subpacket::regular(SubpacketData::SignatureCreationTime(Timestamp::from_secs(
                self.time,
            )))?,
            Subpacket::regular(SubpacketData::IssuerFingerprint(key.fingerprint()))?,
        ];
        c.unhashed_subpackets = vec![Subpacket::regular(SubpacketData::IssuerKeyId(
            key.legacy_key_id(),
        ))?];
        c.sign(key, &self.password, data)
    }

    /// A cleartext-signed document (`InRelease`).
    pub fn clearsign(&self, text: &str) -> Result<String> {
        let msg = CleartextSignedMessage::new_many(text, |normalized| {
            Ok(vec![
                self.signature(SignatureType::Text, normalized.as_bytes())?
            ])
        })
        .map_err(pgp_err("cleartext-signing"))?;
        msg.to_armored_string(ArmorOptions::default())
            .map_err(pgp_err("armoring a cleartext signature"))
    }

    /// A detached binary-document signature over `data`, armored or binary.
    pub fn detached(&self, data: &[u8], armored: bool) -> Result<Vec<u8>> {
        self.detached_stream(data, armored)
    }

    /// A detached binary-document signature over everything `data` yields, read in
    /// pieces (a package of any size), armored or binary.
    pub fn detached_stream(&self, data: impl std::io::Read, armored: bool) -> Result<Vec<u8>> {
        use pgp::ser::Serialize;
        let sig = DetachedSignature::new(
            self.signature(SignatureType::Binary, data)
                .map_err(pgp_err("signing"))?,
        );
        if armored {
            sig.to_armored_bytes(ArmorOptions::default())
                .map_err(pgp_err("armoring a signature"))
        } else {
            sig.to_bytes().map_err(pgp_err("serializing a signature"))
        }
    }

    /// Whether the key is RSA (rpm stores RSA header signatures under a different tag).
    pub fn is_rsa(&self) -> bool {
        matches!(
            self.secret.primary_key.algorithm(),
            pgp::crypto::public_key::PublicKeyAlgorithm::RSA
        )
    }
}

/// Signature time: `SOURCE_DATE_EPOCH` when set, else now.
pub fn signature_time(source_date_epoch: Option<u64>) -> u32 {
    let secs = source_date_epoch.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    });
    u32::try_from(secs).unwrap_or(u32::MAX)
}
