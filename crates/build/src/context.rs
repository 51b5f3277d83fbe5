//! The build context: `.dockerignore`, glob matching, and source paths
//! resolved without leaving their root.

use crate::error::{BuildError, Result};
use std::path::{Component, Path, PathBuf};

/// Shell-style match of one path against a pattern, segment by segment:
/// `*` and `?` stay within a segment, `[a-z]` classes, `**` any number of
/// segments.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let p: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
    let s: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match_segments(&p, &s)
}

fn match_segments(p: &[&str], s: &[&str]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some((&"**", rest)) => (0..=s.len()).any(|i| match_segments(rest, &s[i..])),
        Some((first, rest)) => match s.split_first() {
            Some((seg, srest)) => {
                match_one(
                    &first.chars().collect::<Vec<_>>(),
                    &seg.chars().collect::<Vec<_>>(),
                ) && match_segments(rest, srest)
            }
            None => false,
        },
    }
}

fn match_one(p: &[char], s: &[char]) -> bool {
    match p.split_first() {
        None => s.is_empty(),
        Some(('*', rest)) => (0..=s.len()).any(|i| match_one(rest, &s[i..])),
        Some(('?', rest)) => !s.is_empty() && match_one(rest, &s[1..]),
        Some(('[', rest)) => {
            let Some(end) = rest.iter().position(|&c| c == ']') else {
                return s.first() == Some(&'[') && match_one(rest, &s[1..]);
            };
            let Some(&c) = s.first() else { return false };
            let (negate, class) = match rest[..end].split_first() {
                Some(('^', r)) | Some(('!', r)) => (true, r),
                _ => (false, &rest[..end]),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != negate && match_one(&rest[end + 1..], &s[1..])
        }
        Some(('\\', rest)) if !rest.is_empty() => {
            s.first() == Some(&rest[0]) && match_one(&rest[1..], &s[1..])
        }
        Some((c, rest)) => s.first() == Some(c) && match_one(rest, &s[1..]),
    }
}

pub fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Lexically cleans a relative path; `None` if it climbs above its root.
pub fn clean(path: &str) -> Option<String> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            c => out.push(c),
        }
    }
    Some(out.join("/"))
}

/// A directory with files to copy from: the build context (with its
/// `.dockerignore`, symlinks must stay inside) or another stage's root
/// filesystem (absolute symlinks are relative to it, as in a container).
pub struct Source {
    pub root: PathBuf,
    /// `(pattern, exception)` from `.dockerignore`, in order.
    ignore: Vec<(String, bool)>,
    is_context: bool,
}

impl Source {
    pub fn context(root: &Path) -> Result<Source> {
        let root = root
            .canonicalize()
            .map_err(|e| BuildError::io(format!("build context {}", root.display()), e))?;
        let mut ignore = Vec::new();
        let di = root.join(".dockerignore");
        if let Ok(text) = std::fs::read_to_string(&di) {
            for line in text.lines() {
                let l = line.trim();
                if l.is_empty() || l.starts_with('#') {
                    continue;
                }
                let (pat, exc) = match l.strip_prefix('!') {
                    Some(p) => (p.trim(), true),
                    None => (l, false),
                };
                if let Some(p) = clean(pat.trim_start_matches('/')) {
                    ignore.push((p, exc));
                }
            }
        }
        Ok(Source {
            root,
            ignore,
            is_context: true,
        })
    }

    pub fn rootfs(root: &Path) -> Source {
        Source {
            root: root.to_path_buf(),
            ignore: Vec::new(),
            is_context: false,
        }
    }

    /// Whether `.dockerignore` excludes `rel` (or a directory above it).
    pub fn ignored(&self, rel: &str) -> bool {
        let mut result = false;
        for (pat, exc) in &self.ignore {
            let mut hit = glob_match(pat, rel);
            // A pattern naming a directory excludes what is in it.
            let mut prefix = String::new();
            for seg in rel.split('/') {
                if hit {
                    break;
                }
                if !prefix.is_empty() {
                    prefix.push('/');
                }
                prefix.push_str(seg);
                if prefix.len() < rel.len() {
                    hit = glob_match(pat, &prefix);
                }
            }
            if hit {
                result = !exc;
            }
        }
        result
    }

