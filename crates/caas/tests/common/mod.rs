pub mod fake;
pub mod pg;
