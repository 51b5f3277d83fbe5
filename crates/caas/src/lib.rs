//! The classroom service (`cubby serve`): accounts, classes, templates and
//! sessions, each session a sandbox provisioned through a [`backend::Backend`].
//!
//! caas never links the engine: it drives sandboxes through the Docker Engine
//! API like any other client, so it runs unchanged on dockerd or podman, and a
//! Kubernetes backend can come later behind the same trait.

pub mod backend;
