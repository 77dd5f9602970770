//! `mysql_native_password`: the challenge (scramble), the server-side check of a client's
//! answer against a stored double-SHA1 hash, and the client-side answer (used by the
//! backend connector).
//!
//! answer = SHA1(password) XOR SHA1(scramble ++ SHA1(SHA1(password)))
//! The server, holding only SHA1(SHA1(password)), recovers SHA1(password) from the answer
//! and checks that hashing it once more gives the stored value.

use rand::Rng;
use sha1::{Digest, Sha1};
use shardgate_config::PasswordHash;

pub const NATIVE_PASSWORD: &str = "mysql_native_password";

/// 20 random printable bytes (no NUL, so the greeting's NUL-terminated part stays intact).
pub fn new_scramble() -> [u8; 20] {
    let mut rng = rand::thread_rng();
    let mut s = [0u8; 20];
    for b in &mut s {
        *b = rng.gen_range(0x21..0x7f);
    }
    s
}

/// Checks a client's `mysql_native_password` answer.
pub fn verify_native(stored: &PasswordHash, scramble: &[u8], answer: &[u8]) -> bool {
    match stored {
        PasswordHash::Empty => answer.is_empty(),
        PasswordHash::DoubleSha1(stage2) => {
            if answer.len() != 20 {
                return false;
            }
            let mut h = Sha1::new();
            h.update(scramble);
            h.update(stage2);
            let mask = h.finalize();
            let mut stage1 = [0u8; 20];
            for i in 0..20 {
                stage1[i] = answer[i] ^ mask[i];
            }
            let check = Sha1::digest(stage1);
            // Constant-time comparison: no early exit on the first differing byte.
            check
                .iter()
                .zip(stage2.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
        }
    }
}

/// The answer a client sends for `password` to the server's `scramble`.
pub fn native_answer(password: &[u8], scramble: &[u8]) -> Vec<u8> {
    if password.is_empty() {
        return Vec::new();
    }
    let stage1 = Sha1::digest(password);
    let stage2 = Sha1::digest(stage1);
    let mut h = Sha1::new();
    h.update(scramble);
    h.update(stage2);
    let mask = h.finalize();
    stage1.iter().zip(mask.iter()).map(|(a, b)| a ^ b).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardgate_config::hash_password;

    #[test]
    fn client_answer_verifies_against_stored_hash() {
        let stored = PasswordHash::parse(&hash_password("s3cret")).unwrap();
        let scramble = new_scramble();
        let answer = native_answer(b"s3cret", &scramble);
        assert!(verify_native(&stored, &scramble, &answer));
        assert!(!verify_native(
            &stored,
            &scramble,
            &native_answer(b"wrong", &scramble)
        ));
        assert!(!verify_native(&stored, &new_scramble(), &answer));
        assert!(!verify_native(&stored, &scramble, &[]));
        assert!(!verify_native(&stored, &scramble, &answer[..19]));
    }

    #[test]
    fn empty_password_accepts_only_empty_answer() {
        let scramble = new_scramble();
        assert!(verify_native(&PasswordHash::Empty, &scramble, &[]));
        assert!(!verify_native(
            &PasswordHash::Empty,
            &scramble,
            &native_answer(b"x", &scramble)
        ));
    }
}