    /// The paths (relative to the root) that a COPY/ADD source names.
    pub fn expand(&self, src: &str) -> Result<Vec<String>> {
        let cleaned = if self.is_context {
            clean(src.trim_start_matches('/'))
                .ok_or_else(|| BuildError::ContextEscape(src.to_string()))?
        } else {
            clean(src.trim_start_matches('/')).unwrap_or_default()
        };
        if !has_glob(&cleaned) {
            let rel = cleaned;
            if !rel.is_empty() && self.is_context && self.ignored(&rel) {
                return Err(BuildError::MissingSource(src.to_string()));
            }
            match self.resolve(&rel) {
                Ok(p) if std::fs::symlink_metadata(&p).is_ok() => return Ok(vec![rel]),
                Ok(_) => return Err(BuildError::MissingSource(src.to_string())),
                Err(BuildError::Io { .. }) => {
                    return Err(BuildError::MissingSource(src.to_string()))
                }
                Err(e) => return Err(e),
            }
        }
        // Glob: walk the directories the pattern can reach.
        let mut found = Vec::new();
        let segs: Vec<&str> = cleaned.split('/').collect();
        self.walk_glob(String::new(), &segs, &mut found)?;
        if found.is_empty() {
            return Err(BuildError::MissingSource(src.to_string()));
        }
        found.sort();
        Ok(found)
    }

    fn walk_glob(&self, base: String, segs: &[&str], found: &mut Vec<String>) -> Result<()> {
        let Some((seg, rest)) = segs.split_first() else {
            return Ok(());
        };
        let dir = self.root.join(&base);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            if !glob_match(seg, &name) {
                continue;
            }
            let rel = if base.is_empty() {
                name.clone()
            } else {
                format!("{base}/{name}")
            };
            if self.is_context && self.ignored(&rel) {
                continue;
            }
            if rest.is_empty() {
                found.push(rel);
            } else if self.root.join(&rel).is_dir() {
                self.walk_glob(rel, rest, found)?;
            }
        }
        Ok(())
    }

    /// The host path of `rel`, following symlinks (the last one too) inside
    /// the root: in the context a link out of it is an error, in a stage's
    /// root an absolute link is taken relative to that root.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let mut done = PathBuf::new();
        let mut todo: Vec<String> = rel
            .split('/')
            .filter(|s| !s.is_empty())
            .rev()
            .map(String::from)
            .collect();
        let mut hops = 0;
        while let Some(c) = todo.pop() {
            match c.as_str() {
                "." => continue,
                ".." => {
                    if !done.pop() && self.is_context {
                        return Err(BuildError::ContextEscape(rel.to_string()));
                    }
                    continue;
                }
                _ => {}
            }
            let candidate = done.join(&c);
            let host = self.root.join(&candidate);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.file_type().is_symlink() => {
                    hops += 1;
                    if hops > 40 {
                        return Err(BuildError::invalid(format!(
                            "too many levels of symbolic links in {rel}"
                        )));
                    }
                    let target =
                        std::fs::read_link(&host).map_err(|e| BuildError::io_path(&host, e))?;
                    if target.is_absolute() {
                        if self.is_context {
                            return Err(BuildError::ContextEscape(format!(
                                "{rel} (a symlink to {})",
                                target.display()
                            )));
                        }
                        done = PathBuf::new();
                    }
                    let parts: Vec<String> = target
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
                            Component::ParentDir => Some("..".into()),
                            _ => None,
                        })
                        .collect();
                    for p in parts.into_iter().rev() {
                        todo.push(p);
                    }
                }
                Ok(_) => done = candidate,
                Err(e) => {
                    // A missing path: the rest cannot be symlinks.
                    let mut p = self.root.join(candidate);
                    for rest in todo.iter().rev() {
                        p.push(rest);
                    }
                    return if e.kind() == std::io::ErrorKind::NotFound {
                        Ok(p)
                    } else {
                        Err(BuildError::io_path(&p, e))
                    };
                }
            }
        }
        Ok(self.root.join(done))
    }
}

