//! Layer unpacking.
//!
//! INTERFACE (owned by the store helper).
