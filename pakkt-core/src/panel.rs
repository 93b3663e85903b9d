//! Web panel sessions: a browser that signed in with an API key.
//!
//! The browser holds a random [`SessionToken`] in a cookie; the store keeps
//! a [`PanelSession`] found by the token's SHA-256, never the token itself,
//! so a leaked database opens no session. Sessions live in the store (see
//! [`crate::store::SessionStore`]), so every server process on one database
//! serves every session: replicas behind a load balancer need no sticky
//! routing, and a restart signs nobody out.
//!
//! The rules are here, once, for every store:
//! - a session unused for [`IDLE_TIMEOUT`] is over
//!   ([`PanelSession::is_live`]); use renews it, written at most once per
//!   [`RENEW_AFTER`] so that a page refreshed every few seconds does not
//!   write every few seconds;
//! - an account keeps at most [`SESSIONS_PER_ACCOUNT`] sessions: past that
//!   its own least recently used go ([`sessions_to_end`]), so no account can
//!   push another's out, and the table is bounded by the number of
//!   accounts (which only the operator creates) and by expiry;
//! - a session belongs to the key it signed in with: revoking or replacing
//!   the key ends it.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngCore;

use crate::account::SecretHash;
use crate::id::AccountId;

/// A session unused for this long is over.
pub const IDLE_TIMEOUT: Duration = Duration::from_hours(12);

/// A session's use is written at most this often: its expiry may come up
/// to this much earlier than [`IDLE_TIMEOUT`] after its very last use.
pub const RENEW_AFTER: Duration = Duration::from_mins(1);

/// Most sessions one account keeps; past that its own least recently used
/// go, so that no account (signing in again and again, with one key or
/// many) can push other accounts' sessions out.
pub const SESSIONS_PER_ACCOUNT: usize = 32;

/// 32 random bytes from the thread's CSPRNG (seeded by the operating
/// system), as 64 lowercase hex digits.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().fold(String::with_capacity(64), |mut out, b| {
        use fmt::Write as _;
        let _ = write!(out, "{b:02x}");
        out
    })
}

/// A session's secret: the cookie's value, 64 lowercase hex digits (256
/// random bits). Shown to the browser once; the store keeps only its hash.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionToken(String);

impl SessionToken {
    /// A new random token.
    pub fn generate() -> Self {
        Self(random_hex())
    }

    /// A token as a cookie carries it; `None` unless it has the shape of
    /// one (anything else names no session, and is not even hashed).
    pub fn parse(text: &str) -> Option<Self> {
        (text.len() == 64 && text.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            .then(|| Self(text.to_owned()))
    }

    /// The token itself, for the cookie.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the store finds the session by.
    pub fn hash(&self) -> SecretHash {
        SecretHash::of(&self.0)
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(…)")
    }
}

/// A signed-in panel session, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelSession {
    /// The SHA-256 of the session's token: its identity in the store.
    pub token_hash: SecretHash,
    /// The SHA-256 of the API key it signed in with (as the key is stored).
    pub key_hash: SecretHash,
    /// The key's account.
    pub account: AccountId,
    /// The token every form of the session carries (against cross-site
    /// requests; useless without the cookie).
    pub csrf: String,
    /// When it signed in.
    pub created_at: DateTime<Utc>,
    /// When it was last used (to [`RENEW_AFTER`]).
    pub last_seen_at: DateTime<Utc>,
    /// When it ends unless used again.
    pub expires_at: DateTime<Utc>,
}

fn idle() -> chrono::Duration {
    chrono::Duration::from_std(IDLE_TIMEOUT).unwrap_or(chrono::Duration::MAX)
}

impl PanelSession {
    /// A new session of `token` for a key of `account`, signed in at `now`,
    /// with a fresh CSRF token.
    pub fn new(token: &SessionToken, key_hash: SecretHash, account: AccountId, now: DateTime<Utc>) -> Self {
        Self {
            token_hash: token.hash(),
            key_hash,
            account,
            csrf: random_hex(),
            created_at: now,
            last_seen_at: now,
            expires_at: now + idle(),
        }
    }

