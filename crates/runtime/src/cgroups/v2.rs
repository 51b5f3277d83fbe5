//! cgroup v2 (unified hierarchy).
