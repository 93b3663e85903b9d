//! Panel sessions, as the browser sees them: a random token in a cookie.
//!
//! The session itself lives in the database (`pakkt_core::panel`,
//! `SessionStore`), found by the SHA-256 of the token, so any server
//! process on the database serves it. What is left here is the cookie's
//! name, the one-time notice and its seal, and a constant-time comparison
//! for the forms' CSRF tokens.
//!
//! **Sealed notices.** A notice can hold a secret shown once (a new
//! agent's token, a new API key) between the form that made it and the
//! page that shows it, which another replica may serve; so it goes through
//! the database. There it is sealed (AES-256-GCM, random nonce) with a key
//! derived (HKDF-SHA-256) from the session's token, which only the browser
//! holds: the database, its backups and its logs never hold the secret in
//! a form anyone can read, exactly as they hold keys only as hashes.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::hkdf::{HKDF_SHA256, Salt};
use pakkt_core::panel::SessionToken;
use rand::RngCore;
use serde::{Deserialize, Serialize};

/// The cookie's name.
pub const COOKIE: &str = "pakkt_session";

pub use pakkt_core::panel::IDLE_TIMEOUT;

/// The HKDF salt of notice keys: a notice key is used for nothing else.
const NOTICE_SALT: &[u8] = b"pakkt panel notice v1";

/// A one-time notice for the next page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Notice {
    /// Something worked.
    Done(String),
    /// A secret shown once: a heading, the secret, and how to use it.
    Secret {
        /// What it is.
        title: String,
        /// The secret.
        secret: String,
        /// How to use it.
        hint: String,
    },
}

/// The key that seals the notices of the session with this token.
fn notice_key(token: &SessionToken) -> Option<LessSafeKey> {
    let prk = Salt::new(HKDF_SHA256, NOTICE_SALT).extract(token.expose().as_bytes());
    let okm = prk.expand(&[], &AES_256_GCM).ok()?;
    Some(LessSafeKey::new(UnboundKey::from(okm)))
}

/// The notice sealed for the session with this token: nonce, then the
/// ciphertext with its tag. `None` only if the crypto library fails.
pub fn seal(token: &SessionToken, notice: &Notice) -> Option<Vec<u8>> {
    let key = notice_key(token)?;
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let mut text = serde_json::to_vec(notice).ok()?;
    key.seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut text).ok()?;
    let mut sealed = nonce.to_vec();
    sealed.append(&mut text);
    Some(sealed)
}

/// The notice in `sealed`, if this session's token sealed it (anything
/// else, altered or not a notice, is `None`).
pub fn open(token: &SessionToken, sealed: &[u8]) -> Option<Notice> {
    let key = notice_key(token)?;
    let (nonce, text) = sealed.split_at_checked(NONCE_LEN)?;
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut text = text.to_vec();
    let plain = key.open_in_place(nonce, Aad::empty(), &mut text).ok()?;
    serde_json::from_slice(plain).ok()
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_opens_only_with_its_session_s_token_and_hides_its_secret() {
        let token = SessionToken::generate();
        let notice = Notice::Secret {
            title: "Key created".into(),
            secret: "pakkt_pub_secretSecretSecret0123456789".into(),
            hint: "Use it.".into(),
        };
        let sealed = seal(&token, &notice).expect("sealed");
        assert!(
            !sealed.windows(b"pakkt_pub_".len()).any(|w| w == b"pakkt_pub_"),
            "the secret is not in the sealed bytes"
        );
        assert_ne!(seal(&token, &notice), Some(sealed.clone()), "a fresh nonce each time");
        assert_eq!(open(&token, &sealed), Some(notice.clone()));
        assert_eq!(open(&SessionToken::generate(), &sealed), None, "another session's token");
        let mut altered = sealed.clone();
        if let Some(last) = altered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(open(&token, &altered), None, "altered");
        assert_eq!(open(&token, &sealed[..5]), None, "truncated");
        assert_eq!(open(&token, &[]), None);
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
    }
}
