//! The image commands of the CLI: pull, push, images, inspect, tag, rmi,
//! prune, import, login, logout, and resolving `cubby run IMAGE`.

use crate::table::{human_size, Table};
use anyhow::{bail, Context, Result};
use cubby_image::auth::{AuthFile, Credentials};
use cubby_image::pull::{Platform, PullOptions};
use cubby_image::reference::Reference;
use cubby_image::registry::{Client, ClientOptions};
use cubby_image::store::{ImageRecord, Store};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Where images and container snapshots live (`--root`).
pub struct Images {
    pub root: PathBuf,
    pub store: Store,
    /// Registries spoken to over plain HTTP besides localhost (`--insecure-registry`).
    pub insecure: Vec<String>,
}

/// When `run` pulls (docker's `--pull`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PullPolicy {
    Missing,
    Always,
    Never,
}

pub fn client(insecure: &[String]) -> Client {
    Client::new(ClientOptions {
        auth: auth_file(),
        insecure_registries: insecure.to_vec(),
        user_agent: format!("cubby/{}", env!("CARGO_PKG_VERSION")),
    })
}

fn auth_file() -> AuthFile {
    // Honours CUBBY_AUTH_FILE, then Docker's own locations.
    AuthFile::default_location()
}

impl Images {
    pub fn open(root: &Path) -> Result<Images> {
        let store =
            Store::open(root).with_context(|| format!("open image store {}", root.display()))?;
        Ok(Images {
            root: root.to_path_buf(),
            store,
            insecure: Vec::new(),
        })
    }

    pub fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// An image by reference (`alpine`, `alpine:3.18`, `host/x@sha256:..`)
    /// or by id prefix (as `cubby images` shows it).
    pub fn find(&self, name: &str) -> Result<Option<ImageRecord>> {
        Ok(cubby_engine::snapshots::find_image(&self.store, name)?)
    }

    pub fn pull(&self, name: &str, platform: Option<&str>, quiet: bool) -> Result<ImageRecord> {
        let r = Reference::parse(name)?;
        let platform = match platform {
            Some(p) => Platform::parse(p)?,
            None => Platform::host(),
        };
        let client = client(&self.insecure);
        // Already here for this platform and unchanged upstream: one
        // manifest request.
        if let Some(rec) = self.store.get_image(&r.to_string())? {
            if self.platform_of(&rec).as_ref()
                == Some(&(platform.os.clone(), platform.architecture.clone()))
            {
                if r.digest.is_some() {
                    return Ok(rec);
                }
                if let Ok(Some(remote)) = client.head_manifest(&r, r.reference()) {
                    if rec.blobs.contains(&remote) {
                        if !quiet {
                            eprintln!("{}: image is up to date", r.familiar());
                        }
                        return Ok(rec);
                    }
                }
            }
        }
        let progress = !quiet && std::io::stderr().is_terminal();
        let rec = cubby_image::pull::pull(
            &client,
            &self.store,
            &r,
            &PullOptions { platform, progress },
        )
        .with_context(|| format!("pull {}", r.familiar()))?;
        if !quiet {
            eprintln!("{}: pulled {}", r.familiar(), rec.manifest_digest);
        }
        Ok(rec)
    }

    /// The image `run` should use, pulled per `policy`.
    pub fn for_run(
        &self,
        name: &str,
        policy: PullPolicy,
        platform: Option<&str>,
    ) -> Result<ImageRecord> {
        match (policy, self.find(name)?) {
            (PullPolicy::Always, _) => self.pull(name, platform, false),
            (_, Some(rec)) => Ok(rec),
            (PullPolicy::Missing, None) => self.pull(name, platform, false),
            (PullPolicy::Never, None) => bail!("image {name} is not present and --pull=never"),
        }
    }

    /// (os, architecture) from an image's config.
    fn platform_of(&self, rec: &ImageRecord) -> Option<(String, String)> {
        let config: serde_json::Value =
            serde_json::from_slice(&self.store.read_blob(&rec.config_digest).ok()?).ok()?;
        Some((
            config.get("os")?.as_str()?.to_string(),
            config.get("architecture")?.as_str()?.to_string(),
        ))
    }

    /// Containers (by id) whose snapshot uses `image`.
    pub fn users_of(&self, image: &ImageRecord) -> Vec<String> {
        cubby_engine::snapshots::users_of(&self.containers_dir(), &image.config_digest)
    }

    /// Layers used by any container (kept by prune even if untagged).
    fn layers_in_use(&self) -> Vec<cubby_image::digest::Digest> {
        cubby_engine::snapshots::layers_in_use(&self.containers_dir())
    }

