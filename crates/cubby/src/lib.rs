//! cubby command-line library: the pieces of `cubby` that can be unit tested.

pub mod build;
pub mod daemon;
pub mod demo_image;
pub mod images;
pub mod network_args;
pub mod remote;
pub mod run_args;
pub mod serve;
mod serve_backend;
pub mod table;
pub mod tls;
