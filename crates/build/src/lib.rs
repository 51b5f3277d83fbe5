//! cubby-build: images from Dockerfiles.
//!
//! - [`dockerfile`]: the parser (directives, continuations, exec/shell
//!   forms, flags; heredocs refused) and `$VAR` expansion.
//! - [`context`]: the build context, `.dockerignore`, globs, paths resolved
//!   without escaping their root.
//! - [`builder`]: stages evaluated into image states; layer steps (RUN,
//!   COPY, ADD, WORKDIR) cached by parent + instruction + source contents;
//!   the result stored through the image store.
//! - [`layer`]: a directory (overlay upper dir or COPY staging) to a layer
//!   tar with whiteouts, stored and unpacked by the image store.
//! - [`run`]: RUN steps in containers made by the engine's spec builder.
//! - [`api`]: `POST /build`, `POST /commit`, `GET /containers/{id}/export`
//!   for `cubby daemon`.

pub mod api;
pub mod builder;
pub mod context;
pub mod dockerfile;
pub mod error;
pub mod layer;
pub mod run;

pub use builder::{BuildOptions, Builder, Built};
pub use error::{BuildError, Result};
pub use run::Runner;
