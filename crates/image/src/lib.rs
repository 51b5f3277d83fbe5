//! cubby-image: from an image reference to a root filesystem.
//!
//! - [`reference`]: `alpine:3.18`, `host:port/ns/name@sha256:...` parsing and normalisation.
//! - [`auth`]: credentials in `~/.docker/config.json` (read, `login`, `logout`).
//! - [`registry`]: the Docker Registry HTTP API v2 / OCI distribution client.
//! - [`digest`]: sha256 digests, verified while streaming.
//! - [`store`]: the content-addressed store (blobs, unpacked layers, image records).
//! - [`unpack`]: layer tar to directory, whiteouts to overlayfs form, hostile archives rejected.
//! - [`pull`], [`push`]: moving images between a registry and the store;
//!   [`progress`]: pull progress events (terminal bars, Docker JSON).
//! - [`archive`]: `import` of rootfs tarballs, `save`/`load` (docker-save and OCI layout).
//! - [`snapshot`]: a container's overlay rootfs over the shared layers.
//! - [`config`]: image config (Entrypoint, Cmd, Env, WorkingDir, User) applied to an OCI spec.

pub mod archive;
pub mod auth;
pub mod changes;
pub mod config;
pub mod digest;
pub mod error;
pub mod progress;
pub mod pull;
pub mod push;
pub mod reference;
pub mod registry;
pub mod snapshot;
pub mod store;
pub mod unpack;

pub use error::{ImageError, Result};
