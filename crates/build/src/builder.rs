//! The builder: stages of a Dockerfile evaluated into image states, layer
//! steps cached, the final image stored through the image store.

use crate::context::{self, Source};
use crate::dockerfile::{self, Args, Instruction};
use crate::error::{BuildError, Result};
use crate::layer::{self, Layer};
use crate::run::{RunStep, Runner};
use cubby_engine::config::NetworkMode;
use cubby_image::digest::Digest;
use cubby_image::snapshot::Snapshot;
use cubby_image::store::{ImageRecord, Store};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::Digest as _;
use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// Docker's predefined args: usable without an ARG line, never an error.
const PREDEFINED_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What to build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    pub context: PathBuf,
    /// The Dockerfile (relative paths are in the context); `Dockerfile`.
    pub dockerfile: Option<PathBuf>,
    /// Names for the result (none: a dangling image, found by its id).
    pub tags: Vec<String>,
    pub build_args: BTreeMap<String, String>,
    /// Stop after this stage.
    pub target: Option<String>,
    pub no_cache: bool,
    /// Pull base images even when they are in the store.
    pub pull: bool,
    /// The network of RUN steps (`none` by default; `host`).
    pub network: NetworkMode,
    pub labels: BTreeMap<String, String>,
}

/// Pulls an image reference into the store (the caller's registry setup).
pub type PullFn<'a> = &'a (dyn Fn(&str) -> std::result::Result<(), String> + Sync);

/// The built image.
#[derive(Debug, Clone)]
pub struct Built {
    /// The config digest (Docker's image id).
    pub id: Digest,
    /// Record names written (the tags, or a dangling name).
    pub names: Vec<String>,
}

/// An image being built: layers, the config's `config` object, history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct State {
    layers: Vec<Layer>,
    config: Map<String, Value>,
    history: Vec<Value>,
    created: String,
    #[serde(default)]
    author: Option<String>,
}

impl State {
    fn empty() -> State {
        let mut config = Map::new();
        config.insert("Env".into(), json!([DEFAULT_PATH]));
        State {
            layers: Vec::new(),
            config,
            history: Vec::new(),
            created: String::from("1970-01-01T00:00:00Z"),
            author: None,
        }
    }

    fn hash(&self) -> String {
        let bytes = serde_json::to_vec(self).unwrap_or_default();
        hex(&sha2::Sha256::digest(&bytes))
    }

    fn env(&self) -> Vec<String> {
        self.config
            .get("Env")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn set_env(&mut self, key: &str, value: &str) {
        let mut env = self.env();
        env.retain(|e| e.split_once('=').map(|(k, _)| k) != Some(key));
        env.push(format!("{key}={value}"));
        self.config.insert("Env".into(), json!(env));
    }

    fn str_field(&self, key: &str) -> Option<String> {
        self.config
            .get(key)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(String::from)
    }

    fn shell(&self) -> Vec<String> {
        self.config
            .get("Shell")
            .and_then(|v| serde_json::from_value::<Vec<String>>(v.clone()).ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()])
    }

    fn workdir(&self) -> String {
        self.str_field("WorkingDir").unwrap_or_else(|| "/".into())
    }

