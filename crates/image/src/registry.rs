//! Docker Registry HTTP API v2 / OCI distribution client.
//!
//! INTERFACE (owned by the registry helper).
