//! Networks on disk and the operations that tie netns, netlink, IPAM,
//! firewall and hosts files together.
//!
//! Layout under `state_dir` (the engine uses `<root>/networks`):
//! `<name>/network.json` (the network, written once), `<name>/ipam.json`
//! (endpoints = address allocations, rewritten with temp + fsync + rename on
//! every attach/detach) and `.containers/<id>/{hosts,resolv.conf,hostname}`.
//! Kernel objects are named from a configurable prefix (bridges
//! `<p>b<hex>`, host veths `<p>v<hex>`) so reconcile removes only its own
//! strays, even with several cubby roots on one host (tests).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::error::{NetError, Result};
use crate::files::{self, HostEntry};
use crate::firewall::{self, FwNetwork, FwPort};
use crate::ipam::{self, Subnet};
use crate::netlink::{self, VethSpec};
use crate::netns;

/// The name of the default network (Docker's).
pub const DEFAULT_NETWORK: &str = "bridge";

#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Where network records live (`<root>/networks`).
    pub state_dir: PathBuf,
    /// Where named netns files are mounted (`/run/cubby/netns`).
    pub netns_dir: PathBuf,
    /// Prefix of every kernel object name, at most 3 characters.
    pub ifprefix: String,
    /// nftables table (family inet) owned by this store.
    pub table: String,
    /// Linux bridge of the default network.
    pub default_bridge: String,
    pub default_subnet: Subnet,
    /// /24 subnets for networks created without --subnet come from here.
    pub auto_pool: Subnet,
    /// Containers' resolv.conf is this file minus loopback nameservers.
    pub resolv_conf: PathBuf,
}

