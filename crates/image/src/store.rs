//! The content-addressed store.
//!
//! INTERFACE (owned by the store helper).
