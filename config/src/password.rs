//! MySQL `mysql_native_password` hashes: the `*`-prefixed, upper-case hex of SHA1(SHA1(password)).
//!
//! The proxy stores only this double hash, never the password. It is exactly what
//! `SELECT PASSWORD('secret')` prints on MariaDB, so existing hashes can be copied over.
//!
//! `caching_sha2_password` hashes ([`Sha2Hash`]) are `sha256:` and the hex of
//! SHA256(SHA256(password)), what that plugin's scramble check needs.

use sha1::{Digest, Sha1};
use sha2::Sha256;

/// A parsed `password_hash` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordHash {
    /// The account has no password: only an empty auth response is accepted.
    Empty,
    /// SHA1(SHA1(password)).
    DoubleSha1([u8; 20]),
}

impl PasswordHash {
    /// Parses `""` or `*` followed by 40 hex digits.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        if text.is_empty() {
            return Ok(PasswordHash::Empty);
        }
        let hex = text
            .strip_prefix('*')
            .ok_or_else(|| "must start with '*' (use shardctl hash-password)".to_string())?;
        if hex.len() != 40 {
            return Err(format!(
                "must be '*' and 40 hex digits, got {} digits",
                hex.len()
            ));
        }
        let mut out = [0u8; 20];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| "must be '*' and 40 hex digits".to_string())?;
        }
        Ok(PasswordHash::DoubleSha1(out))
    }
}

/// The `*`-prefixed double-SHA1 hash of `password`, as MariaDB's `PASSWORD()` prints it.
/// An empty password hashes to the empty string (no password).
pub fn hash_password(password: &str) -> String {
    if password.is_empty() {
        return String::new();
    }
    let stage1 = Sha1::digest(password.as_bytes());
    let stage2 = Sha1::digest(stage1);
    let mut out = String::with_capacity(41);
    out.push('*');
    for b in stage2 {
        out.push_str(&format!("{b:02X}"));
    }
    out
}

/// A parsed `caching_sha2_hash` setting: SHA256(SHA256(password)), which is what the
/// `caching_sha2_password` scramble check needs and from which the password cannot be
/// recovered (only guessed, as with the native hash).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sha2Hash(pub [u8; 32]);

/// The prefix of a `caching_sha2_hash` setting.
const SHA2_PREFIX: &str = "sha256:";

impl Sha2Hash {
    /// Parses `""` (not configured: `None`) or `sha256:` followed by 64 hex digits.
    pub fn parse(text: &str) -> Result<Option<Sha2Hash>, String> {
        if text.is_empty() {
            return Ok(None);
        }
        let hex = text.strip_prefix(SHA2_PREFIX).ok_or_else(|| {
            format!("must start with {SHA2_PREFIX:?} (use shardctl hash-password)")
        })?;
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(format!(
                "must be {SHA2_PREFIX:?} and 64 hex digits, got {} characters",
                hex.len()
            ));
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| format!("must be {SHA2_PREFIX:?} and 64 hex digits"))?;
        }
        Ok(Some(Sha2Hash(out)))
    }

    /// SHA256(SHA256(password)).
    pub fn of_password(password: &[u8]) -> Sha2Hash {
        let stage1 = Sha256::digest(password);
        Sha2Hash(Sha256::digest(stage1).into())
    }
}

/// The `caching_sha2_hash` setting for `password`: `sha256:` and the lower-case hex of
/// SHA256(SHA256(password)). An empty password gives the empty string (no password).
pub fn hash_password_sha2(password: &str) -> String {
    if password.is_empty() {
        return String::new();
    }
    let mut out = String::with_capacity(SHA2_PREFIX.len() + 64);
    out.push_str(SHA2_PREFIX);
    for b in Sha2Hash::of_password(password.as_bytes()).0 {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha2_hash_round_trips_and_rejects_junk() {
        let text = hash_password_sha2("s3cret");
        let parsed = Sha2Hash::parse(&text).unwrap().unwrap();
        assert_eq!(parsed, Sha2Hash::of_password(b"s3cret"));
        assert_eq!(Sha2Hash::parse("").unwrap(), None);
        assert_eq!(hash_password_sha2(""), "");
        for junk in [
            "abc",
            "sha256:",
            "sha256:zz",
            &format!("sha256:{}", "g".repeat(64)),
            &format!("sha256:{}", "é".repeat(32)),
            &text[..text.len() - 1],
        ] {
            assert!(Sha2Hash::parse(junk).is_err(), "{junk:?}");
        }
    }
}