/// Content hash of sources for the cache: paths, modes, owners, sizes and
/// file contents (symlink targets) under each, in order, skipping ignored
/// files.
pub fn hash_sources(src: &Source, rels: &[String], h: &mut impl sha2::Digest) -> Result<()> {
    for rel in rels {
        let p = src.resolve(rel)?;
        hash_tree(src, &p, rel, h)?;
    }
    Ok(())
}

fn hash_tree(src: &Source, p: &Path, rel: &str, h: &mut impl sha2::Digest) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).map_err(|e| BuildError::io_path(p, e))?;
    h.update(
        format!(
            "{rel}\0{:o}\0{}\0{}\0{}\0",
            m.mode(),
            m.uid(),
            m.gid(),
            m.len()
        )
        .as_bytes(),
    );
    if m.file_type().is_symlink() {
        let t = std::fs::read_link(p).map_err(|e| BuildError::io_path(p, e))?;
        h.update(t.as_os_str().as_encoded_bytes());
    } else if m.is_file() {
        let mut f = std::fs::File::open(p).map_err(|e| BuildError::io_path(p, e))?;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf).map_err(|e| BuildError::io_path(p, e))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    } else if m.is_dir() {
        let mut names: Vec<String> = std::fs::read_dir(p)
            .map_err(|e| BuildError::io_path(p, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for n in names {
            let r = format!("{rel}/{n}");
            if src.is_context && src.ignored(&r) {
                continue;
            }
            hash_tree(src, &p.join(&n), &r, h)?;
        }
    }
    Ok(())
}

impl Source {
    pub fn is_context(&self) -> bool {
        self.is_context
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*.txt", "a.txt"));
        assert!(!glob_match("*.txt", "d/a.txt"));
        assert!(glob_match("**/*.txt", "d/e/a.txt"));
        assert!(glob_match("**/*.txt", "a.txt"));
        assert!(glob_match("f?le[0-9]", "file7"));
        assert!(!glob_match("f?le[!0-9]", "file7"));
        assert_eq!(clean("./a/../b/"), Some("b".into()));
        assert_eq!(clean("../x"), None);
    }

    #[test]
    fn dockerignore_and_escapes() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(".dockerignore"),
            "# c\n*.log\nsecret/\n!keep.log\n",
        )
        .unwrap();
        std::fs::create_dir(d.path().join("secret")).unwrap();
        std::fs::write(d.path().join("secret/k"), "x").unwrap();
        for f in ["a.log", "keep.log", "b.txt"] {
            std::fs::write(d.path().join(f), "x").unwrap();
        }
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("out")).unwrap();
        std::os::unix::fs::symlink("../../etc", d.path().join("up")).unwrap();
        std::os::unix::fs::symlink("b.txt", d.path().join("in")).unwrap();
        let s = Source::context(d.path()).unwrap();
        assert!(s.ignored("a.log") && s.ignored("secret/k") && !s.ignored("keep.log"));
        assert_eq!(s.expand("*.log").unwrap(), ["keep.log"]);
        assert!(matches!(
            s.expand("a.log"),
            Err(BuildError::MissingSource(_))
        ));
        assert!(matches!(
            s.expand("nope"),
            Err(BuildError::MissingSource(_))
        ));
        assert!(matches!(
            s.expand("../x"),
            Err(BuildError::ContextEscape(_))
        ));
        assert!(matches!(s.expand("out"), Err(BuildError::ContextEscape(_))));
        assert!(matches!(
            s.expand("up/passwd"),
            Err(BuildError::ContextEscape(_))
        ));
        assert_eq!(s.resolve("in").unwrap(), s.root.join("b.txt"));
        // In a stage's root, absolute links stay inside it.
        let r = Source::rootfs(d.path());
        assert_eq!(r.resolve("out").unwrap(), d.path().join("etc/passwd"));
    }
}