impl NetConfig {
    /// Production defaults under `root`.
    pub fn new(root: &Path) -> Self {
        NetConfig {
            state_dir: root.join("networks"),
            netns_dir: PathBuf::from("/run/cubby/netns"),
            ifprefix: "cb".into(),
            table: "cubby".into(),
            default_bridge: "cubby0".into(),
            // Docker uses 172.17-31/16 and 192.168; 172.30/16 is its last
            // automatic pool, rarely used on hosts.
            default_subnet: Subnet::new(Ipv4Addr::new(172, 30, 0, 0), 16).expect("valid"),
            auto_pool: Subnet::new(Ipv4Addr::new(10, 231, 0, 0), 16).expect("valid"),
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Network {
    pub id: String,
    pub name: String,
    pub bridge: String,
    pub subnet: Subnet,
    pub gateway: Ipv4Addr,
    #[serde(default)]
    pub internal: bool,
    /// Containers may not reach the host's own addresses.
    #[serde(default)]
    pub isolate_host: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    pub created: String,
}

impl Network {
    /// Containers find each other by name only on user-defined networks (as
    /// in Docker).
    pub fn user_defined(&self) -> bool {
        self.name != DEFAULT_NETWORK
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PortMap {
    /// "tcp" or "udp".
    pub proto: String,
    /// None: all host addresses (0.0.0.0).
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub port: u16,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Endpoint {
    pub id: String,
    pub container_id: String,
    pub container_name: String,
    pub hostname: String,
    #[serde(default)]
    pub aliases: Vec<String>,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub host_if: String,
    pub ifname: String,
    #[serde(default)]
    pub ports: Vec<PortMap>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct IpamFile {
    last: Option<Ipv4Addr>,
    /// Keyed by container id.
    endpoints: BTreeMap<String, Endpoint>,
}

/// Options of `network create`.
#[derive(Debug, Clone, Default)]
pub struct CreateOpts {
    pub name: String,
    pub subnet: Option<Subnet>,
    pub gateway: Option<Ipv4Addr>,
    pub internal: bool,
    pub isolate_host: bool,
    pub labels: BTreeMap<String, String>,
}

/// One container joining one network.
#[derive(Debug, Clone, Default)]
pub struct AttachReq {
    pub container_id: String,
    pub container_name: String,
    pub hostname: String,
    pub aliases: Vec<String>,
    pub ports: Vec<PortMap>,
    /// A fixed address (`--ip`); None: the next free one.
    pub ip: Option<Ipv4Addr>,
}

/// What reconcile removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Endpoints of containers that are gone (released).
    pub endpoints: Vec<String>,
    /// Stray links deleted.
    pub links: Vec<String>,
    /// Stray netns removed.
    pub netns: Vec<String>,
    /// Endpoints of live containers rebuilt (netns or veth was missing,
    /// e.g. after a host reboot emptied /run), with the same address.
    pub repaired: Vec<String>,
    /// Endpoints that could not be rebuilt, with the reason.
    pub errors: Vec<String>,
}

pub struct NetworkStore {
    cfg: NetConfig,
    lock: Mutex<()>,
    /// Peers' hosts files to rewrite (group commit: see [`Self::sync_peers`]).
    peers: Mutex<PeerSync>,
    peers_done: Condvar,
}

/// User-defined networks whose members' hosts files are behind a join or
/// leave, and the rounds that brought them up to date: changes marked by
/// the callers of one round's wait are written by one rewrite.
#[derive(Default)]
struct PeerSync {
    pending: BTreeSet<String>,
    /// Marks so far, and the marks the last finished rewrite covered.
    marked: u64,
    done: u64,
    writing: bool,
}

fn random_hex(n: usize) -> Result<String> {
    let mut buf = vec![0u8; n.div_ceil(2)];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| NetError::io("read /dev/urandom", e))?;
    let mut s: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(n);
    Ok(s)
}

fn fnv_hex(parts: &[&str], n: usize) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for p in parts {
        for b in p.bytes().chain([0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x100000001b3);
        }
    }
    let mut s = format!("{h:016x}");
    s.truncate(n);
    s
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| NetError::Corrupt {
                path: path.to_path_buf(),
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(NetError::io(format!("read {}", path.display()), e)),
    }
}

fn fw_port(p: &PortMap, ip: Ipv4Addr) -> FwPort {
    FwPort {
        proto: p.proto.clone(),
        host_ip: p.host_ip.filter(|ip| !ip.is_unspecified()),
        host_port: p.host_port,
        ip,
        port: p.port,
    }
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<()> {
    let data = serde_json::to_vec_pretty(v).map_err(|e| NetError::Corrupt {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(cubby_runtime::state::write_atomic(path, &data)?)
}

impl NetworkStore {
    /// Opens the store, creating the default network's record if missing
    /// (its bridge is created when the first container joins).
    pub fn open(cfg: NetConfig) -> Result<Self> {
        if cfg.ifprefix.is_empty() || cfg.ifprefix.len() > 3 {
            return Err(NetError::Invalid(format!(
                "interface prefix {:?}: use 1 to 3 characters",
                cfg.ifprefix
            )));
        }
        fs::create_dir_all(&cfg.state_dir)
            .map_err(|e| NetError::io(format!("create {}", cfg.state_dir.display()), e))?;
        let store = NetworkStore {
            cfg,
            lock: Mutex::new(()),
            peers: Mutex::default(),
            peers_done: Condvar::new(),
        };
        if store.find(DEFAULT_NETWORK)?.is_none() {
            let net = Network {
                id: random_hex(64)?,
                name: DEFAULT_NETWORK.into(),
                bridge: store.cfg.default_bridge.clone(),
                subnet: store.cfg.default_subnet,
                gateway: store.cfg.default_subnet.first_host(),
                internal: false,
                isolate_host: false,
                labels: BTreeMap::new(),
                created: cubby_runtime::state::rfc3339_now(),
            };
            store.write_network(&net)?;
        }
        Ok(store)
    }

    pub fn config(&self) -> &NetConfig {
        &self.cfg
    }

    /// The store's lock: a mutex between threads and an exclusive flock on
    /// `<state_dir>/.lock` between processes (a `cubby build` beside the
    /// daemon allocates addresses in the same files).
    fn guard(&self) -> Result<(MutexGuard<'_, ()>, Flock<fs::File>)> {
        // A panic while holding the lock leaves files consistent (every
        // write is atomic), so a poisoned lock is still usable.
        let m = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.cfg.state_dir.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| NetError::io(format!("open {}", path.display()), e))?;
        let f = Flock::lock(f, FlockArg::LockExclusive)
            .map_err(|(_, e)| NetError::io(format!("lock {}", path.display()), e.into()))?;
        Ok((m, f))
    }

    fn net_dir(&self, name: &str) -> PathBuf {
        self.cfg.state_dir.join(name)
    }

    fn write_network(&self, net: &Network) -> Result<()> {
        let dir = self.net_dir(&net.name);
        fs::create_dir_all(&dir)
            .map_err(|e| NetError::io(format!("create {}", dir.display()), e))?;
        write_json(&dir.join("network.json"), net)
    }

    fn read_ipam(&self, net: &Network) -> Result<IpamFile> {
        Ok(read_json(&self.net_dir(&net.name).join("ipam.json"))?.unwrap_or_default())
    }

    fn write_ipam(&self, net: &Network, f: &IpamFile) -> Result<()> {
        write_json(&self.net_dir(&net.name).join("ipam.json"), f)
    }

    /// All networks, by name.
    pub fn list(&self) -> Result<Vec<Network>> {
        let mut out = Vec::new();
        let rd = fs::read_dir(&self.cfg.state_dir)
            .map_err(|e| NetError::io(format!("read {}", self.cfg.state_dir.display()), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| NetError::io("read network dir", e))?;
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Some(n) = read_json::<Network>(&ent.path().join("network.json"))? {
                out.push(n);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// By exact name, exact id or unique id prefix (Docker's lookup order).
    pub fn find(&self, key: &str) -> Result<Option<Network>> {
        if key.is_empty() {
            return Ok(None);
        }
        let all = self.list()?;
        if let Some(n) = all.iter().find(|n| n.name == key || n.id == key) {
            return Ok(Some(n.clone()));
        }
        let mut hits = all.into_iter().filter(|n| n.id.starts_with(key));
        match (hits.next(), hits.next()) {
            (Some(n), None) => Ok(Some(n)),
            (Some(_), Some(_)) => Err(NetError::Invalid(format!(
                "network id prefix {key} is ambiguous; give more characters"
            ))),
            _ => Ok(None),
        }
    }

    pub fn get(&self, key: &str) -> Result<Network> {
        self.find(key)?
            .ok_or_else(|| NetError::NotFound(key.to_string()))
    }

    pub fn endpoints(&self, net: &Network) -> Result<Vec<Endpoint>> {
        Ok(self.read_ipam(net)?.endpoints.into_values().collect())
    }

    /// The networks a container is attached to, with its endpoint on each.
    pub fn container_endpoints(&self, container_id: &str) -> Result<Vec<(Network, Endpoint)>> {
        let mut out = Vec::new();
        for n in self.list()? {
            if let Some(ep) = self.read_ipam(&n)?.endpoints.remove(container_id) {
                out.push((n, ep));
            }
        }
        Ok(out)
    }

    pub fn create(&self, opts: CreateOpts) -> Result<Network> {
        let _g = self.guard()?;
        if !valid_name(&opts.name) {
            return Err(NetError::Invalid(format!(
                "network name {:?}: use letters, digits, '_', '.', '-' (up to 64)",
                opts.name
            )));
        }
        if self.find(&opts.name)?.is_some_and(|n| n.name == opts.name) {
            return Err(NetError::Exists(opts.name));
        }
        let existing = self.list()?;
        let subnet = match opts.subnet {
            Some(s) => {
                if let Some(o) = existing.iter().find(|n| n.subnet.overlaps(&s)) {
                    return Err(NetError::Invalid(format!(
                        "subnet {s} overlaps network {} ({}); pick another --subnet",
                        o.name, o.subnet
                    )));
                }
                s
            }
            None => self.auto_subnet(&existing)?,
        };
        let gateway = opts.gateway.unwrap_or_else(|| subnet.first_host());
        let g = u32::from(gateway);
        if !subnet.contains(gateway) || g == subnet.network() || g == subnet.broadcast() {
            return Err(NetError::Invalid(format!(
                "gateway {gateway} is not a host address of {subnet}"
            )));
        }
        let id = random_hex(64)?;
        let net = Network {
            bridge: format!("{}b{}", self.cfg.ifprefix, &id[..10]),
            id,
            name: opts.name,
            subnet,
            gateway,
            internal: opts.internal,
            isolate_host: opts.isolate_host,
            labels: opts.labels,
            created: cubby_runtime::state::rfc3339_now(),
        };
        self.write_network(&net)?;
        // Rules first, so the network is never up without its isolation.
        if let Err(e) = self.apply_firewall_locked() {
            let _ = fs::remove_dir_all(self.net_dir(&net.name));
            return Err(e);
        }
        Ok(net)
    }

    fn auto_subnet(&self, existing: &[Network]) -> Result<Subnet> {
        let host = netlink::host_subnets()?;
        let pool = self.cfg.auto_pool;
        let count = 1u32 << (24u8.saturating_sub(pool.prefix));
        for i in 0..count.max(1) {
            let s = Subnet::new(Ipv4Addr::from(pool.network() + (i << 8)), 24)?;
            if existing.iter().all(|n| !n.subnet.overlaps(&s))
                && host.iter().all(|h| !h.overlaps(&s))
            {
                return Ok(s);
            }
        }
        Err(NetError::Invalid(format!(
            "no free /24 left in {pool}; give --subnet"
        )))
    }

    /// Removes a network without endpoints (and its bridge).
    pub fn remove(&self, key: &str) -> Result<Network> {
        let _g = self.guard()?;
        let net = self.get(key)?;
        if !net.user_defined() {
            return Err(NetError::Invalid(format!(
                "{} is a pre-defined network and cannot be removed",
                net.name
            )));
        }
        let eps = self.read_ipam(&net)?.endpoints;
        if !eps.is_empty() {
            let names: Vec<_> = eps.values().map(|e| e.container_name.clone()).collect();
            return Err(NetError::InUse {
                network: net.name.clone(),
                containers: names.join(", "),
            });
        }
        let dir = self.net_dir(&net.name);
        fs::remove_dir_all(&dir)
            .map_err(|e| NetError::io(format!("remove {}", dir.display()), e))?;
        netlink::delete_link(&net.bridge)?;
        self.apply_firewall_locked()?;
        Ok(net)
    }

    /// Path of the container's named netns.
    pub fn netns_path(&self, container_id: &str) -> PathBuf {
        self.cfg.netns_dir.join(container_id)
    }

    /// Directory with the container's hosts, resolv.conf and hostname.
    pub fn files_dir(&self, container_id: &str) -> PathBuf {
        self.cfg.state_dir.join(".containers").join(container_id)
    }

    /// Creates the container's netns and files (before its first attach and
    /// before it starts: the runtime joins the netns, the engine bind-mounts
    /// the files). Idempotent.
    pub fn prepare(&self, container_id: &str, hostname: &str) -> Result<PathBuf> {
        // Under the lock: a reconcile never sees a netns made after it
        // took its set of live containers (see `reconcile_with`).
        let _g = self.guard()?;
        let ns = netns::create(&self.cfg.netns_dir, container_id)?;
        let dir = self.files_dir(container_id);
        fs::create_dir_all(&dir)
            .map_err(|e| NetError::io(format!("create {}", dir.display()), e))?;
        let host_resolv = fs::read_to_string(&self.cfg.resolv_conf).unwrap_or_default();
        files::write_in_place(
            &dir.join("resolv.conf"),
            &files::render_resolv(&host_resolv),
        )?;
        files::write_in_place(&dir.join("hostname"), &format!("{hostname}\n"))?;
        if !dir.join("hosts").exists() {
            files::write_in_place(&dir.join("hosts"), &files::render_hosts(&[]))?;
        }
        Ok(ns)
    }

    /// Connects a prepared container to `net`.
    pub fn attach(&self, net_key: &str, req: AttachReq) -> Result<Endpoint> {
        let ep = self.attach_locked(net_key, req)?;
        self.sync_peers()?;
        Ok(ep)
    }

    fn attach_locked(&self, net_key: &str, req: AttachReq) -> Result<Endpoint> {
        let _g = self.guard()?;
        let net = self.get(net_key)?;
        let mut ipam_file = self.read_ipam(&net)?;
        if ipam_file.endpoints.contains_key(&req.container_id) {
            return Err(NetError::Invalid(format!(
                "container {} is already connected to network {}",
                req.container_name, net.name
            )));
        }
        for p in &req.ports {
            firewall::check_port(&fw_port(p, Ipv4Addr::UNSPECIFIED))?;
        }
        let ns = self.netns_path(&req.container_id);
        if !netns::is_mounted(&ns) {
            return Err(NetError::Invalid(format!(
                "container {} has no network namespace at {} (not prepared, or host networking)",
                req.container_name,
                ns.display()
            )));
        }
        self.ensure_bridge(&net)?;
        let used: BTreeSet<Ipv4Addr> = ipam_file.endpoints.values().map(|e| e.ip).collect();
        let ip = match req.ip {
            Some(ip) => {
                let u = u32::from(ip);
                if !net.subnet.contains(ip)
                    || ip == net.gateway
                    || u == net.subnet.network()
                    || u == net.subnet.broadcast()
                {
                    return Err(NetError::Invalid(format!(
                        "address {ip} is not usable in {}",
                        net.subnet
                    )));
                }
                if used.contains(&ip) {
                    return Err(NetError::Invalid(format!(
                        "address {ip} is already in use on {}",
                        net.name
                    )));
                }
                ip
            }
            None => ipam::next_free(&net.subnet, net.gateway, &used, ipam_file.last).ok_or_else(
                || NetError::Exhausted {
                    network: net.name.clone(),
                    subnet: net.subnet.to_string(),
                },
            )?,
        };
        let o = ip.octets();
        let mac = [0x02, 0x42, o[0], o[1], o[2], o[3]];
        // A container's first network gets eth0 without asking its netns.
        let in_ns = if self.container_endpoints(&req.container_id)?.is_empty() {
            vec!["lo".to_string()]
        } else {
            netlink::list_links(Some(&ns))?
        };
        let ifname = (0..)
            .map(|i| format!("eth{i}"))
            .find(|n| !in_ns.contains(n))
            .unwrap_or_else(|| "eth0".into());
        let ep = Endpoint {
            id: random_hex(64)?,
            container_id: req.container_id.clone(),
            container_name: req.container_name.clone(),
            hostname: req.hostname.clone(),
            aliases: req.aliases.clone(),
            ip,
            mac: mac
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":"),
            host_if: format!(
                "{}v{}",
                self.cfg.ifprefix,
                fnv_hex(&[&net.id, &req.container_id], 10)
            ),
            ifname: ifname.clone(),
            ports: req.ports.clone(),
        };
        // Persist the allocation first: after a crash the address is still
        // taken, and reconcile removes the endpoint if the container is gone.
        ipam_file.last = Some(ip);
        ipam_file
            .endpoints
            .insert(req.container_id.clone(), ep.clone());
        self.write_ipam(&net, &ipam_file)?;
        let spec = VethSpec {
            bridge: net.bridge.clone(),
            host_if: ep.host_if.clone(),
            ifname,
            netns: ns,
            address: ip,
            prefix: net.subnet.prefix,
            mac,
            gateway: (!net.internal).then_some(net.gateway),
        };
        let undo = |store: &Self| {
            if let Ok(mut f) = store.read_ipam(&net) {
                f.endpoints.remove(&req.container_id);
                let _ = store.write_ipam(&net, &f);
            }
        };
        if let Err(e) = netlink::add_endpoint(&spec) {
            undo(self);
            return Err(e);
        }
        if !ep.ports.is_empty() {
            if let Err(e) = self.apply_ports_locked(&ep, true) {
                let _ = netlink::delete_link(&ep.host_if);
                undo(self);
                return Err(e);
            }
        }
        self.refresh_hosts(&net, &req.container_id)?;
        Ok(ep)
    }

    fn ensure_bridge(&self, net: &Network) -> Result<()> {
        netlink::ensure_bridge(&net.bridge, net.gateway, net.subnet.prefix)?;
        // Published ports bound to 127.0.0.1 are DNATed to the container
        // and leave through the bridge with a loopback source (masqueraded):
        // the kernel drops that unless route_localnet is on for the bridge.
        firewall::set_if_sysctl(&net.bridge, "route_localnet", "1")?;
        if !net.internal {
            firewall::enable_forwarding()?;
        }
        Ok(())
    }

    /// Disconnects a container from `net`; Ok(None) if it was not connected.
    pub fn detach(&self, net_key: &str, container_id: &str) -> Result<Option<Endpoint>> {
        let ep = {
            let _g = self.guard()?;
            let net = self.get(net_key)?;
            self.detach_locked(&net, container_id, true)?
        };
        self.sync_peers()?;
        Ok(ep)
    }

    /// `delete_link: false` when the container's netns is removed next
    /// (release): the kernel then destroys the pair with the namespace, in
    /// its batched cleanup, where deleting each host end first waited for
    /// an RCU grace period per container (a class of 300 released in
    /// 15-23 s against 5.5-9 s without). The address is not handed out
    /// again soon (allocation moves on from the last one given), and a
    /// link whose namespace somehow lives on is removed by the reconcile.
    fn detach_locked(
        &self,
        net: &Network,
        container_id: &str,
        delete_link: bool,
    ) -> Result<Option<Endpoint>> {
        let mut f = self.read_ipam(net)?;
        let Some(ep) = f.endpoints.remove(container_id) else {
            return Ok(None);
        };
        // Deleting the host end deletes the pair.
        if delete_link {
            netlink::delete_link(&ep.host_if)?;
        }
        self.write_ipam(net, &f)?;
        if !ep.ports.is_empty() {
            self.apply_ports_locked(&ep, false)?;
        }
        self.refresh_hosts(net, container_id)?;
        Ok(Some(ep))
    }

    /// Detaches the container from every network and removes its netns and
    /// files (container removal). Idempotent.
    pub fn release(&self, container_id: &str) -> Result<()> {
        {
            let _g = self.guard()?;
            self.release_locked(container_id)?;
        }
        self.sync_peers()
    }

    fn release_locked(&self, container_id: &str) -> Result<()> {
        for net in self.list()? {
            self.detach_locked(&net, container_id, false)?;
        }
        netns::remove(&self.cfg.netns_dir, container_id)?;
        let dir = self.files_dir(container_id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(NetError::io(format!("remove {}", dir.display()), e)),
        }
    }

    /// Brings kernel state in line with the records after a crash: releases
    /// containers not in `live`, deletes this store's links that no record
    /// names, removes stray netns files, recreates bridges of networks with
    /// endpoints and rewrites the firewall table.
    pub fn reconcile(&self, live: &HashSet<String>) -> Result<ReconcileReport> {
        let report = {
            let _g = self.guard()?;
            self.reconcile_locked(live)?
        };
        self.sync_peers()?;
        Ok(report)
    }

    /// [`Self::reconcile`] with the live set asked for under the store's
    /// lock. A container whose create starts after `live` answered cannot
    /// have prepared its netns yet (prepare waits for the lock), so the
    /// reconcile never removes the namespace of a create in flight.
    pub fn reconcile_with<E: From<NetError>>(
        &self,
        live: impl FnOnce() -> std::result::Result<HashSet<String>, E>,
    ) -> std::result::Result<ReconcileReport, E> {
        let report = {
            let _g = self.guard()?;
            let live = live()?;
            self.reconcile_locked(&live)?
        };
        self.sync_peers()?;
        Ok(report)
    }

    fn reconcile_locked(&self, live: &HashSet<String>) -> Result<ReconcileReport> {
        let mut report = ReconcileReport::default();
        let nets = self.list()?;
        let mut known_ifs: HashSet<String> = HashSet::new();
        for net in &nets {
            let eps = self.read_ipam(net)?.endpoints;
            for (cid, ep) in &eps {
                if !live.contains(cid) {
                    self.detach_locked(net, cid, true)?;
                    report
                        .endpoints
                        .push(format!("{}/{}", net.name, ep.container_name));
                } else {
                    known_ifs.insert(ep.host_if.clone());
                }
            }
            known_ifs.insert(net.bridge.clone());
        }
        for ns in netns::list(&self.cfg.netns_dir)? {
            if !live.contains(&ns) {
                self.release_locked(&ns)?;
                report.netns.push(ns);
            }
        }
        let bridge_p = format!("{}b", self.cfg.ifprefix);
        let veth_p = format!("{}v", self.cfg.ifprefix);
        for link in netlink::list_links(None)? {
            let ours = (link.starts_with(&bridge_p) || link.starts_with(&veth_p))
                && link.len() == bridge_p.len() + 10
                && link[bridge_p.len()..]
                    .bytes()
                    .all(|b| b.is_ascii_hexdigit());
            if ours && !known_ifs.contains(&link) && netlink::delete_link(&link)? {
                report.links.push(link);
            }
        }
        let host_links: HashSet<String> = netlink::list_links(None)?.into_iter().collect();
        for net in &nets {
            for (cid, ep) in self.read_ipam(net)?.endpoints {
                let ns = self.netns_path(&cid);
                if netns::is_mounted(&ns) && host_links.contains(&ep.host_if) {
                    continue;
                }
                let what = format!("{}/{}", net.name, ep.container_name);
                match self.rebuild(net, &ep) {
                    Ok(()) => report.repaired.push(what),
                    Err(e) => report.errors.push(format!("{what}: {e}")),
                }
            }
        }
        for dir in self.list_files_dirs()? {
            if !live.contains(&dir) {
                let _ = fs::remove_dir_all(self.files_dir(&dir));
            }
        }
        self.apply_firewall_locked()?;
        Ok(report)
    }

    /// Recreates a live container's netns (if gone) and endpoint with the
    /// recorded address, MAC and interface name.
    fn rebuild(&self, net: &Network, ep: &Endpoint) -> Result<()> {
        self.ensure_bridge(net)?;
        let ns = netns::create(&self.cfg.netns_dir, &ep.container_id)?;
        // Half of a pair cannot exist (deleting one end deletes both), but
        // a host end whose netns vanished can.
        netlink::delete_link(&ep.host_if)?;
        let mut mac = [0u8; 6];
        for (i, b) in ep.mac.split(':').enumerate().take(6) {
            mac[i] = u8::from_str_radix(b, 16).map_err(|_| NetError::Corrupt {
                path: self.net_dir(&net.name).join("ipam.json"),
                message: format!("MAC {:?} of {}", ep.mac, ep.container_name),
            })?;
        }
        netlink::add_endpoint(&VethSpec {
            bridge: net.bridge.clone(),
            host_if: ep.host_if.clone(),
            ifname: ep.ifname.clone(),
            netns: ns,
            address: ep.ip,
            prefix: net.subnet.prefix,
            mac,
            gateway: (!net.internal).then_some(net.gateway),
        })
    }

    fn list_files_dirs(&self) -> Result<Vec<String>> {
        netns::list(&self.cfg.state_dir.join(".containers"))
    }

    /// Rewrites this store's nftables table from the records.
    pub fn apply_firewall(&self) -> Result<()> {
        let _g = self.guard()?;
        self.apply_firewall_locked()
    }

    fn apply_firewall_locked(&self) -> Result<()> {
        let mut nets = Vec::new();
        let mut ports = Vec::new();
        for n in self.list()? {
            for ep in self.read_ipam(&n)?.endpoints.values() {
                ports.extend(ep.ports.iter().map(|p| fw_port(p, ep.ip)));
            }
            nets.push(FwNetwork {
                bridge: n.bridge,
                subnet: n.subnet,
                internal: n.internal,
                isolate_host: n.isolate_host,
            });
        }
        firewall::apply(&firewall::render(&self.cfg.table, &nets, &ports))
    }

    /// Adds (or deletes) one endpoint's published ports as a delta; on
    /// failure rewrites the whole table from the records (which already
    /// hold the change), so the table ends up right either way.
    fn apply_ports_locked(&self, ep: &Endpoint, add: bool) -> Result<()> {
        let ports: Vec<FwPort> = ep.ports.iter().map(|p| fw_port(p, ep.ip)).collect();
        let delta = firewall::port_delta(&self.cfg.table, add, &ports)?;
        if firewall::apply(&delta).is_ok() {
            return Ok(());
        }
        self.apply_firewall_locked()
    }

    /// Rewrites the hosts files that `changed` joining or leaving `net`
    /// affects: its own, and on a user-defined network (where containers
    /// find each other by name) those of its peers. The records are read
    /// once, not once per file: a class of hundreds on one network would
    /// otherwise parse every record once per peer.
    fn refresh_hosts(&self, net: &Network, changed: &str) -> Result<()> {
        let all = self.networks_with_endpoints()?;
        // Each network's peer entries once: a join or leave rewrites every
        // peer's file, and building the entries per file made a refresh
        // quadratic in allocations on a network of hundreds.
        let peers = peer_entries(&all);
        self.write_hosts_from(&all, &peers, changed)?;
        if net.user_defined() {
            let mut st = self.lock_peers();
            st.pending.insert(net.id.clone());
            st.marked += 1;
        }
        Ok(())
    }

    /// Every network with its endpoints, read once for a whole rewrite.
    fn networks_with_endpoints(&self) -> Result<Vec<(Network, BTreeMap<String, Endpoint>)>> {
        self.list()?
            .into_iter()
            .map(|n| {
                let eps = self.read_ipam(&n)?.endpoints;
                Ok((n, eps))
            })
            .collect()
    }

    fn lock_peers(&self) -> MutexGuard<'_, PeerSync> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Brings the peers' hosts files of the networks marked so far up to
    /// date, then returns (so a container that joined is known to its
    /// peers when its attach returns, as before). Called without the
    /// store's lock: the first caller rewrites every marked network's
    /// members' files once under the lock while later callers wait for
    /// the next round, which then covers all of their changes at once (a
    /// class of hundreds starting together rewrote every peer's file once
    /// per join: quadratic in the class size, all under the one lock).
    /// The files are built from the records on disk, so what another
    /// process changed meanwhile is in them too.
    fn sync_peers(&self) -> Result<()> {
        let mut st = self.lock_peers();
        let want = st.marked;
        loop {
            if st.done >= want {
                return Ok(());
            }
            if st.writing {
                st = self.peers_done.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            st.writing = true;
            let covers = st.marked;
            let nets = std::mem::take(&mut st.pending);
            drop(st);
            let r = self.write_peers(&nets);
            st = self.lock_peers();
            st.writing = false;
            if r.is_ok() {
                st.done = st.done.max(covers);
            } else {
                // Tried again by the next caller.
                st.pending.extend(nets);
            }
            self.peers_done.notify_all();
            r?;
        }
    }

    /// Rewrites the hosts file of every member of the networks `ids`.
    fn write_peers(&self, ids: &BTreeSet<String>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let _g = self.guard()?;
        let all = self.networks_with_endpoints()?;
        let peers = peer_entries(&all);
        let members: BTreeSet<&str> = all
            .iter()
            .filter(|(n, _)| ids.contains(&n.id))
            .flat_map(|(_, eps)| eps.keys().map(String::as_str))
            .collect();
        for cid in members {
            self.write_hosts_from(&all, &peers, cid)?;
        }
        Ok(())
    }

    fn write_hosts_from(
        &self,
        all: &[(Network, BTreeMap<String, Endpoint>)],
        peers: &HashMap<&str, Vec<(&str, HostEntry)>>,
        container_id: &str,
    ) -> Result<()> {
        let path = self.files_dir(container_id).join("hosts");
        if !path.parent().is_some_and(Path::exists) {
            return Ok(());
        }
        let mine: Vec<(&Network, &Endpoint)> = all
            .iter()
            .filter_map(|(n, eps)| eps.get(container_id).map(|ep| (n, ep)))
            .collect();
        let own: Vec<HostEntry> = mine
            .iter()
            .map(|(_, ep)| {
                let mut names = vec![ep.hostname.clone()];
                if ep.container_name != ep.hostname {
                    names.push(ep.container_name.clone());
                }
                HostEntry { ip: ep.ip, names }
            })
            .collect();
        let others = mine
            .iter()
            .filter_map(|(net, _)| peers.get(net.id.as_str()))
            .flatten()
            .filter(|(cid, _)| *cid != container_id)
            .map(|(_, e)| e);
        files::write_in_place(&path, &files::render_hosts(own.iter().chain(others)))
    }
}

/// The entry every container of a user-defined network gets for each peer
/// on it (name, aliases, short id), per network id.
fn peer_entries(
    all: &[(Network, BTreeMap<String, Endpoint>)],
) -> HashMap<&str, Vec<(&str, HostEntry)>> {
    all.iter()
        .filter(|(n, _)| n.user_defined())
        .map(|(n, eps)| {
            let entries = eps
                .values()
                .map(|other| {
                    let mut names = vec![other.container_name.clone()];
                    names.extend(
                        other
                            .aliases
                            .iter()
                            .filter(|a| **a != other.container_name)
                            .cloned(),
                    );
                    let short = &other.container_id[..other.container_id.len().min(12)];
                    if !names.iter().any(|n| n == short) {
                        names.push(short.to_string());
                    }
                    (
                        other.container_id.as_str(),
                        HostEntry {
                            ip: other.ip,
                            names,
                        },
                    )
                })
                .collect();
            (n.id.as_str(), entries)
        })
        .collect()
}
