//! cubby command-line library: the pieces of `cubby` that can be unit tested.

pub mod run_args;
