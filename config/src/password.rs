//! MySQL `mysql_native_password` hashes: the `*`-prefixed, upper-case hex of SHA1(SHA1(password)).
//!
//! The proxy stores only this double hash, never the password. It is exactly what
//! `SELECT PASSWORD('secret')` prints on MariaDB, so existing hashes can be copied over.

use sha1::{Digest, Sha1};

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
