//! The web panel's sessions as use cases: signing in, finding the session
//! of a cookie, its one-time notice, signing out. The rules are
//! [`crate::panel`]'s; the sessions live in the store
//! ([`crate::store::SessionStore`]), so any server process on the same
//! database serves any session.

use super::{Pakkt, Session, internal};
use crate::account::ApiKey;
use crate::clock::Clock;
use crate::error::{Error, ErrorKind, Result};
use crate::panel::{PanelSession, SESSIONS_PER_ACCOUNT, SessionToken};
use crate::store::{Store, StoreError};

/// A signed-in panel request: its stored session and the key's check.
#[derive(Debug, Clone)]
pub struct SignedIn {
    /// The session as stored (its CSRF token, account, times).
    pub panel: PanelSession,
    /// The key's account and ID, as [`Pakkt::reauthenticate`] found them.
    pub session: Session,
}

impl<S: Store, C: Clock> Pakkt<S, C> {
    /// Signs a panel in with an API key: the key is checked and counted as
    /// one of its requests, as [`Pakkt::authenticate`] does (401, 402,
    /// 429), then a new session is stored. Past
    /// [`SESSIONS_PER_ACCOUNT`], the account's least recently used sessions
    /// end; sessions of everyone that have expired are deleted. Returns
    /// the token for the cookie (shown nowhere else) and the session.
    pub async fn sign_in(&self, api_key: &str) -> Result<(SessionToken, SignedIn)> {
        let session = self.authenticate(Some(api_key)).await?;
        let key: ApiKey = api_key.trim().parse().map_err(|_| Error::Unauthenticated)?;
        let now = self.clock.now();
        // Sign-ins are few: a good moment to sweep what expired.
        self.store.purge_expired_sessions(now).await.map_err(internal)?;
        let token = SessionToken::generate();
        let panel = PanelSession::new(&token, key.hash(), session.account.id, now);
        self.store.start_session(&panel, SESSIONS_PER_ACCOUNT).await.map_err(|e| match e {
            // Revoked between the check and the start.
            StoreError::NotFound => Error::Unauthenticated,
            other => internal(other),
        })?;
        Ok((token, SignedIn { panel, session }))
    }

    /// The live session of a cookie's token, with its key re-checked
    /// without counting ([`Pakkt::reauthenticate`]), and its use recorded.
    /// `None` when the token names no live session: none, expired, or one
    /// whose key no longer signs in (revoked, or its account suspended);
    /// such a session is ended. Only a failing store is an error (and
    /// changes nothing).
    pub async fn panel_session(&self, token: &str) -> Result<Option<SignedIn>> {
        let Some(token) = SessionToken::parse(token) else { return Ok(None) };
        let hash = token.hash();
        let Some(mut panel) = self.store.session(&hash).await.map_err(internal)? else { return Ok(None) };
        let now = self.clock.now();
        if !panel.is_live(now) {
            self.store.end_session(&hash).await.map_err(internal)?;
            return Ok(None);
        }
        let session = match self.reauthenticate(&panel.key_hash).await {
            Ok(session) => session,
            Err(e) if e.kind() == ErrorKind::Internal => return Err(e),
            Err(_) => {
                self.store.end_session(&hash).await.map_err(internal)?;
                return Ok(None);
            }
        };
        if panel.renew(now) {
            self.store.renew_session(&hash, panel.last_seen_at, panel.expires_at).await.map_err(internal)?;
        }
        Ok(Some(SignedIn { panel, session }))
    }

    /// Ends the session of a cookie's token, if there is one.
    pub async fn sign_out(&self, token: &str) -> Result<()> {
        match SessionToken::parse(token) {
            Some(token) => self.store.end_session(&token.hash()).await.map_err(internal),
            None => Ok(()),
        }
    }

    /// Leaves a one-time notice for the session's next page, replacing
    /// any. The notice is opaque here: the panel seals it (a secret shown
    /// once must not lie in the database in the clear).
    pub async fn set_panel_notice(&self, panel: &PanelSession, sealed: &[u8]) -> Result<()> {
        self.store.set_session_notice(&panel.token_hash, sealed).await.map_err(internal)
    }

    /// Takes the session's notice: it is handed out once.
    pub async fn take_panel_notice(&self, panel: &PanelSession) -> Result<Option<Vec<u8>>> {
        self.store.take_session_notice(&panel.token_hash).await.map_err(internal)
    }
}
