//! Image references, normalised as Docker does.
//!
//! INTERFACE (owned by the registry helper).

use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// "docker.io", "localhost:5000", "ghcr.io" ...
    pub registry: String,
    /// "library/alpine", "ns/name" ...
    pub repository: String,
    pub tag: Option<String>,
    /// "sha256:..." when pinned.
    pub digest: Option<String>,
}

impl Reference {
    /// `name`, `name:tag`, `name@sha256:...`, `host:port/ns/name:tag`;
    /// `docker.io` and `library/` implied, tag `latest` when neither tag nor digest.
    pub fn parse(_s: &str) -> Result<Reference> {
        todo!()
    }
}
