//! Registry credentials in Docker's `config.json`.
//!
//! INTERFACE (owned by the registry helper).