    pub fn list(&self, quiet: bool) -> Result<()> {
        let mut images = self.store.images()?;
        images.sort_by(|a, b| a.name.cmp(&b.name));
        let mut table = Table::new(&["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"]);
        for rec in images {
            if quiet {
                println!("{}", rec.config_digest.short());
                continue;
            }
            let r = Reference::parse(&rec.name).ok();
            let dangling = cubby_image::archive::is_dangling(&rec.name);
            // The familiar name without tag or digest: `alpine`, `localhost:5000/x`.
            let (repo, tag) = match &r {
                _ if dangling => ("<none>".into(), "<none>".into()),
                Some(r) => (
                    r.familiar_name(),
                    r.tag.clone().unwrap_or_else(|| "<none>".into()),
                ),
                None => (rec.name.clone(), "<none>".into()),
            };
            table.row(&[
                repo,
                tag,
                rec.config_digest.short().to_string(),
                crate::table::ago_rfc3339(&rec.created),
                human_size(rec.size),
            ]);
        }
        if !quiet {
            table.print();
        }
        Ok(())
    }

    pub fn inspect(&self, name: &str) -> Result<()> {
        let rec = self
            .find(name)?
            .with_context(|| format!("no such image: {name}"))?;
        let config: serde_json::Value =
            serde_json::from_slice(&self.store.read_blob(&rec.config_digest)?)
                .context("parse image config")?;
        let manifest: serde_json::Value =
            serde_json::from_slice(&self.store.read_blob(&rec.manifest_digest)?)
                .context("parse manifest")?;
        let out = serde_json::json!([{
            "Id": rec.config_digest.to_string(),
            "RepoTags": if cubby_image::archive::is_dangling(&rec.name) {
                Vec::new()
            } else {
                vec![rec.name.clone()]
            },
            "RepoDigests": Reference::parse(&rec.name)
                .map(|r| vec![format!("{}/{}@{}", r.registry, r.repository, rec.manifest_digest)])
                .unwrap_or_default(),
            "Created": config.get("created"),
            "Architecture": config.get("architecture"),
            "Os": config.get("os"),
            "Config": config.get("config"),
            "RootFS": config.get("rootfs"),
            "Size": rec.size,
            "Manifest": manifest,
            "Layers": rec.layers.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        }]);
        println!("{}", serde_json::to_string_pretty(&out)?);
        Ok(())
    }

    /// `cubby tag`: the engine's one tag rule (the daemon's too).
    pub fn tag(&self, source: &str, target: &str) -> Result<()> {
        let store = Store::open(&self.root)
            .with_context(|| format!("open image store {}", self.root.display()))?;
        // Image calls only: the monitor is never contacted.
        let engine = cubby_engine::Engine::with_store(
            cubby_engine::service::EngineOptions {
                monitor_socket: PathBuf::new(),
                root: self.root.clone(),
                cgroup_parent: String::new(),
            },
            store,
        );
        engine.image_tag(source, target)?;
        Ok(())
    }

    pub fn remove(&self, names: &[String], force: bool) -> Result<bool> {
        let mut ok = true;
        for name in names {
            let result = (|| -> Result<()> {
                let rec = self
                    .find(name)?
                    .with_context(|| format!("no such image: {name}"))?;
                let users = self.users_of(&rec);
                if let (false, Some(c)) = (force, users.first()) {
                    bail!("image {name} is used by container {c}: remove the container first or use -f");
                }
                self.store.remove_image(&rec.name)?;
                println!("Untagged: {}", rec.name);
                Ok(())
            })();
            if let Err(e) = result {
                eprintln!("cubby: rmi {name}: {e:#}");
                ok = false;
            }
        }
        Ok(ok)
    }

    pub fn prune(&self) -> Result<()> {
        let report = self.store.gc(&self.layers_in_use())?;
        println!(
            "Deleted {} blobs and {} layers; reclaimed {}",
            report.blobs_removed,
            report.layers_removed,
            human_size(report.bytes_freed)
        );
        Ok(())
    }

    pub fn import(&self, tarball: &Path, name: &str, changes: &[String]) -> Result<()> {
        let r = Reference::parse(name)?;
        let rec = cubby_image::archive::import(&self.store, tarball, &r.to_string(), changes)
            .with_context(|| format!("import {}", tarball.display()))?;
        println!("{}", rec.config_digest);
        Ok(())
    }

