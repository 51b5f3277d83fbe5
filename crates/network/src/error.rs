//! Typed errors of cubby-network: each names the thing that failed.

use std::path::PathBuf;

pub type Result<T, E = NetError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("netlink: {what}: {message}")]
    Netlink { what: String, message: String },
    #[error("nftables: {0}")]
    Nft(String),
    #[error("network {0} not found")]
    NotFound(String),
    #[error("network with name {0} already exists")]
    Exists(String),
    #[error("invalid network request: {0}")]
    Invalid(String),
    #[error("network {network}: no free address left in {subnet}; remove containers or use a larger --subnet")]
    Exhausted { network: String, subnet: String },
    #[error(
        "network {network} has active endpoints ({containers}); disconnect or remove them first"
    )]
    InUse { network: String, containers: String },
    #[error("corrupt network state {path}: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{0}")]
    State(#[from] cubby_runtime::Error),
}

impl NetError {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        NetError::Io {
            what: what.into(),
            source,
        }
    }
}
