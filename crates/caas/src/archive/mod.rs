//! Student work is never lost: when a session ends, its workspace is
//! exported through the backend (a tar stream, so any Docker API engine
//! works), compressed with zstd, stored with its size and sha256, read back
//! and checked, recorded, and only then are the sandbox and its volume
//! removed. Any failure leaves everything in place and the session
//! "archive pending" (retried with back-off). A new session starts from the
//! student's latest archive, or what a teacher chose.
//!
//! The steps live in [`crate::sessions::Manager`] (`end_session`,
//! `restore`); this module holds the object store and the key layout.

pub mod browse;
pub mod objects;
pub mod phases;

pub use objects::{Objects, PutStats, S3Config, Written};
pub use phases::Phases;

use crate::store::sessions::Session;

/// `CLASS/STUDENT/SESSION-UNIXMS-KIND.tar.zst`: browsable per class and
/// student, unique per attempt (a retry never overwrites a verified object).
pub fn object_key(s: &Session, kind: &str, at_ms: i64) -> String {
    format!(
        "{}/{}/{}-{}-{}.tar.zst",
        s.class_id, s.student_id, s.id, at_ms, kind
    )
}

/// The directory a workspace's tar is extracted into: its parent (the
/// archive's entries start with the workspace directory's own name).
pub fn parent_dir(workspace_path: &str) -> &str {
    match workspace_path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((p, _)) => p,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn parent_dirs() {
        assert_eq!(super::parent_dir("/workspace"), "/");
        assert_eq!(super::parent_dir("/home/u/work/"), "/home/u");
    }
}