    /// Whether the session is still on at `now`.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        now < self.expires_at
    }

    /// Marks the session used at `now` and returns whether that must be
    /// written (its last recorded use is [`RENEW_AFTER`] old or more).
    pub fn renew(&mut self, now: DateTime<Utc>) -> bool {
        let due = chrono::Duration::from_std(RENEW_AFTER).unwrap_or(chrono::Duration::MAX);
        if now - self.last_seen_at < due {
            return false;
        }
        self.last_seen_at = now;
        self.expires_at = now + idle();
        true
    }
}

/// Which of an account's sessions end when `new` starts, for the account
/// to keep at most `keep` (at least the new one): the least recently used
/// of the others (then the oldest, then by token hash, so every store
/// picks the same). `sessions` are the account's sessions, with or
/// without `new`.
pub fn sessions_to_end(sessions: &[PanelSession], new: &SecretHash, keep: usize) -> Vec<SecretHash> {
    let mut others: Vec<&PanelSession> = sessions.iter().filter(|s| s.token_hash != *new).collect();
    others.sort_by(|a, b| {
        b.last_seen_at.cmp(&a.last_seen_at).then(b.created_at.cmp(&a.created_at)).then(a.token_hash.cmp(&b.token_hash))
    });
    others.into_iter().skip(keep.saturating_sub(1)).map(|s| s.token_hash).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(minutes: i64) -> DateTime<Utc> {
        crate::testing::t0() + chrono::Duration::minutes(minutes)
    }

    #[test]
    fn tokens_are_random_hex_and_only_their_shape_parses() {
        let token = SessionToken::generate();
        assert_eq!(token.expose().len(), 64);
        assert_ne!(token, SessionToken::generate());
        assert_eq!(SessionToken::parse(token.expose()), Some(token.clone()));
        assert_eq!(token.hash(), SecretHash::of(token.expose()));
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"0".repeat(65)] {
            assert_eq!(SessionToken::parse(bad), None, "{bad:?}");
        }
        assert!(!format!("{token:?}").contains(token.expose()), "never printed");
    }

    #[test]
    fn a_session_lasts_while_used_and_writes_its_use_once_a_minute() {
        let token = SessionToken::generate();
        let mut session = PanelSession::new(&token, SecretHash::of("k"), AccountId::generate(), at(0));
        assert_eq!(session.token_hash, token.hash());
        assert_eq!(session.csrf.len(), 64);
        assert_ne!(session.csrf, token.expose());
        assert!(session.is_live(at(12 * 60 - 1)));
        assert!(!session.is_live(at(12 * 60)), "12 h unused: over");
        assert!(!session.renew(at(0) + chrono::Duration::seconds(59)), "used again within a minute: not written");
        assert!(session.renew(at(11 * 60)));
        assert_eq!(session.last_seen_at, at(11 * 60));
        assert!(session.is_live(at(23 * 60 - 1)) && !session.is_live(at(23 * 60)));
    }

    #[test]
    fn an_account_over_its_cap_ends_its_least_recently_used_sessions() {
        let account = AccountId::generate();
        let session = |seen: i64| {
            let mut s = PanelSession::new(&SessionToken::generate(), SecretHash::of("k"), account, at(0));
            s.last_seen_at = at(seen);
            s
        };
        let sessions = vec![session(5), session(1), session(9), session(3)];
        let new = session(10);
        let mut all = sessions.clone();
        all.push(new.clone());
        let ended = sessions_to_end(&all, &new.token_hash, 3);
        assert_eq!(ended, vec![sessions[3].token_hash, sessions[1].token_hash], "the two least recently used");
        assert_eq!(sessions_to_end(&sessions, &new.token_hash, 3).len(), 2, "with or without the new one");
        assert!(sessions_to_end(&all, &new.token_hash, 5).is_empty());
        assert_eq!(sessions_to_end(&all, &new.token_hash, 0).len(), 4, "never the new one");
    }
}