    fn map_insert(&mut self, field: &str, key: String, value: Value) {
        let entry = self
            .config
            .entry(field.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        if let Some(m) = entry.as_object_mut() {
            m.insert(key, value);
        }
    }

    fn history(&mut self, created_by: String, empty: bool) {
        let mut h =
            json!({"created": self.created, "created_by": created_by, "comment": "cubby build"});
        if empty {
            h["empty_layer"] = json!(true);
        }
        self.history.push(h);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Stage {
    name: Option<String>,
    state: State,
    /// ARGs declared in this stage, with values.
    args: BTreeMap<String, String>,
    /// CMD set in this stage (ENTRYPOINT then keeps it).
    cmd_set: bool,
}

/// Removes a scratch directory (unmounting its snapshot) on drop.
struct Scratch {
    dir: PathBuf,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Every scratch dir keeps its snapshot (if any) at `snap/`.
        let _ = Snapshot::at(self.dir.join("snap")).remove();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

pub struct Builder<'a> {
    store: &'a Store,
    runner: Runner,
    pull: Option<PullFn<'a>>,
    /// `<root>/build`: cache entries and scratch dirs (owned by this crate).
    work: PathBuf,
}

/// Reports progress: Docker's `stream` text, line by line.
pub type Out<'o> = &'o mut dyn FnMut(&str);

impl<'a> Builder<'a> {
    pub fn new(store: &'a Store, runner: Runner, pull: Option<PullFn<'a>>) -> Builder<'a> {
        let work = store.root().join("build");
        Builder {
            store,
            runner,
            pull,
            work,
        }
    }

    fn scratch(&self, what: &str) -> Result<Scratch> {
        let dir = self
            .work
            .join("tmp")
            .join(format!("{what}-{}-{}", std::process::id(), unique()));
        std::fs::create_dir_all(&dir).map_err(|e| BuildError::io_path(&dir, e))?;
        Ok(Scratch { dir })
    }

    pub fn build(&self, opts: &BuildOptions, out: Out) -> Result<Built> {
        // A bad -t fails before any work.
        for t in &opts.tags {
            cubby_image::reference::Reference::parse(t)?;
        }
        let df_path = match &opts.dockerfile {
            Some(p) if p.is_absolute() => p.clone(),
            Some(p) => opts.context.join(p),
            None => opts.context.join("Dockerfile"),
        };
        let text = std::fs::read_to_string(&df_path).map_err(|e| {
            BuildError::io(format!("reading the Dockerfile {}", df_path.display()), e)
        })?;
        let df = dockerfile::parse(&text)?;
        let esc = df.escape;
        // Keeps gc from removing the layers of earlier steps before the
        // image that uses them is recorded.
        let _pin = self.store.pin()?;
        let ctx = Source::context(&opts.context)?;

        // ARGs before the first FROM, then the stages.
        let mut global: BTreeMap<String, String> = BTreeMap::new();
        let mut consumed: Vec<String> = Vec::new();
        let mut stages_ins: Vec<Vec<&Instruction>> = Vec::new();
        for ins in &df.instructions {
            if ins.keyword == "FROM" {
                stages_ins.push(vec![ins]);
            } else if let Some(cur) = stages_ins.last_mut() {
                cur.push(ins);
            } else if ins.keyword == "ARG" {
                let vars = HashMap::new();
                for (k, v) in arg_decls(ins, esc, &vars)? {
                    let val = opts.build_args.get(&k).cloned().or(v).unwrap_or_default();
                    consumed.push(k.clone());
                    global.insert(k, val);
                }
            } else {
                return Err(ins.syntax(format!(
                    "{} before the first FROM: only ARG may come before FROM",
                    ins.keyword
                )));
            }
        }
        if stages_ins.is_empty() {
            return Err(BuildError::Syntax {
                line: 1,
                msg: "no FROM instruction: a Dockerfile starts with FROM".into(),
            });
        }
        // --target: the stage by name; later stages are not built.
        let last = match &opts.target {
            None => stages_ins.len() - 1,
            Some(t) => stages_ins
                .iter()
                .position(|s| {
                    stage_name(s[0], esc, &global).ok().flatten().as_deref()
                        == Some(t.to_ascii_lowercase().as_str())
                })
                .ok_or_else(|| {
                    BuildError::invalid(format!("target stage {t:?} could not be found"))
                })?,
        };
        let total: usize = stages_ins[..=last].iter().map(|s| s.len()).sum();
        let mut step_no = 0;
        let mut stages: Vec<Stage> = Vec::new();
        for ins_list in &stages_ins[..=last] {
            let mut stage: Option<Stage> = None;
            for ins in ins_list {
                step_no += 1;
                out(&format!("Step {step_no}/{total} : {}\n", ins.original));
                if ins.keyword == "FROM" {
                    stage = Some(self.from(ins, esc, &global, &stages, opts, out)?);
                } else if let Some(st) = stage.as_mut() {
                    self.step(
                        ins,
                        esc,
                        st,
                        &stages,
                        &ctx,
                        &global,
                        &mut consumed,
                        opts,
                        out,
                    )?;
                }
                if let Some(st) = &stage {
                    out(&format!(" ---> {}\n", &st.state.hash()[..12]));
                }
            }
            if let Some(st) = stage {
                stages.push(st);
            }
        }
        let unused: Vec<&String> = opts
            .build_args
            .keys()
            .filter(|k| !consumed.contains(k) && !PREDEFINED_ARGS.contains(&k.as_str()))
            .collect();
        if !unused.is_empty() {
            let names: Vec<&str> = unused.iter().map(|s| s.as_str()).collect();
            out(&format!(
                "[Warning] One or more build-args [{}] were not consumed\n",
                names.join(" ")
            ));
        }
        let mut fin = stages
            .pop()
            .map(|s| s.state)
            .ok_or_else(|| BuildError::invalid("nothing to build"))?;
        for (k, v) in &opts.labels {
            fin.map_insert("Labels", k.clone(), json!(v));
        }
        let built = self.write_image(&fin, &opts.tags)?;
        out(&format!("Successfully built {}\n", &built.id.hex()[..12]));
        for t in &opts.tags {
            // As Docker prints it: `app:latest`, `host:5000/x:1`.
            let shown = cubby_image::reference::Reference::parse(t)
                .map(|r| r.familiar())
                .unwrap_or_else(|_| t.clone());
            out(&format!("Successfully tagged {shown}\n"));
        }
        Ok(built)
    }

    fn from(
        &self,
        ins: &Instruction,
        esc: char,
        global: &BTreeMap<String, String>,
        stages: &[Stage],
        opts: &BuildOptions,
        out: Out,
    ) -> Result<Stage> {
        let vars: HashMap<String, String> = global.clone().into_iter().collect();
        let Args::Shell(text) = &ins.args else {
            return Err(ins.syntax("FROM takes an image name, not a JSON array"));
        };
        let w = dockerfile::words(text, esc, &vars)?;
        let (image, name) = match w.as_slice() {
            [i] => (i.clone(), None),
            [i, as_, n] if as_.eq_ignore_ascii_case("as") => {
                (i.clone(), Some(n.to_ascii_lowercase()))
            }
            _ => return Err(ins.syntax("FROM takes IMAGE [AS NAME]")),
        };
        for (f, v) in &ins.flags {
            if f != "platform" {
                return Err(ins.syntax(format!("unknown flag for FROM: --{f}")));
            }
            let host = format!("linux/{}", cubby_image::pull::Platform::host().architecture);
            if !v.is_empty() && *v != host {
                return Err(BuildError::Unsupported(format!(
                    "FROM --platform={v} (this host builds {host} only)"
                )));
            }
        }
        let state = if image.eq_ignore_ascii_case("scratch") {
            State::empty()
        } else if let Some(s) = stages
            .iter()
            .find(|s| s.name.as_deref() == Some(image.to_ascii_lowercase().as_str()))
        {
            s.state.clone()
        } else {
            self.base_image(&image, opts.pull, out)?
        };
        Ok(Stage {
            name,
            state,
            args: BTreeMap::new(),
            cmd_set: false,
        })
    }

    fn base_image(&self, name: &str, pull: bool, out: Out) -> Result<State> {
        let mut rec = cubby_engine::snapshots::find_image(self.store, name)?;
        if rec.is_none() || pull {
            let Some(p) = self.pull else {
                return Err(BuildError::invalid(format!(
                    "image {name} is not in the store and this builder cannot pull"
                )));
            };
            out(&format!("Pulling {name}\n"));
            p(name).map_err(|e| BuildError::invalid(format!("pulling {name}: {e}")))?;
            rec = cubby_engine::snapshots::find_image(self.store, name)?;
        }
        let rec = rec.ok_or_else(|| BuildError::invalid(format!("image {name} not found")))?;
        self.state_of(&rec)
    }

    fn state_of(&self, rec: &ImageRecord) -> Result<State> {
        let bad = |r: &str| BuildError::invalid(format!("image {}: {r}", rec.name));
        let config: Value = serde_json::from_slice(&self.store.read_blob(&rec.config_digest)?)
            .map_err(|e| bad(&format!("config: {e}")))?;
        let manifest: Value = serde_json::from_slice(&self.store.read_blob(&rec.manifest_digest)?)
            .map_err(|e| bad(&format!("manifest: {e}")))?;
        let diff_ids: Vec<Digest> = config["rootfs"]["diff_ids"]
            .as_array()
            .ok_or_else(|| bad("config has no rootfs.diff_ids"))?
            .iter()
            .map(|d| d.as_str().unwrap_or("").parse())
            .collect::<std::result::Result<_, _>>()?;
        let mlayers = manifest["layers"]
            .as_array()
            .ok_or_else(|| bad("manifest has no layers"))?;
        if mlayers.len() != diff_ids.len() || rec.layers.len() != diff_ids.len() {
            return Err(bad("manifest, config and record disagree on the layers"));
        }
        let mut layers = Vec::new();
        for ((l, diff_id), chain) in mlayers.iter().zip(diff_ids).zip(&rec.layers) {
            layers.push(Layer {
                chain: chain.clone(),
                diff_id,
                blob: l["digest"].as_str().unwrap_or("").parse()?,
                blob_size: l["size"].as_u64().unwrap_or(0),
                media_type: l["mediaType"]
                    .as_str()
                    .unwrap_or(layer::GZIP_LAYER)
                    .to_string(),
            });
        }
        let cfg = config["config"].as_object().cloned().unwrap_or_default();
        Ok(State {
            layers,
            config: cfg,
            history: config["history"].as_array().cloned().unwrap_or_default(),
            created: config["created"]
                .as_str()
                .unwrap_or("1970-01-01T00:00:00Z")
                .to_string(),
            author: config["author"].as_str().map(String::from),
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn step(
        &self,
        ins: &Instruction,
        esc: char,
        st: &mut Stage,
        stages: &[Stage],
        ctx: &Source,
        global: &BTreeMap<String, String>,
        consumed: &mut Vec<String>,
        opts: &BuildOptions,
        out: Out,
    ) -> Result<()> {
        // Variables: the stage's ARGs, then its ENV (ENV wins).
        let mut vars: HashMap<String, String> = st.args.clone().into_iter().collect();
        for e in st.state.env() {
            if let Some((k, v)) = e.split_once('=') {
                vars.insert(k.to_string(), v.to_string());
            }
        }
        let text = match &ins.args {
            Args::Shell(s) => s.clone(),
            Args::Exec(v) => serde_json::to_string(v).unwrap_or_default(),
        };
        if !matches!(ins.keyword.as_str(), "RUN" | "COPY" | "ADD" | "HEALTHCHECK")
            && !ins.flags.is_empty()
        {
            return Err(ins.syntax(format!("{} takes no flags", ins.keyword)));
        }
        let s = &mut st.state;
        match ins.keyword.as_str() {
            "ARG" => {
                for (k, v) in arg_decls(ins, esc, &vars)? {
                    let val = opts
                        .build_args
                        .get(&k)
                        .cloned()
                        .or(v)
                        .or_else(|| global.get(&k).cloned())
                        .unwrap_or_default();
                    consumed.push(k.clone());
                    st.args.insert(k, val);
                }
            }
            "ENV" => {
                for (k, v) in key_values(ins, &text, esc, &vars, true)? {
                    s.set_env(&k, &v);
                }
                s.history(format!("ENV {text}"), true);
            }
            "LABEL" => {
                for (k, v) in key_values(ins, &text, esc, &vars, false)? {
                    s.map_insert("Labels", k, json!(v));
                }
                s.history(format!("LABEL {text}"), true);
            }
            "MAINTAINER" => {
                s.author = Some(dockerfile::expand(&text, esc, &vars)?);
                s.history(format!("MAINTAINER {text}"), true);
            }
            "EXPOSE" => {
                for p in dockerfile::words(&text, esc, &vars)? {
                    let port = if p.contains('/') {
                        p.to_ascii_lowercase()
                    } else {
                        format!("{p}/tcp")
                    };
                    let (num, proto) = port.split_once('/').unwrap_or((&port, "tcp"));
                    if num.parse::<u16>().is_err() || !matches!(proto, "tcp" | "udp" | "sctp") {
                        return Err(ins.syntax(format!("invalid port {p:?}")));
                    }
                    s.map_insert("ExposedPorts", port, json!({}));
                }
                s.history(format!("EXPOSE {text}"), true);
            }
            "VOLUME" => {
                let vols = match &ins.args {
                    Args::Exec(v) => v.clone(),
                    Args::Shell(t) => dockerfile::words(t, esc, &vars)?,
                };
                for v in vols {
                    if v.is_empty() {
                        return Err(ins.syntax("VOLUME with an empty path"));
                    }
                    s.map_insert("Volumes", v, json!({}));
                }
                s.history(format!("VOLUME {text}"), true);
            }
            "USER" => {
                let u = dockerfile::expand(&text, esc, &vars)?;
                s.config.insert("User".into(), json!(u));
                s.history(format!("USER {u}"), true);
            }
            "STOPSIGNAL" => {
                let sig = dockerfile::expand(&text, esc, &vars)?;
                s.config.insert("StopSignal".into(), json!(sig));
                s.history(format!("STOPSIGNAL {sig}"), true);
            }
            "SHELL" => {
                let Args::Exec(v) = &ins.args else {
                    return Err(ins.syntax(
                        "SHELL requires the JSON form: SHELL [\"executable\", \"parameters\"]",
                    ));
                };
                if v.is_empty() {
                    return Err(ins.syntax("SHELL requires at least one argument"));
                }
                s.config.insert("Shell".into(), json!(v));
                s.history(format!("SHELL {text}"), true);
            }
            "CMD" | "ENTRYPOINT" => {
                let cmd = match &ins.args {
                    Args::Exec(v) => v.clone(),
                    Args::Shell(t) if t.is_empty() => Vec::new(),
                    Args::Shell(t) => {
                        let mut c = s.shell();
                        c.push(t.clone());
                        c
                    }
                };
                if ins.keyword == "CMD" {
                    s.config.insert("Cmd".into(), json!(cmd));
                    st.cmd_set = true;
                } else {
                    s.config.insert("Entrypoint".into(), json!(cmd));
                    if !st.cmd_set {
                        s.config.insert("Cmd".into(), Value::Null);
                    }
                }
                s.history(format!("{} {text}", ins.keyword), true);
            }
            "HEALTHCHECK" => {
                let hc = healthcheck(ins, &s.shell())?;
                s.config.insert("Healthcheck".into(), hc);
                s.history(format!("HEALTHCHECK {text}"), true);
            }
            "ONBUILD" => {
                return Err(BuildError::Unsupported(format!(
                    "ONBUILD (line {})",
                    ins.line
                )))
            }
            "WORKDIR" => {
                let w = dockerfile::expand(&text, esc, &vars)?;
                let abs = if w.starts_with('/') {
                    w
                } else {
                    format!("{}/{w}", s.workdir())
                };
                let abs = format!("/{}", context::clean(&abs).unwrap_or_default());
                s.config.insert("WorkingDir".into(), json!(abs));
                let dirs = self.layer_dirs(s);
                if !abs.trim_matches('/').is_empty()
                    && layer::lookup(&dirs, abs.trim_matches('/')).is_none()
                {
                    // Made like Docker does: a layer with the new directory.
                    let key = cache_key(s, &format!("WORKDIR {abs}"), "");
                    self.cached_or(
                        key,
                        st,
                        opts,
                        out,
                        |b, state, _out| {
                            let scratch = b.scratch("workdir")?;
                            let stage_dir = scratch.dir.join("fs");
                            make_parents(&dirs, &stage_dir, abs.trim_matches('/'), true)?;
                            let l = layer::commit_dir(
                                b.store,
                                &stage_dir,
                                state.layers.last().map(|l| &l.chain),
                                &scratch.dir,
                            )?;
                            Ok(vec![l])
                        },
                        format!("WORKDIR {abs}"),
                    )?;
                } else {
                    st.state.history(format!("WORKDIR {abs}"), true);
                }
            }
            "RUN" => {
                if let Some((f, _)) = ins.flags.first() {
                    return Err(BuildError::Unsupported(format!(
                        "RUN --{f} (line {})",
                        ins.line
                    )));
                }
                let command = match &ins.args {
                    Args::Exec(v) => v.clone(),
                    Args::Shell(t) => {
                        let mut c = s.shell();
                        c.push(t.clone());
                        c
                    }
                };
                let arg_env: Vec<String> =
                    st.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let created_by = format!("RUN {}", command.join(" "));
                let key = cache_key(
                    s,
                    &format!(
                        "RUN {}",
                        serde_json::to_string(&command).unwrap_or_default()
                    ),
                    &format!("{arg_env:?} {:?}", opts.network),
                );
                let network = opts.network.clone();
                self.cached_or(
                    key,
                    st,
                    opts,
                    out,
                    |b, state, out| b.run(state, command, arg_env, network, out),
                    created_by,
                )?;
            }
            "COPY" | "ADD" => {
                self.copy(ins, esc, &vars, st, stages, ctx, opts, out)?;
            }
            k => return Err(ins.syntax(format!("unknown instruction: {k}"))),
        }
        Ok(())
    }

    fn layer_dirs(&self, s: &State) -> Vec<PathBuf> {
        s.layers
            .iter()
            .map(|l| self.store.layer_dir(&l.chain))
            .collect()
    }

    /// A layer step: the cached result for `key`, or `make` run and cached.
    fn cached_or(
        &self,
        key: String,
        st: &mut Stage,
        opts: &BuildOptions,
        out: Out,
        make: impl FnOnce(&Self, &State, Out) -> Result<Vec<Layer>>,
        created_by: String,
    ) -> Result<()> {
        let entry = self.work.join("cache").join(format!("{key}.json"));
        if !opts.no_cache {
            if let Some(cached) = std::fs::read(&entry)
                .ok()
                .and_then(|b| serde_json::from_slice::<State>(&b).ok())
                .filter(|c| {
                    c.layers
                        .iter()
                        .all(|l| self.store.has_layer(&l.chain) && self.store.has_blob(&l.blob))
                })
            {
                out(" ---> Using cache\n");
                st.state = cached;
                return Ok(());
            }
        }
        let new = make(self, &st.state, out)?;
        let mut next = st.state.clone();
        next.created = cubby_runtime::state::rfc3339_now();
        let empty = new.is_empty();
        next.layers.extend(new);
        next.history(created_by, empty);
        let bytes = serde_json::to_vec(&next).map_err(|e| BuildError::invalid(e.to_string()))?;
        if let Some(d) = entry.parent() {
            std::fs::create_dir_all(d).map_err(|e| BuildError::io_path(d, e))?;
        }
        cubby_runtime::state::write_atomic(&entry, &bytes)
            .map_err(|e| BuildError::invalid(format!("writing the build cache: {e}")))?;
        st.state = next;
        Ok(())
    }

    fn run(
        &self,
        s: &State,
        command: Vec<String>,
        arg_env: Vec<String>,
        network: NetworkMode,
        out: Out,
    ) -> Result<Vec<Layer>> {
        let scratch = self.scratch("run")?;
        let empty = scratch.dir.join("empty");
        std::fs::create_dir_all(&empty).map_err(|e| BuildError::io_path(&empty, e))?;
        let mut lowers = self.layer_dirs(s);
        if lowers.is_empty() {
            lowers.push(empty);
        }
        let snap = Snapshot::at(scratch.dir.join("snap"));
        let rootfs = snap.mount(&lowers)?;
        let id = format!("build-{}-{}", std::process::id(), unique());
        let workdir = s.workdir();
        out(&format!(" ---> Running in {id}\n"));
        let code = self.runner.run(
            RunStep {
                id: &id,
                rootfs: &rootfs,
                bundle: &snap.dir,
                command: command.clone(),
                image_env: s.env(),
                env: arg_env,
                workdir: Some(PathBuf::from(workdir)),
                user: s.str_field("User"),
                network,
            },
            out,
        );
        let code = code?;
        snap.unmount()?;
        if code != 0 {
            return Err(BuildError::RunFailed {
                command: command.join(" "),
                code,
            });
        }
        let upper = snap.dir.join("upper");
        let l = layer::commit_dir(
            self.store,
            &upper,
            s.layers.last().map(|l| &l.chain),
            &scratch.dir,
        )?;
        Ok(vec![l])
    }

    #[allow(clippy::too_many_arguments)]
    fn copy(
        &self,
        ins: &Instruction,
        esc: char,
        vars: &HashMap<String, String>,
        st: &mut Stage,
        stages: &[Stage],
        ctx: &Source,
        opts: &BuildOptions,
        out: Out,
    ) -> Result<()> {
        let add = ins.keyword == "ADD";
        let mut from = None;
        let mut chown = None;
        let mut chmod = None;
        for (f, v) in &ins.flags {
            match f.as_str() {
                "from" if !add => from = Some(dockerfile::expand(v, esc, vars)?),
                "chown" => chown = Some(dockerfile::expand(v, esc, vars)?),
                "chmod" => {
                    chmod = Some(u32::from_str_radix(v, 8).map_err(|_| {
                        ins.syntax(format!("--chmod={v}: give an octal mode such as 755"))
                    })?)
                }
                f => {
                    return Err(BuildError::Unsupported(format!(
                        "{} --{f} (line {})",
                        ins.keyword, ins.line
                    )))
                }
            }
        }
        let mut w = match &ins.args {
            Args::Exec(v) => v
                .iter()
                .map(|a| dockerfile::expand(a, esc, vars))
                .collect::<Result<Vec<_>>>()?,
            Args::Shell(t) => dockerfile::words(t, esc, vars)?,
        };
        if w.len() < 2 {
            return Err(ins.syntax(format!(
                "{} requires at least two arguments: SRC... DEST",
                ins.keyword
            )));
        }
        let dest = w.pop().unwrap_or_default();
        let srcs = w;
        for s in &srcs {
            if s.contains("://") || s.starts_with("git@") {
                return Err(BuildError::Unsupported(format!(
                    "{} from a URL ({s}, line {}): cubby build does not download; put the file in the build context",
                    ins.keyword, ins.line
                )));
            }
        }
        // The source: the context, a stage, or an image.
        let mut mounted: Option<Scratch> = None;
        let source = match &from {
            None => None,
            Some(f) => {
                let state = if let Some(s) = stages
                    .iter()
                    .find(|s| s.name.as_deref() == Some(f.to_ascii_lowercase().as_str()))
                {
                    s.state.clone()
                } else if let Some(s) = f.parse::<usize>().ok().and_then(|i| stages.get(i)) {
                    s.state.clone()
                } else {
                    self.base_image(f, false, out)?
                };
                let scratch = self.scratch("from")?;
                let snap = Snapshot::at(scratch.dir.join("snap"));
                let mut lowers = self.layer_dirs(&state);
                if lowers.is_empty() {
                    let e = scratch.dir.join("empty");
                    std::fs::create_dir_all(&e).map_err(|er| BuildError::io_path(&e, er))?;
                    lowers.push(e);
                }
                let rootfs = snap.mount(&lowers)?;
                mounted = Some(scratch);
                Some(Source::rootfs(&rootfs))
            }
        };
        let src: &Source = source.as_ref().unwrap_or(ctx);
        let mut rels = Vec::new();
        for s in &srcs {
            rels.push(src.expand(s)?);
        }
        let many = srcs.len() > 1 || srcs.iter().any(|s| context::has_glob(s));
        let workdir = st.state.workdir();
        let dest_abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!("{workdir}/{dest}")
        };
        let dest_rel = context::clean(&dest_abs).unwrap_or_default();
        let dirs = self.layer_dirs(&st.state);
        let dest_is_dir = dest.ends_with('/')
            || dest == "."
            || many
            || layer::lookup(&dirs, &dest_rel).is_some_and(|m| m.is_dir());
        let owner = match &chown {
            Some(c) => Some(resolve_owner(&dirs, c)?),
            None => None,
        };
        let flat: Vec<String> = rels.into_iter().flatten().collect();
        let mut h = sha2::Sha256::new();
        context::hash_sources(src, &flat, &mut h)?;
        let what = format!(
            "{} {:?} {:?} {:?} {} {} {}",
            ins.keyword,
            from,
            owner,
            chmod,
            serde_json::to_string(&flat).unwrap_or_default(),
            dest_rel,
            dest_is_dir
        );
        let key = cache_key(&st.state, &what, &hex(&h.finalize()));
        let created_by = ins.original.clone();
        self.cached_or(
            key,
            st,
            opts,
            out,
            |b, state, _out| {
                let scratch = b.scratch("copy")?;
                let stage_dir = scratch.dir.join("fs");
                std::fs::create_dir_all(&stage_dir)
                    .map_err(|e| BuildError::io_path(&stage_dir, e))?;
                let cp = Copier {
                    src,
                    owner,
                    chmod,
                    keep_owner: !src.is_context(),
                };
                for rel in &flat {
                    let host = src.resolve(rel)?;
                    let meta = std::fs::metadata(&host)
                        .map_err(|_| BuildError::MissingSource(rel.clone()))?;
                    let base = Path::new(rel)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    if meta.is_dir() {
                        make_parents(&dirs, &stage_dir, &dest_rel, true)?;
                        cp.copy_dir_contents(&host, rel, &stage_dir.join(&dest_rel))?;
                    } else if add && is_archive(&host) {
                        make_parents(&dirs, &stage_dir, &dest_rel, true)?;
                        unpack_archive(&host, &stage_dir.join(&dest_rel))?;
                    } else {
                        let target = if dest_is_dir {
                            format!("{dest_rel}/{base}")
                        } else {
                            dest_rel.clone()
                        };
                        make_parents(&dirs, &stage_dir, &target, false)?;
                        cp.copy_entry(&host, &meta, &stage_dir.join(&target))?;
                    }
                }
                let l = layer::commit_dir(
                    b.store,
                    &stage_dir,
                    state.layers.last().map(|l| &l.chain),
                    &scratch.dir,
                )?;
                Ok(vec![l])
            },
            created_by,
        )?;
        drop(mounted);
        Ok(())
    }

    fn write_image(&self, s: &State, tags: &[String]) -> Result<Built> {
        let _pin = self.store.pin()?;
        let arch = cubby_image::pull::Platform::host().architecture;
        let mut config = json!({
            "created": s.created,
            "architecture": arch,
            "os": "linux",
            "config": s.config,
            "rootfs": {"type": "layers", "diff_ids": s.layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
            "history": s.history,
        });
        if let Some(a) = &s.author {
            config["author"] = json!(a);
        }
        let config_bytes =
            serde_json::to_vec(&config).map_err(|e| BuildError::invalid(e.to_string()))?;
        let config_digest = self.store.put_blob(&config_bytes)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest.to_string(), "size": config_bytes.len()},
            "layers": s.layers.iter().map(|l| json!({"mediaType": l.media_type, "digest": l.blob.to_string(), "size": l.blob_size})).collect::<Vec<_>>(),
        });
        let manifest_bytes =
            serde_json::to_vec(&manifest).map_err(|e| BuildError::invalid(e.to_string()))?;
        let manifest_digest = self.store.put_blob(&manifest_bytes)?;
        let mut blobs = vec![manifest_digest.clone(), config_digest.clone()];
        blobs.extend(s.layers.iter().map(|l| l.blob.clone()));
        let names: Vec<String> = if tags.is_empty() {
            vec![cubby_image::archive::dangling_name(&config_digest)]
        } else {
            tags.iter()
                .map(|t| cubby_image::reference::Reference::parse(t).map(|r| r.to_string()))
                .collect::<std::result::Result<_, _>>()?
        };
        for n in &names {
            self.store.put_image(ImageRecord {
                name: n.clone(),
                manifest_digest: manifest_digest.clone(),
                config_digest: config_digest.clone(),
                layers: s.layers.iter().map(|l| l.chain.clone()).collect(),
                blobs: blobs.clone(),
                size: s.layers.iter().map(|l| l.blob_size).sum(),
                created: s.created.clone(),
            })?;
        }
        Ok(Built {
            id: config_digest,
            names,
        })
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    N.fetch_add(1, Ordering::Relaxed) * 1_000_000_000 + nanos
}

fn cache_key(parent: &State, what: &str, extra: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(parent.hash().as_bytes());
    h.update(b"\n");
    h.update(what.as_bytes());
    h.update(b"\n");
    h.update(extra.as_bytes());
    hex(&h.finalize())
}

fn stage_name(
    from: &Instruction,
    esc: char,
    global: &BTreeMap<String, String>,
) -> Result<Option<String>> {
    let vars: HashMap<String, String> = global.clone().into_iter().collect();
    let Args::Shell(t) = &from.args else {
        return Ok(None);
    };
    let w = dockerfile::words(t, esc, &vars)?;
    Ok(match w.as_slice() {
        [_, a, n] if a.eq_ignore_ascii_case("as") => Some(n.to_ascii_lowercase()),
        _ => None,
    })
}

/// `ARG a b=c`: names with optional defaults.
fn arg_decls(
    ins: &Instruction,
    esc: char,
    vars: &HashMap<String, String>,
) -> Result<Vec<(String, Option<String>)>> {
    let Args::Shell(t) = &ins.args else {
        return Err(ins.syntax("ARG takes NAME[=DEFAULT]"));
    };
    let mut out = Vec::new();
    for w in dockerfile::words(t, esc, vars)? {
        let (k, v) = match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w, None),
        };
        if k.is_empty() {
            return Err(ins.syntax("ARG names must not be empty"));
        }
        out.push((k, v));
    }
    Ok(out)
}

/// `ENV a=b c="d e"` or the old `ENV a b c` (one pair).
fn key_values(
    ins: &Instruction,
    text: &str,
    esc: char,
    vars: &HashMap<String, String>,
    legacy: bool,
) -> Result<Vec<(String, String)>> {
    let first = text.split_whitespace().next().unwrap_or("");
    if legacy && !first.contains('=') {
        let rest = text[first.len()..].trim_start();
        return Ok(vec![(
            first.to_string(),
            dockerfile::expand(rest, esc, vars)?,
        )]);
    }
    let mut out = Vec::new();
    for w in dockerfile::words(text, esc, vars)? {
        let Some((k, v)) = w.split_once('=') else {
            return Err(ins.syntax(format!("{} needs KEY=VALUE, got {w:?}", ins.keyword)));
        };
        if k.is_empty() {
            return Err(ins.syntax(format!("{} with an empty key", ins.keyword)));
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn duration_ns(ins: &Instruction, v: &str) -> Result<i64> {
    let mut total: f64 = 0.0;
    let mut num = String::new();
    let mut chars = v.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() || c == '.' {
            num.push(c);
            continue;
        }
        let mut unit = c.to_string();
        if c == 'm' && chars.peek() == Some(&'s') {
            unit.push('s');
            chars.next();
        }
        let n: f64 = num
            .parse()
            .map_err(|_| ins.syntax(format!("invalid duration {v:?}")))?;
        num.clear();
        total += n * match unit.as_str() {
            "h" => 3600e9,
            "m" => 60e9,
            "s" => 1e9,
            "ms" => 1e6,
            _ => return Err(ins.syntax(format!("invalid duration {v:?}"))),
        };
    }
    if !num.is_empty() {
        return Err(ins.syntax(format!("invalid duration {v:?}: missing unit")));
    }
    Ok(total as i64)
}

fn healthcheck(ins: &Instruction, shell: &[String]) -> Result<Value> {
    let mut hc = Map::new();
    for (f, v) in &ins.flags {
        let key = match f.as_str() {
            "interval" => "Interval",
            "timeout" => "Timeout",
            "start-period" => "StartPeriod",
            "start-interval" => "StartInterval",
            "retries" => {
                let n: i64 = v
                    .parse()
                    .map_err(|_| ins.syntax(format!("--retries={v}")))?;
                hc.insert("Retries".into(), json!(n));
                continue;
            }
            f => return Err(ins.syntax(format!("unknown flag for HEALTHCHECK: --{f}"))),
        };
        hc.insert(key.into(), json!(duration_ns(ins, v)?));
    }
    let test = match &ins.args {
        Args::Shell(t) if t.trim().eq_ignore_ascii_case("none") => json!(["NONE"]),
        Args::Shell(t) => {
            let rest = t
                .trim_start()
                .strip_prefix("CMD")
                .or_else(|| t.trim_start().strip_prefix("cmd"))
                .ok_or_else(|| ins.syntax("HEALTHCHECK takes NONE or [OPTIONS] CMD command"))?
                .trim_start();
            if rest.starts_with('[') {
                match serde_json::from_str::<Vec<String>>(rest) {
                    Ok(mut v) => {
                        v.insert(0, "CMD".into());
                        json!(v)
                    }
                    Err(_) => json!(["CMD-SHELL", rest]),
                }
            } else {
                let _ = shell;
                json!(["CMD-SHELL", rest])
            }
        }
        Args::Exec(_) => return Err(ins.syntax("HEALTHCHECK takes NONE or [OPTIONS] CMD command")),
    };
    hc.insert("Test".into(), test);
    Ok(Value::Object(hc))
}

/// `user[:group]` by number, or by name from the stage's /etc/passwd and
/// /etc/group.
fn resolve_owner(dirs: &[PathBuf], spec: &str) -> Result<(u32, u32)> {
    let read = |f: &str| -> String {
        dirs.iter()
            .rev()
            .map(|d| d.join(f))
            .find(|p| p.is_file())
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    cubby_engine::users::lookup(&read("etc/passwd"), &read("etc/group"), spec)
        .map_err(|e| BuildError::invalid(format!("--chown={spec}: {e}")))
}

/// Creates the directories above `rel` (and `rel` itself when `is_dir`) in
/// the staging dir, each with the mode and owner it has in the image.
fn make_parents(dirs: &[PathBuf], stage: &Path, rel: &str, is_dir: bool) -> Result<()> {
    let segs: Vec<&str> = rel.split('/').filter(|s| !s.is_empty()).collect();
    let upto = if is_dir {
        segs.len()
    } else {
        segs.len().saturating_sub(1)
    };
    let mut cur = String::new();
    for s in &segs[..upto] {
        if !cur.is_empty() {
            cur.push('/');
        }
        cur.push_str(s);
        let p = stage.join(&cur);
        clear_for(&p, true)?;
        if std::fs::symlink_metadata(&p).is_ok() {
            continue;
        }
        std::fs::create_dir_all(&p).map_err(|e| BuildError::io_path(&p, e))?;
        let (mode, uid, gid) = match layer::lookup(dirs, &cur) {
            Some(m) if m.is_dir() => (m.mode() & 0o7777, m.uid(), m.gid()),
            _ => (0o755, 0, 0),
        };
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
            .map_err(|e| BuildError::io_path(&p, e))?;
        std::os::unix::fs::lchown(&p, Some(uid), Some(gid))
            .map_err(|e| BuildError::io_path(&p, e))?;
    }
    if stage.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(stage).map_err(|e| BuildError::io_path(stage, e))
}

struct Copier<'s> {
    src: &'s Source,
    owner: Option<(u32, u32)>,
    chmod: Option<u32>,
    /// Files from a stage keep their owners; from the context they are root's.
    keep_owner: bool,
}

impl Copier<'_> {
    fn own(&self, p: &Path, m: &std::fs::Metadata) -> Result<()> {
        let (u, g) = match self.owner {
            Some(o) => o,
            None if self.keep_owner => (m.uid(), m.gid()),
            None => (0, 0),
        };
        std::os::unix::fs::lchown(p, Some(u), Some(g)).map_err(|e| BuildError::io_path(p, e))
    }

    fn copy_entry(&self, host: &Path, m: &std::fs::Metadata, dest: &Path) -> Result<()> {
        let err = |e| BuildError::io_path(dest, e);
        clear_for(dest, m.is_dir())?;
        if m.file_type().is_symlink() {
            let t = std::fs::read_link(host).map_err(|e| BuildError::io_path(host, e))?;
            std::os::unix::fs::symlink(t, dest).map_err(err)?;
            return self.own(dest, m);
        }
        if m.is_dir() {
            if std::fs::symlink_metadata(dest).is_err() {
                std::fs::create_dir(dest).map_err(err)?;
            }
        } else if m.is_file() {
            std::fs::copy(host, dest).map_err(err)?;
        } else {
            // Sockets, fifos and devices are not copied (Docker skips them too).
            return Ok(());
        }
        let mode = self.chmod.unwrap_or(m.mode() & 0o7777);
        std::fs::set_permissions(dest, std::fs::Permissions::from_mode(mode)).map_err(err)?;
        self.own(dest, m)?;
        let mtime = nix::sys::time::TimeSpec::new(m.mtime(), m.mtime_nsec());
        let _ = nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            dest,
            &mtime,
            &mtime,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        );
        Ok(())
    }

    fn copy_dir_contents(&self, host: &Path, rel: &str, dest: &Path) -> Result<()> {
        let mut names: Vec<String> = std::fs::read_dir(host)
            .map_err(|e| BuildError::io_path(host, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for n in names {
            let r = format!("{rel}/{n}");
            if self.src.is_context() && self.src.ignored(r.trim_start_matches('/')) {
                continue;
            }
            let hp = host.join(&n);
            let m = std::fs::symlink_metadata(&hp).map_err(|e| BuildError::io_path(&hp, e))?;
            let dp = dest.join(&n);
            self.copy_entry(&hp, &m, &dp)?;
            if m.is_dir() {
                self.copy_dir_contents(&hp, &r, &dp)?;
            }
        }
        Ok(())
    }
}

fn is_archive(p: &Path) -> bool {
    let mut head = [0u8; 512];
    let Ok(mut f) = std::fs::File::open(p) else {
        return false;
    };
    let n = std::io::Read::read(&mut f, &mut head).unwrap_or(0);
    (n >= 2 && head[..2] == [0x1f, 0x8b]) || (n >= 262 && &head[257..262] == b"ustar")
}

/// ADD of a local tar (plain or gzip): unpacked at `dest`, paths kept inside.
fn unpack_archive(p: &Path, dest: &Path) -> Result<()> {
    let input = cubby_image::archive::decompressed(p)?;
    let mut a = tar::Archive::new(input);
    a.set_preserve_permissions(true);
    a.set_preserve_ownerships(true);
    a.set_overwrite(true);
    a.unpack(dest).map_err(|e| {
        BuildError::invalid(format!("ADD {}: not a valid tar archive: {e}", p.display()))
    })
}

/// What `commit` makes of a container.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// Names for the image (none: a dangling image).
    pub tags: Vec<String>,
    /// Dockerfile instructions applied to the config (`--change`): CMD,
    /// ENTRYPOINT, ENV, LABEL, EXPOSE, USER, WORKDIR, VOLUME, STOPSIGNAL,
    /// ONBUILD refused.
    pub changes: Vec<String>,
    /// Docker's commit body (a container config): Cmd, Entrypoint, Env,
    /// Labels, WorkingDir, User, ExposedPorts, Volumes, StopSignal.
    pub config: Map<String, Value>,
    pub comment: Option<String>,
    pub author: Option<String>,
}

impl Builder<'_> {
    /// The container whose snapshot is `dir` (`upper`, and `image` naming
    /// its image) as a new image: its image's layers plus the changes.
    pub fn commit(&self, dir: &Path, opts: &CommitOptions) -> Result<Built> {
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .map(|s| s.trim().to_string())
                .map_err(|e| BuildError::io_path(&dir.join(f), e))
        };
        let image = read("image")?;
        let _pin = self.store.pin()?;
        let rec = cubby_engine::snapshots::find_image(self.store, &image)?
            .ok_or_else(|| BuildError::invalid(format!("the container's image {image} is gone")))?;
        let mut state = self.state_of(&rec)?;
        let upper = dir.join("upper");
        let scratch = self.scratch("commit")?;
        let l = layer::commit_dir(
            self.store,
            &upper,
            state.layers.last().map(|l| &l.chain),
            &scratch.dir,
        )?;
        state.layers.push(l);
        state.created = cubby_runtime::state::rfc3339_now();
        const FIELDS: &[&str] = &[
            "Cmd",
            "Entrypoint",
            "WorkingDir",
            "User",
            "ExposedPorts",
            "Volumes",
            "StopSignal",
            "Healthcheck",
        ];
        for (k, v) in &opts.config {
            if v.is_null() || *v == json!([]) || *v == json!({}) || *v == json!("") {
                continue;
            }
            match k.as_str() {
                "Env" => {
                    for e in v.as_array().into_iter().flatten().filter_map(Value::as_str) {
                        let (k, v) = e.split_once('=').unwrap_or((e, ""));
                        state.set_env(k, v);
                    }
                }
                "Labels" => {
                    for (lk, lv) in v.as_object().into_iter().flatten() {
                        state.map_insert("Labels", lk.clone(), lv.clone());
                    }
                }
                k if FIELDS.contains(&k) => {
                    state.config.insert(k.to_string(), v.clone());
                }
                // The docker CLI sends the container's own fields back; only
                // the ones above change an image.
                "Hostname" | "Domainname" | "AttachStdin" | "AttachStdout" | "AttachStderr"
                | "Tty" | "OpenStdin" | "StdinOnce" | "Image" => {}
                k => return Err(BuildError::Unsupported(format!("commit config field {k}"))),
            }
        }
        if !opts.changes.is_empty() {
            let df = dockerfile::parse(&opts.changes.join("\n"))?;
            let mut stage = Stage {
                name: None,
                state,
                args: BTreeMap::new(),
                cmd_set: false,
            };
            let ctx = Source::rootfs(&scratch.dir);
            for ins in &df.instructions {
                if !matches!(
                    ins.keyword.as_str(),
                    "CMD"
                        | "ENTRYPOINT"
                        | "ENV"
                        | "LABEL"
                        | "EXPOSE"
                        | "USER"
                        | "VOLUME"
                        | "STOPSIGNAL"
                        | "HEALTHCHECK"
                        | "SHELL"
                ) {
                    return Err(BuildError::Unsupported(format!(
                        "{} in a commit change (metadata instructions only)",
                        ins.keyword
                    )));
                }
                let mut consumed = Vec::new();
                self.step(
                    ins,
                    df.escape,
                    &mut stage,
                    &[],
                    &ctx,
                    &BTreeMap::new(),
                    &mut consumed,
                    &BuildOptions::default(),
                    &mut |_| {},
                )?;
            }
            state = stage.state;
            // The change steps' history entries are folded into the commit's.
            state
                .history
                .truncate(state.history.len() - df.instructions.len());
        }
        if let Some(a) = &opts.author {
            state.author = Some(a.clone());
        }
        let mut h = json!({"created": state.created, "created_by": format!("cubby commit {}", dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default())});
        if let Some(c) = &opts.comment {
            h["comment"] = json!(c);
        }
        state.history.push(h);
        self.write_image(&state, &opts.tags)
    }

