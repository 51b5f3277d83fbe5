//! cgroup v1 (one hierarchy per controller).
