//! Accounts, public API keys and agent tokens.
//!
//! Secrets are shown once, when they are made, and stored only as their
//! SHA-256 hash: a leaked database does not leak working keys. Looking a key
//! up means hashing what the caller sent and finding that hash.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::id::{AccountId, ApiKeyId};
use crate::validation::Invalid;

/// An account's unique name (`default`, `acme-hosting`): 1..=64 of
/// lowercase ASCII letters, digits, `-`, `_` and `.`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountName(String);

impl AccountName {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for AccountName {
    type Err = Invalid;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
        if s.is_empty() || s.len() > 64 || !s.chars().all(ok_char) {
            return Err(Invalid::new(
                "account",
                "must be 1 to 64 characters of lowercase letters, digits, '-', '_' or '.'",
            ));
        }
        Ok(Self(s.to_owned()))
    }
}

impl TryFrom<String> for AccountName {
    type Error = Invalid;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<AccountName> for String {
    fn from(value: AccountName) -> Self {
        value.0
    }
}

impl fmt::Display for AccountName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Its ID.
    pub id: AccountId,
    /// Its unique name.
    pub name: AccountName,
    /// A suspended account's keys answer "account suspended" (402).
    pub suspended: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
}

/// The SHA-256 of a secret: what the store keeps and looks up by.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// The hash of `secret`.
    pub fn of(secret: &str) -> Self {
        Self(Sha256::digest(secret.as_bytes()).into())
    }

    /// The raw digest.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Rebuilds a hash from its digest (as a store reads it back).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// Lowercase hex, for text columns and logs.
    pub fn to_hex(&self) -> String {
        use fmt::Write;
        self.0.iter().fold(String::with_capacity(64), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
    }

    /// Parses lowercase or uppercase hex of 64 digits.
    pub fn from_hex(hex: &str) -> Option<Self> {
        if hex.len() != 64 || !hex.is_ascii() {
            return None;
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(Self(out))
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretHash({}…)", &self.to_hex()[..12])
    }
}

/// The random part's length in generated secrets (≈238 bits).
const SECRET_CHARS: usize = 40;

fn random_suffix() -> String {
    rand::rng().sample_iter(&Alphanumeric).take(SECRET_CHARS).map(char::from).collect()
}

fn check_secret(prefix: &str, text: &str, what: &'static str) -> Result<(), Invalid> {
    let ok = text
        .strip_prefix(prefix)
        .is_some_and(|rest| (24..=128).contains(&rest.len()) && rest.chars().all(|c| c.is_ascii_alphanumeric()));
    if ok {
        Ok(())
    } else {
        Err(Invalid::new(what, format!("must be {prefix} followed by 24 to 128 letters and digits")))
    }
}

macro_rules! secret {
    ($(#[$doc:meta])* $name:ident, $prefix:literal, $what:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq)]
        pub struct $name(String);

        impl $name {
            /// The prefix every such secret starts with.
            pub const PREFIX: &'static str = $prefix;

            /// A fresh random secret.
            pub fn generate() -> Self {
                Self(format!("{}{}", Self::PREFIX, random_suffix()))
            }

            /// The secret's text, to show once.
            pub fn expose(&self) -> &str {
                &self.0
            }

            /// Its hash, for storing and looking up.
            pub fn hash(&self) -> SecretHash {
                SecretHash::of(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = Invalid;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                check_secret(Self::PREFIX, s, $what)?;
                Ok(Self(s.to_owned()))
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({}…)", stringify!($name), Self::PREFIX)
            }
        }
    };
}

secret!(
    /// A public API key, `pakkt_pub_<random>`. `Debug` never shows it.
    ApiKey,
    "pakkt_pub_",
    "api_key"
);
secret!(
    /// An agent's token, `pakkt_agent_<random>`, scoped to that agent and
    /// useless on the public API. `Debug` never shows it.
    AgentToken,
    "pakkt_agent_",
    "token"
);

/// An API key as stored: never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// Its ID (what `keys revoke` takes).
    pub id: ApiKeyId,
    /// The owner.
    pub account_id: AccountId,
    /// The secret's hash.
    pub hash: SecretHash,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_secrets_have_their_prefix_and_parse_back() {
        let key = ApiKey::generate();
        assert!(key.expose().starts_with("pakkt_pub_"));
        assert_eq!(key.expose().parse::<ApiKey>().expect("parse"), key);
        let token = AgentToken::generate();
        assert!(token.expose().starts_with("pakkt_agent_"));
        assert_ne!(ApiKey::generate(), key);
    }

    #[test]
    fn malformed_secrets_are_refused() {
        for bad in [
            "",
            "pakkt_pub_",
            "pakkt_pub_short",
            "pakkt_agent_0123456789012345678901234",
            "PAKKT_PUB_012345678901234567890123",
            "pakkt_pub_0123456789012345678901234!",
        ] {
            assert!(bad.parse::<ApiKey>().is_err(), "{bad:?}");
        }
        assert!("pakkt_pub_012345678901234567890123".parse::<ApiKey>().is_ok());
        assert!("pakkt_pub_012345678901234567890123".parse::<AgentToken>().is_err());
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let key = ApiKey::generate();
        let shown = format!("{key:?}");
        assert!(!shown.contains(&key.expose()[10..]), "{shown}");
    }

    #[test]
    fn hashes_are_sha256_and_round_trip_hex() {
        let hash = SecretHash::of("abc");
        assert_eq!(hash.to_hex(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        assert_eq!(SecretHash::from_hex(&hash.to_hex()), Some(hash));
        assert_eq!(SecretHash::from_hex("zz"), None);
        assert_eq!(SecretHash::from_hex(&"é".repeat(32)), None);
    }

    #[test]
    fn account_names_are_slugs() {
        assert!("default".parse::<AccountName>().is_ok());
        assert!("acme-hosting.eu_1".parse::<AccountName>().is_ok());
        for bad in ["", "Default", "a b", &"a".repeat(65)] {
            assert!(bad.parse::<AccountName>().is_err(), "{bad:?}");
        }
    }
}
