//! The classroom service (`cubby serve`): accounts, classes, templates and
//! sessions, each session a sandbox provisioned through a [`backend::Backend`].
//!
//! caas never links the engine: it drives sandboxes through the Docker Engine
//! API like any other client, so it runs unchanged on dockerd or podman, and a
//! Kubernetes backend can come later behind the same trait.
//!
//! Layout: `store` (SQLite/PostgreSQL), `auth` (passwords, tokens, rate
//! limits), `template` (what a sandbox is), `sessions` (state machine,
//! reconcile, events), `api` (REST + OpenAPI), `proxy` (`/r/{session}/...`), `web` (UI
//! assets, terminal), `metrics` (/metrics, /healthz, /readyz), `serve`
//! (wiring), `demo`.

pub mod api;
pub mod archive;
pub mod auth;
pub mod backend;
pub mod csv;
pub mod demo;
pub mod error;
pub mod log;
pub mod metrics;
pub mod proxy;
pub mod serve;
pub mod sessions;
pub mod store;
pub mod template;
pub mod web;

pub use error::{Error, Result};
