//! cubby-engine: what sits above the runtime and below the Docker API.
//!
//! - [`config`]: [`config::ContainerConfig`] and the one builder of OCI specs.
//! - [`records`]: one crash-safe JSON record per container.
//! - [`logs`]: Docker's json-file log driver (writer with rotation, reader).
//! - [`protocol`], [`client`]: the daemon↔monitor JSON-lines protocol.
//! - [`service`]: the [`service::Engine`] library API (create, start,
//!   stop, remove... with typed [`service::EngineError`]s).
//! - [`api`]: the Docker Engine API served by `cubby daemon`, over [`service`].
//! - [`monitor`]: the single-threaded subreaper that parents every
//!   container, holds its stdio and records its exit.
//! - [`volumes`]: the local volume store (`<root>/volumes/<name>`).

pub mod api;
pub mod client;
pub mod config;
pub mod container_fs;
pub mod error;
pub mod logs;
pub mod loopfs;
pub mod monitor;
pub mod protocol;
pub mod records;
pub mod service;
pub mod snapshots;
pub mod users;
pub mod volumes;

pub use error::{Error, Result};
pub use service::{Engine, EngineError};
