//! Panel sessions: random IDs in a cookie, state in this process's memory.
//!
//! A session holds only what the panel needs to act for the person who
//! signed in: the SHA-256 of their API key (the same digest the database
//! keeps; the key itself is never stored or logged), a CSRF token for the
//! forms, and a one-time notice to show on the next page (a created agent's
//! token or a created key is shown once this way, then forgotten). Each
//! page re-checks the key through
//! [`Pakkt::reauthenticate`](pakkt_core::service::Pakkt::reauthenticate),
//! so revoking the key or suspending the account ends its sessions at once.
//!
//! Sessions live in memory: a restart signs everyone out, and several
//! server processes behind one address would need sticky routing. Both are
//! fine for a self-hosted control plane; see `docs/panel.md`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use pakkt_core::account::SecretHash;
use pakkt_core::id::AccountId;
use rand::RngCore;

/// The cookie's name.
pub const COOKIE: &str = "pakkt_session";

/// A session unused for this long is gone.
pub const IDLE_TIMEOUT: Duration = Duration::from_hours(12);

/// Most sessions kept at once; past that the least recently used goes.
const MAX_SESSIONS: usize = 10_000;

/// Most sessions one account keeps; past that its own least recently used
/// goes, so that no account (signing in again and again, with one key or
/// many) can push other accounts' sessions out.
const MAX_SESSIONS_PER_ACCOUNT: usize = 32;

/// A one-time notice for the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// What a session knows.
#[derive(Debug, Clone)]
pub struct SessionData {
    /// The digest of the API key that signed in.
    pub key_hash: SecretHash,
    /// The key's account.
    pub account: AccountId,
    /// The token every form of this session carries.
    pub csrf: String,
    /// Shown once on the next page.
    pub notice: Option<Notice>,
    last_used: Instant,
}

/// The sessions of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, SessionData>>,
}

/// 32 random bytes from the operating system's CSPRNG-seeded generator, hex.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        use std::fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// Compares two secrets in time that depends only on their lengths.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Sessions {
    /// No sessions.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SessionData>> {
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts a session for a key of `account`; returns its ID (the
    /// cookie's value).
    pub fn start(&self, key_hash: SecretHash, account: AccountId) -> String {
        let id = random_token();
        let now = Instant::now();
        let mut map = self.lock();
        map.retain(|_, s| now.duration_since(s.last_used) < IDLE_TIMEOUT);
        let oldest = |map: &HashMap<String, SessionData>, of: Option<AccountId>| {
            map.iter()
                .filter(|(_, s)| of.is_none_or(|a| s.account == a))
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| k.clone())
        };
        if map.values().filter(|s| s.account == account).count() >= MAX_SESSIONS_PER_ACCOUNT
            && let Some(old) = oldest(&map, Some(account))
        {
            map.remove(&old);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(old) = oldest(&map, None)
        {
            map.remove(&old);
        }
        let data = SessionData { key_hash, account, csrf: random_token(), notice: None, last_used: now };
        map.insert(id.clone(), data);
        id
    }

    /// The session with that ID, if it is live (and marks it used).
    pub fn get(&self, id: &str) -> Option<SessionData> {
        let now = Instant::now();
        let mut map = self.lock();
        let session = map.get_mut(id)?;
        if now.duration_since(session.last_used) >= IDLE_TIMEOUT {
            map.remove(id);
            return None;
        }
        session.last_used = now;
        Some(session.clone())
    }

    /// Takes the session's notice (it is shown once).
    pub fn take_notice(&self, id: &str) -> Option<Notice> {
        self.lock().get_mut(id).and_then(|s| s.notice.take())
    }

    /// Sets the notice for the session's next page.
    pub fn set_notice(&self, id: &str, notice: Notice) {
        if let Some(session) = self.lock().get_mut(id) {
            session.notice = Some(notice);
        }
    }

    /// Ends a session.
    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Ends every session of a key (after it is revoked).
    pub fn end_all_of(&self, key_hash: &SecretHash) {
        self.lock().retain(|_, s| s.key_hash != *key_hash);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_start_carry_a_notice_once_and_end() {
        let sessions = Sessions::new();
        let hash = SecretHash::of("pakkt_pub_x");
        let id = sessions.start(hash, AccountId::generate());
        assert_eq!(id.len(), 64);
        let data = sessions.get(&id).expect("live");
        assert_eq!(data.key_hash, hash);
        assert_eq!(data.csrf.len(), 64);
        assert_ne!(data.csrf, id);
        sessions.set_notice(&id, Notice::Done("ok".into()));
        assert_eq!(sessions.take_notice(&id), Some(Notice::Done("ok".into())));
        assert_eq!(sessions.take_notice(&id), None, "shown once");
        assert!(sessions.get("nope").is_none());
        sessions.end(&id);
        assert!(sessions.get(&id).is_none());
    }

    #[test]
    fn revoking_a_key_ends_its_sessions_only() {
        let sessions = Sessions::new();
        let account = AccountId::generate();
        let a = sessions.start(SecretHash::of("a"), account);
        let b = sessions.start(SecretHash::of("b"), account);
        sessions.end_all_of(&SecretHash::of("a"));
        assert!(sessions.get(&a).is_none());
        assert!(sessions.get(&b).is_some());
    }

    #[test]
    fn one_account_cannot_push_out_another_accounts_sessions() {
        let sessions = Sessions::new();
        let other = sessions.start(SecretHash::of("other"), AccountId::generate());
        let busy = AccountId::generate();
        let first = sessions.start(SecretHash::of("k0"), busy);
        for n in 1..100 {
            sessions.start(SecretHash::of(&format!("k{n}")), busy);
        }
        assert!(sessions.get(&other).is_some(), "another account's session stays");
        assert!(sessions.get(&first).is_none(), "the busy account's oldest went");
        let kept = sessions.lock().values().filter(|s| s.account == busy).count();
        assert_eq!(kept, MAX_SESSIONS_PER_ACCOUNT);
    }

    #[test]
    fn secrets_compare_by_content() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert_ne!(random_token(), random_token());
    }
}
