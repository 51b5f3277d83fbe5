//! The demo sandbox image, built with no internet from Debian's
//! busybox-static: a user `student` (uid/gid 1000, home /home/student), a
//! `/workspace` it owns, and a default command serving the workspace over
//! HTTP on port 8080 (`busybox httpd`). `cubby serve --demo` and the
//! classroom tests use it.
//!
//! The layer is written as a tar directly (ownership and modes set in the
//! headers, so no chown on the host), imported like `cubby import`, and its
//! config then gets the command, user, working dir and port.

use anyhow::{bail, Context, Result};
use cubby_image::reference::Reference;
use cubby_image::store::Store;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where Debian's busybox-static puts the binary.
pub const BUSYBOX: &str = "/bin/busybox";
/// The sandbox user.
pub const UID: u64 = 1000;
pub const HOME: &str = "/home/student";
pub const WORKSPACE: &str = "/workspace";
pub const PORT: u16 = 8080;

/// Builds the demo image and stores it as `reference` under `root`.
pub fn import_demo_image(root: &Path, reference: &str) -> Result<()> {
    import_demo_image_from(root, reference, Path::new(BUSYBOX))
}

/// [`import_demo_image`] with another static busybox binary.
pub fn import_demo_image_from(root: &Path, reference: &str, busybox: &Path) -> Result<()> {
    let r = Reference::parse(reference)
        .with_context(|| format!("demo image reference {reference:?}"))?;
    let bin = std::fs::read(busybox).with_context(|| {
        format!(
            "read {}: install Debian's busybox-static (apt-get install -y busybox-static)",
            busybox.display()
        )
    })?;
    if has_interpreter(&bin) {
        bail!(
            "{} is dynamically linked and would not run in the image: install busybox-static",
            busybox.display()
        );
    }
    let applets = applets(busybox)?;
    let store =
        Store::open(root).with_context(|| format!("open image store {}", root.display()))?;
    let tarball = TempFile(store.tmp_dir().join(format!(
        "demo-image-{}-{}.tar",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )));
    write_layer(&tarball.0, &bin, &applets)
        .with_context(|| format!("write the demo layer {}", tarball.0.display()))?;
    let rec = cubby_image::archive::import(&store, &tarball.0, &r.to_string(), &[])
        .context("import the demo image")?;
    set_config(&store, rec).context("set the demo image's config")
}

