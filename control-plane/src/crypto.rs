//! Small cryptographic helpers: randomness, ids, digests, constant-time
//! comparison, and the master key that encrypts signing keys at rest.

use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// `N` bytes from the OS-seeded CSPRNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::thread_rng().fill_bytes(&mut out);
    out
}

/// A random identifier: 16 bytes, base64url (22 chars, no padding).
pub fn new_id() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<16>())
}

/// A random secret: 32 bytes, base64url.
pub fn new_secret() -> String {
    URL_SAFE_NO_PAD.encode(random_bytes::<32>())
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of `data`, hex.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Constant-time equality of two byte strings (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Errors of the master key and of at-rest encryption.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The configured master key is not 32 bytes of base64 or hex.
    #[error("MESHGATE_MASTER_KEY must be 32 bytes, base64 or 64 hex characters")]
    BadMasterKey,
    /// Reading or writing the generated key file failed.
    #[error("master key file {path}: {source}")]
    KeyFile {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Ciphertext does not decrypt under this master key (wrong key or tampered).
    #[error("stored secret does not decrypt with this master key")]
    Decrypt,
}

/// The key that encrypts secrets at rest (ChaCha20-Poly1305). Redacts `Debug`.
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// Parses base64 (standard or url-safe) or hex text holding 32 bytes.
    pub fn parse(text: &str) -> Result<Self, CryptoError> {
        let text = text.trim();
        let bytes = if text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            (0..32)
                .map(|i| u8::from_str_radix(&text[2 * i..2 * i + 2], 16))
                .collect::<Result<Vec<u8>, _>>()
                .map_err(|_| CryptoError::BadMasterKey)?
        } else {
            STANDARD
                .decode(text)
                .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
                .map_err(|_| CryptoError::BadMasterKey)?
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| CryptoError::BadMasterKey)?;
        Ok(Self(key))
    }

    /// The configured key, or the one in `<data_dir>/master.key`, generated
    /// (mode 0600) when absent.
    pub fn load_or_generate(configured: Option<&str>, data_dir: &Path) -> Result<Self, CryptoError> {
        if let Some(text) = configured {
            return Self::parse(text);
        }
        let path = data_dir.join("master.key");
        let io_err = |source| CryptoError::KeyFile { path: path.display().to_string(), source };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(io_err)?;
                let key = Self(random_bytes());
                write_private(&path, &STANDARD.encode(key.0)).map_err(io_err)?;
                tracing::warn!(path = %path.display(), "generated a master key; set MESHGATE_MASTER_KEY for production and replicas");
                Ok(key)
            }
            Err(e) => Err(io_err(e)),
        }
    }

    /// A key for tests and tools.
    pub fn random() -> Self {
        Self(random_bytes())
    }

    /// Encrypts `plain`, binding it to `context` (e.g. a key id) as AAD.
    /// Output: base64(nonce ‖ ciphertext ‖ tag).
    pub fn seal(&self, context: &str, plain: &[u8]) -> String {
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let nonce = random_bytes::<12>();
        let payload = Payload { msg: plain, aad: context.as_bytes() };
        // Encryption with a valid key and nonce cannot fail for in-memory sizes.
        let sealed = cipher.encrypt(Nonce::from_slice(&nonce), payload).unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        STANDARD.encode(out)
    }

    /// Reverses [`MasterKey::seal`].
    pub fn open(&self, context: &str, sealed: &str) -> Result<Vec<u8>, CryptoError> {
        let raw = STANDARD.decode(sealed).map_err(|_| CryptoError::Decrypt)?;
        if raw.len() < 12 + 16 {
            return Err(CryptoError::Decrypt);
        }
        let (nonce, body) = raw.split_at(12);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: body, aad: context.as_bytes() })
            .map_err(|_| CryptoError::Decrypt)
    }

    /// A sub-key for one purpose, so the master key itself signs nothing.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(b"meshgate-kdf:");
        h.update(purpose.as_bytes());
        h.update(self.0);
        h.finalize().into()
    }
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_roundtrip_and_context_binding() {
        let key = MasterKey::random();
        let sealed = key.seal("kid1", b"secret");
        assert_eq!(key.open("kid1", &sealed).unwrap(), b"secret");
        assert!(key.open("kid2", &sealed).is_err());
        assert!(MasterKey::random().open("kid1", &sealed).is_err());
    }

    #[test]
    fn generated_master_key_is_private_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let first = MasterKey::load_or_generate(None, dir.path()).unwrap();
        let sealed = first.seal("k", b"x");
        let again = MasterKey::load_or_generate(None, dir.path()).unwrap();
        assert_eq!(again.open("k", &sealed).unwrap(), b"x");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("master.key")).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(format!("{first:?}").contains("redacted"));
    }

    #[test]
    fn master_key_formats() {
        assert!(MasterKey::parse(&"ab".repeat(32)).is_ok());
        assert!(MasterKey::parse(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(MasterKey::parse("short").is_err());
    }
}
