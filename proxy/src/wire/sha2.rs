//! `caching_sha2_password`, server side: the scramble check, the cache of users that
//! completed a full authentication, and the RSA key pair for full authentication on plain
//! connections.
//!
//! The fast path: the client answers the greeting's nonce with
//! `XOR(SHA256(password), SHA256(SHA256(SHA256(password)) ++ nonce))`. Holding
//! `SHA256(SHA256(password))` (the configured hash), the server recovers `SHA256(password)`
//! and checks that hashing it once more gives the stored value.
//!
//! Like MySQL, the fast path is only taken for a user found in the in-memory cache, which a
//! successful full authentication fills (the password itself, sent over TLS, or encrypted
//! with the server's RSA public key on a plain connection); the cache starts empty at
//! every start.

use rsa::pkcs8::{DecodePrivateKey, EncodePublicKey, LineEnding};
use rsa::{Oaep, RsaPrivateKey, RsaPublicKey};
use sha2::{Digest, Sha256};
use shardgate_config::Sha2Hash;
use std::collections::HashMap;
use std::sync::Mutex;

/// The plugin's name on the wire.
pub const CACHING_SHA2_PASSWORD: &str = "caching_sha2_password";
/// AuthMoreData status byte: the fast path succeeded, an OK follows.
pub const FAST_AUTH_SUCCESS: u8 = 3;
/// AuthMoreData status byte: the client must send the password (full authentication).
pub const PERFORM_FULL_AUTHENTICATION: u8 = 4;
/// What a client sends on a plain connection to ask for the server's public key.
pub const REQUEST_PUBLIC_KEY: u8 = 2;

/// Checks a fast-path answer against the stored SHA256(SHA256(password)).
pub fn verify_scramble(stored: &Sha2Hash, nonce: &[u8], answer: &[u8]) -> bool {
    if answer.len() != 32 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(stored.0);
    h.update(nonce);
    let mask = h.finalize();
    let mut stage1 = [0u8; 32];
    for i in 0..32 {
        stage1[i] = answer[i] ^ mask[i];
    }
    constant_time_eq(&Sha256::digest(stage1), &stored.0)
}

/// Checks a password received in full authentication against the stored hash.
pub fn verify_password(stored: &Sha2Hash, password: &[u8]) -> bool {
    constant_time_eq(&Sha2Hash::of_password(password).0, &stored.0)
}

