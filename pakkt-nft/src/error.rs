//! The firewall's errors.

use std::io;

use pakkt_core::dataplane::DataplaneError;

/// Why the firewall could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    /// The `nft` program is not installed.
    #[error("{program} not found: install the nftables package (apt-get install nftables)")]
    Missing {
        /// The program looked for.
        program: String,
    },
    /// `nft` could not be started or talked to.
    #[error("running {program}")]
    Spawn {
        /// The program.
        program: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// nftables refused the change (or the listing); nothing changed.
    #[error("nftables refused the change: {message}")]
    Refused {
        /// nftables' message.
        message: String,
    },
    /// `nft -j list` printed something that is not the JSON schema.
    #[error("reading the nftables listing")]
    Listing(#[source] serde_json::Error),
}

impl From<NftError> for DataplaneError {
    fn from(e: NftError) -> Self {
        match e {
            NftError::Refused { message } => Self::Rejected(message),
            other => Self::Unavailable(Box::new(other)),
        }
    }
}