/// Whether an ELF binary names a dynamic loader (a `PT_INTERP` program
/// header): such a busybox would not run in the image.
fn has_interpreter(elf: &[u8]) -> bool {
    const PT_INTERP: u32 = 3;
    if elf.len() < 64 || &elf[..4] != b"\x7fELF" {
        return false;
    }
    let little = elf[5] == 1;
    let u16_at = |o: usize| {
        let b = [elf[o], elf[o + 1]];
        if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    };
    let u32_at = |o: usize| -> Option<u32> {
        let b: [u8; 4] = elf.get(o..o + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let u64_at = |o: usize| -> Option<u64> {
        let b: [u8; 8] = elf.get(o..o + 8)?.try_into().ok()?;
        Some(if little {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    };
    // 64-bit layout (class 2); 32-bit: e_phoff at 0x1c, sizes at 0x2a/0x2c.
    let (phoff, entsize, num) = if elf[4] == 2 {
        (
            u64_at(0x20).unwrap_or(0) as usize,
            u16_at(0x36) as usize,
            u16_at(0x38) as usize,
        )
    } else {
        (
            u32_at(0x1c).unwrap_or(0) as usize,
            u16_at(0x2a) as usize,
            u16_at(0x2c) as usize,
        )
    };
    (0..num).any(|i| u32_at(phoff + i * entsize) == Some(PT_INTERP))
}

/// The applets as paths relative to `/` (`bin/sh`, `usr/bin/env`, ...).
fn applets(busybox: &Path) -> Result<Vec<String>> {
    let out = Command::new(busybox)
        .arg("--list-full")
        .output()
        .with_context(|| format!("run {} --list-full", busybox.display()))?;
    if !out.status.success() {
        bail!("{} --list-full failed: {}", busybox.display(), out.status);
    }
    let list: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.trim().trim_start_matches('/').to_string())
        .filter(|l| l.contains('/') && l != "bin/busybox")
        .collect();
    if !list.iter().any(|l| l == "bin/sh") {
        bail!("{} has no sh applet", busybox.display());
    }
    Ok(list)
}

fn write_layer(path: &Path, busybox: &[u8], applets: &[String]) -> Result<()> {
    let file = std::fs::File::create(path)?;
    let mut tar = tar::Builder::new(std::io::BufWriter::new(file));
    let dir = |tar: &mut tar::Builder<_>, path: &str, mode: u32, owner: u64| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_uid(owner);
        h.set_gid(owner);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_data(&mut h, format!("{path}/"), std::io::empty())?;
        Ok(())
    };
    let file = |tar: &mut tar::Builder<_>, path: &str, mode: u32, owner: u64, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_uid(owner);
        h.set_gid(owner);
        h.set_size(data.len() as u64);
        h.set_mtime(0);
        tar.append_data(&mut h, path, data)
    };
    for (d, mode) in [
        ("bin", 0o755),
        ("sbin", 0o755),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("usr/sbin", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("root", 0o700),
        ("run", 0o755),
        ("var", 0o755),
        ("var/tmp", 0o1777),
        ("tmp", 0o1777),
        ("home", 0o755),
    ] {
        dir(&mut tar, d, mode, 0)?;
    }
    dir(&mut tar, HOME.trim_start_matches('/'), 0o755, UID)?;
    dir(&mut tar, WORKSPACE.trim_start_matches('/'), 0o755, UID)?;
    file(&mut tar, "bin/busybox", 0o755, 0, busybox)?;
    for path in applets {
        // Relative links back to /bin/busybox.
        let depth = path.matches('/').count();
        let target = format!("{}bin/busybox", "../".repeat(depth));
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(0);
        tar.append_link(&mut h, path, target)?;
    }
    let passwd = format!(
        "root:x:0:0:root:/root:/bin/sh\nstudent:x:{UID}:{UID}:student:{HOME}:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
    );
    let group = format!("root:x:0:\nstudent:x:{UID}:\nnogroup:x:65534:\n");
    file(&mut tar, "etc/passwd", 0o644, 0, passwd.as_bytes())?;
    file(&mut tar, "etc/group", 0o644, 0, group.as_bytes())?;
    file(&mut tar, "etc/hostname", 0o644, 0, b"sandbox\n")?;
    // Placeholders that engines bind-mount over.
    file(&mut tar, "etc/hosts", 0o644, 0, b"")?;
    file(&mut tar, "etc/resolv.conf", 0o644, 0, b"")?;
    file(
        &mut tar,
        "workspace/index.html",
        0o644,
        UID,
        b"<!doctype html><title>cubby sandbox</title><p>Hello from your cubby sandbox.</p>\n",
    )?;
    tar.into_inner()?
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(())
}

/// Replaces the imported image's config with one that says how to run it,
/// and its manifest with one naming the new config.
fn set_config(store: &Store, mut rec: cubby_image::store::ImageRecord) -> Result<()> {
    let mut config: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&rec.config_digest)?)?;
    config["config"] = serde_json::json!({
        "Env": [
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            format!("HOME={HOME}"),
        ],
        "Cmd": ["httpd", "-f", "-p", PORT.to_string(), "-h", WORKSPACE],
        "User": format!("{UID}:{UID}"),
        "WorkingDir": WORKSPACE,
        "ExposedPorts": { format!("{PORT}/tcp"): {} },
        "Labels": { "io.cubby.demo": "true" },
    });
    let config_bytes = serde_json::to_vec(&config)?;
    let config_digest = store.put_blob(&config_bytes)?;
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&store.read_blob(&rec.manifest_digest)?)?;
    manifest["config"]["digest"] = config_digest.to_string().into();
    manifest["config"]["size"] = config_bytes.len().into();
    let manifest_digest = store.put_blob(&serde_json::to_vec(&manifest)?)?;
    let old = [rec.manifest_digest.clone(), rec.config_digest.clone()];
    rec.blobs.retain(|b| !old.contains(b));
    rec.blobs.insert(0, config_digest.clone());
    rec.blobs.insert(0, manifest_digest.clone());
    rec.manifest_digest = manifest_digest;
    rec.config_digest = config_digest;
    store.put_image(rec)?;
    Ok(())
}

/// A temp file removed on drop.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