/// The answer a client sends for `password` to `nonce` (for tests and tools).
pub fn client_scramble(password: &[u8], nonce: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha256::digest(password);
    let stage2 = Sha256::digest(stage1);
    let mut h = Sha256::new();
    h.update(stage2);
    h.update(nonce);
    let mask = h.finalize();
    stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Users that completed a full authentication since the proxy started, with the hash they
/// were checked against (a changed hash is a miss).
#[derive(Default)]
pub struct Sha2Cache {
    entries: Mutex<HashMap<String, Sha2Hash>>,
}

impl Sha2Cache {
    /// Whether `user` may take the fast path with `stored`.
    pub fn contains(&self, user: &str, stored: &Sha2Hash) -> bool {
        self.entries
            .lock()
            .map(|m| m.get(user) == Some(stored))
            .unwrap_or(false)
    }

    /// Records a successful full authentication.
    pub fn insert(&self, user: &str, stored: &Sha2Hash) {
        if let Ok(mut m) = self.entries.lock() {
            m.insert(user.to_string(), *stored);
        }
    }
}

/// The RSA key pair used to receive passwords on plain connections.
pub struct RsaKeys {
    private: RsaPrivateKey,
    /// The public key as PEM (SubjectPublicKeyInfo), as sent to clients.
    public_pem: String,
    /// SHA256 of the DER public key, hex (logged at start).
    pub fingerprint: String,
}

impl RsaKeys {
    /// A new 2048-bit key pair.
    pub fn generate() -> Result<RsaKeys, String> {
        let mut rng = rand::thread_rng();
        let private = RsaPrivateKey::new(&mut rng, 2048).map_err(|e| e.to_string())?;
        RsaKeys::from_private(private)
    }

    /// Reads a PEM private key (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`).
    pub fn from_pem(pem: &str) -> Result<RsaKeys, String> {
        use rsa::pkcs1::DecodeRsaPrivateKey;
        let private = RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|e| format!("not a PEM RSA private key: {e}"))?;
        RsaKeys::from_private(private)
    }

    fn from_private(private: RsaPrivateKey) -> Result<RsaKeys, String> {
        let public = RsaPublicKey::from(&private);
        let public_pem = public
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| e.to_string())?;
        let der = public.to_public_key_der().map_err(|e| e.to_string())?;
        let fingerprint = Sha256::digest(der.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        Ok(RsaKeys {
            private,
            public_pem,
            fingerprint,
        })
    }

    /// The PEM public key sent to a client that asks for it.
    pub fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// Recovers the password from a client's encrypted answer: RSA-OAEP (SHA-1, as MySQL
    /// clients use) of `password NUL` XOR the nonce repeated. `None` for anything that does
    /// not decrypt or lacks the terminating NUL.
    pub fn decrypt_password(&self, ciphertext: &[u8], nonce: &[u8]) -> Option<Vec<u8>> {
        if ciphertext.is_empty() || nonce.is_empty() {
            return None;
        }
        let mut plain = self
            .private
            .decrypt(Oaep::new::<sha1::Sha1>(), ciphertext)
            .ok()?;
        for (i, b) in plain.iter_mut().enumerate() {
            *b ^= nonce[i % nonce.len()];
        }
        match plain.pop() {
            Some(0) => Some(plain),
            _ => None,
        }
    }

    /// Encrypts `password` the way a client does (for tests).
    pub fn client_encrypt(&self, password: &[u8], nonce: &[u8]) -> Vec<u8> {
        let mut plain = password.to_vec();
        plain.push(0);
        for (i, b) in plain.iter_mut().enumerate() {
            *b ^= nonce[i % nonce.len()];
        }
        let public = RsaPublicKey::from(&self.private);
        public
            .encrypt(&mut rand::thread_rng(), Oaep::new::<sha1::Sha1>(), &plain)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::auth::new_scramble;
    use proptest::prelude::*;
    use std::sync::OnceLock;

    fn keys() -> &'static RsaKeys {
        static KEYS: OnceLock<RsaKeys> = OnceLock::new();
        KEYS.get_or_init(|| RsaKeys::generate().unwrap())
    }

    #[test]
    fn scramble_verifies_only_with_the_right_password_and_nonce() {
        let stored = Sha2Hash::of_password(b"s3cret");
        let nonce = new_scramble();
        let answer = client_scramble(b"s3cret", &nonce);
        assert!(verify_scramble(&stored, &nonce, &answer));
        assert!(!verify_scramble(
            &stored,
            &nonce,
            &client_scramble(b"wrong", &nonce)
        ));
        assert!(!verify_scramble(&stored, &new_scramble(), &answer));
        assert!(!verify_scramble(&stored, &nonce, &answer[..31]));
        assert!(!verify_scramble(&stored, &nonce, &[]));
        assert!(verify_password(&stored, b"s3cret"));
        assert!(!verify_password(&stored, b"s3cre"));
    }

    #[test]
    fn cache_hits_only_for_the_same_hash() {
        let cache = Sha2Cache::default();
        let a = Sha2Hash::of_password(b"a");
        let b = Sha2Hash::of_password(b"b");
        assert!(!cache.contains("u", &a));
        cache.insert("u", &a);
        assert!(cache.contains("u", &a));
        assert!(!cache.contains("u", &b));
        assert!(!cache.contains("v", &a));
    }

    #[test]
    fn rsa_round_trip_and_bad_ciphertexts() {
        let k = keys();
        assert!(k.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        let nonce = new_scramble();
        let c = k.client_encrypt(b"pa\0ss word", &nonce);
        assert_eq!(
            k.decrypt_password(&c, &nonce).as_deref(),
            Some(&b"pa\0ss word"[..])
        );
        // Wrong nonce: the NUL terminator does not come out (or the password differs).
        assert_ne!(
            k.decrypt_password(&c, &new_scramble()).as_deref(),
            Some(&b"pa\0ss word"[..])
        );
        assert_eq!(k.decrypt_password(&[], &nonce), None);
        assert_eq!(k.decrypt_password(&c, &[]), None);
        assert_eq!(k.decrypt_password(&c[1..], &nonce), None);
        assert_eq!(k.decrypt_password(&[0u8; 256], &nonce), None);
        assert_eq!(k.decrypt_password(&[0xffu8; 256], &nonce), None);
        assert_eq!(k.decrypt_password(&[0xffu8; 4096], &nonce), None);
        // A PEM written out reads back to the same key.
        use rsa::pkcs8::EncodePrivateKey;
        let pem = k.private.to_pkcs8_pem(LineEnding::LF).unwrap();
        let again = RsaKeys::from_pem(&pem).unwrap();
        assert_eq!(again.fingerprint, k.fingerprint);
        assert!(RsaKeys::from_pem(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
        )
        .is_err());
        assert!(RsaKeys::from_pem("").is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn arbitrary_payloads_never_panic(data in proptest::collection::vec(any::<u8>(), 0..600), nonce in proptest::collection::vec(any::<u8>(), 0..40)) {
            let _ = keys().decrypt_password(&data, &nonce);
            let stored = Sha2Hash::of_password(b"x");
            prop_assert!(!verify_scramble(&stored, &nonce, &data) || data.len() == 32);
        }
    }
}