    /// Writes the container's whole filesystem (its image's layers and its
    /// changes, merged) as a tar to `out`.
    pub fn export(&self, dir: &Path, out: impl std::io::Write) -> Result<()> {
        let layers = std::fs::read_to_string(dir.join("layers"))
            .map_err(|e| BuildError::io_path(&dir.join("layers"), e))?;
        let mut lowers: Vec<PathBuf> = layers
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.trim().parse::<Digest>().map(|d| self.store.layer_dir(&d)))
            .collect::<std::result::Result<_, _>>()?;
        // The container's upper dir as the topmost lower: its whiteouts apply.
        lowers.push(dir.join("upper"));
        let scratch = self.scratch("export")?;
        let snap = Snapshot::at(scratch.dir.join("snap"));
        let rootfs = snap.mount(&lowers)?;
        layer::write_tar(&rootfs, out)
    }
}

/// Makes way for a new entry at `dest` in a staging dir: an existing
/// directory stays when a directory is wanted; anything else (a symlink
/// copied by an earlier source above all) is removed, so no later write
/// goes through a link to outside the staging dir.
fn clear_for(dest: &Path, want_dir: bool) -> Result<()> {
    match std::fs::symlink_metadata(dest) {
        Ok(m) if m.is_dir() && want_dir => Ok(()),
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(dest).map_err(|e| BuildError::io_path(dest, e))
        }
        Ok(_) => std::fs::remove_file(dest).map_err(|e| BuildError::io_path(dest, e)),
        Err(_) => Ok(()),
    }
}