    /// `cubby save`: the images as one tar (OCI layout + docker-save
    /// manifest.json) to `output`, or to stdout when it is not a terminal.
    /// An image named by id is saved without a name, as Docker does. The
    /// file appears only once complete (written beside it, then renamed).
    pub fn save(&self, names: &[String], output: Option<&Path>) -> Result<()> {
        let mut items = Vec::new();
        for name in names {
            let rec = self
                .find(name)?
                .with_context(|| format!("no such image: {name}"))?;
            let named = Reference::parse(name)
                .ok()
                .filter(|r| r.to_string() == rec.name);
            items.push(cubby_image::archive::SaveItem {
                name: named,
                record: rec,
            });
        }
        match output {
            None => {
                let stdout = std::io::stdout();
                if stdout.is_terminal() {
                    bail!("refusing to write an image archive to a terminal: use -o FILE or redirect stdout");
                }
                let out = std::io::BufWriter::with_capacity(1 << 20, stdout.lock());
                cubby_image::archive::save(&self.store, &items, out).context("save")?;
            }
            Some(path) => {
                let file_name = path
                    .file_name()
                    .with_context(|| format!("save: {} is not a file name", path.display()))?;
                let mut tmp_name = std::ffi::OsString::from(".");
                tmp_name.push(file_name);
                tmp_name.push(format!(".tmp-{}", std::process::id()));
                let tmp = path.with_file_name(tmp_name);
                let result = (|| -> Result<()> {
                    let file = std::fs::File::create(&tmp)
                        .with_context(|| format!("create {}", tmp.display()))?;
                    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
                    cubby_image::archive::save(&self.store, &items, &mut out)?;
                    let file = out
                        .into_inner()
                        .map_err(|e| e.into_error())
                        .with_context(|| format!("write {}", tmp.display()))?;
                    file.sync_all()
                        .with_context(|| format!("write {}", tmp.display()))?;
                    std::fs::rename(&tmp, path)
                        .with_context(|| format!("rename to {}", path.display()))?;
                    Ok(())
                })();
                if result.is_err() {
                    let _ = std::fs::remove_file(&tmp);
                }
                result.with_context(|| format!("save to {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// `cubby load`: images from a docker-save or OCI layout tar (plain,
    /// gzip or zstd) in `input`, or on stdin. Prints `Loaded image: NAME`
    /// per name (`Loaded image ID: sha256:...` for an image without one,
    /// kept as a dangling record, see [`cubby_image::archive::dangling_name`]).
    pub fn load(&self, input: Option<&Path>, quiet: bool) -> Result<()> {
        let loaded = match input {
            Some(path) => {
                let file = std::fs::File::open(path)
                    .with_context(|| format!("load: open {}", path.display()))?;
                cubby_image::archive::load(&self.store, file)
                    .with_context(|| format!("load {}", path.display()))?
            }
            None => {
                let stdin = std::io::stdin();
                if stdin.is_terminal() {
                    bail!("load: give an archive with -i FILE or on stdin (`cubby load < FILE`)");
                }
                cubby_image::archive::load(&self.store, stdin).context("load from stdin")?
            }
        };
        if !quiet {
            for l in &loaded {
                match &l.name {
                    Some(r) => println!("Loaded image: {}", r.familiar()),
                    None => println!("Loaded image ID: {}", l.record.config_digest),
                }
            }
        }
        Ok(())
    }

    pub fn push(&self, name: &str) -> Result<()> {
        let rec = self
            .find(name)?
            .with_context(|| format!("no such image: {name}"))?;
        let target = Reference::parse(name)?;
        let digest = cubby_image::push::push(&client(&self.insecure), &self.store, &rec, &target)
            .with_context(|| format!("push {}", target.familiar()))?;
        println!("{}: pushed {digest}", target.familiar());
        Ok(())
    }
}

pub fn login(
    insecure: &[String],
    registry: &str,
    username: Option<String>,
    password_stdin: bool,
    password: Option<String>,
) -> Result<()> {
    let username = match username {
        Some(u) => u,
        None => bail!("give a user name with -u/--username"),
    };
    let password = match (password, password_stdin) {
        (Some(p), _) => p,
        (None, true) => {
            let mut s = String::new();
            std::io::stdin()
                .read_line(&mut s)
                .context("read password from stdin")?;
            s.trim_end_matches(['\n', '\r']).to_string()
        }
        (None, false) => bail!("give the password with --password-stdin (or -p)"),
    };
    let creds = Credentials { username, password };
    client(insecure)
        .check_credentials(registry, &creds)
        .with_context(|| format!("login to {registry}"))?;
    auth_file().store(registry, &creds)?;
    println!("Login Succeeded");
    Ok(())
}

pub fn logout(registry: &str) -> Result<()> {
    if auth_file().erase(registry)? {
        println!("Removing login credentials for {registry}");
    } else {
        println!("Not logged in to {registry}");
    }
    Ok(())
}
