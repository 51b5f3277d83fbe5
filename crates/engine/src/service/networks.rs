//! Container networking in the engine: a container's
//! network at create (netns, endpoint, hosts files, published ports),
//! teardown at removal, and NetworkSettings for inspect and `ps`.
//!
//! The daemon (not the single-threaded monitor) does all of it, on the
//! blocking pool: the runtime only joins the named netns through the spec.
//! An endpoint lives from create to removal (Docker releases the address at
//! stop; keeping it makes restarts and restart policies trivial). Containers
//! the monitor removes itself (`--rm`) are released when their `destroy`
//! event arrives ([`watch`]); a daemon crash is repaired by the reconcile
//! that [`watch`] runs at start and after every lost event stream.

use super::error::{EngineError, EngineResult};
use super::{blocking, Engine, Shared};
use crate::monitor::events::Event;
use crate::protocol::Request;
use bollard_stubs::models::EndpointSettings;
use cubby_network::{AttachReq, Endpoint, NetError, Network, NetworkStore, PortMap};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use tokio::io::AsyncBufReadExt;

impl Engine {
    /// Makes a bridge network (Docker's `network create`; other drivers
    /// are refused by name).
    pub async fn create_network(
        self: &Shared,
        req: bollard_stubs::models::NetworkCreateRequest,
    ) -> EngineResult<cubby_network::Network> {
        match req.driver.as_deref() {
            None | Some("") | Some("bridge") => {}
            Some(other) => {
                return Err(EngineError::invalid(format!(
                    "network driver {other} is not supported: cubby networks are bridges (omit --driver)"
                )))
            }
        }
        let cfg = req
            .ipam
            .as_ref()
            .and_then(|i| i.config.as_ref())
            .and_then(|c| c.first());
        let subnet = cfg
            .and_then(|c| c.subnet.as_deref())
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .transpose()?;
        let gateway = cfg
            .and_then(|c| c.gateway.as_deref())
            .filter(|s| !s.is_empty())
            .map(|g| {
                g.parse::<Ipv4Addr>().map_err(|_| {
                    EngineError::invalid(format!("invalid gateway {g:?}: expected IPv4"))
                })
            })
            .transpose()?;
        let options = req.options.clone().unwrap_or_default();
        let isolate_host = match options.get(ISOLATE_HOST_OPTION).map(String::as_str) {
            None | Some("false") | Some("0") => false,
            Some("true") | Some("1") | Some("") => true,
            Some(v) => {
                return Err(EngineError::invalid(format!(
                    "option {ISOLATE_HOST_OPTION}={v}: use true or false"
                )))
            }
        };
        let opts = cubby_network::CreateOpts {
            name: req.name.clone(),
            subnet,
            gateway,
            internal: req.internal.unwrap_or(false),
            isolate_host,
            labels: req.labels.clone().unwrap_or_default().into_iter().collect(),
        };
        let n = with_store(self, move |s| s.create(opts)).await?;
        self.publish(
            Event::new("network", "create", &n.id)
                .attr("name", n.name.clone())
                .attr("type", "bridge"),
        )
        .await;
        Ok(n)
    }

    /// Removes a network no container is connected to.
    pub async fn remove_network(self: &Shared, id: &str) -> EngineResult<()> {
        let id = id.to_string();
        let n = with_store(self, move |s| s.remove(&id)).await?;
        self.publish(Event::new("network", "destroy", &n.id).attr("name", n.name))
            .await;
        Ok(())
    }

    /// The networks `filters` select (`name`, `id`, `driver`, `label`,
    /// `type`), each with its endpoints.
    pub async fn network_list(
        self: &Shared,
        filters: super::filters::Filters,
    ) -> EngineResult<Vec<(Network, Vec<Endpoint>)>> {
        with_store(self, move |s| {
            s.list()?
                .into_iter()
                .filter(|n| keep(n, &filters))
                .map(|n| {
                    let eps = s.endpoints(&n)?;
                    Ok((n, eps))
                })
                .collect()
        })
        .await
    }

    /// Network `id` (name, id or id prefix) and its endpoints.
    pub async fn network_inspect(
        self: &Shared,
        id: &str,
    ) -> EngineResult<(Network, Vec<Endpoint>)> {
        let id = id.to_string();
        with_store(self, move |s| {
            let n = s.get(&id)?;
            let eps = s.endpoints(&n)?;
            Ok((n, eps))
        })
        .await
    }

    /// Removes the user-defined networks without containers that
    /// `filters` select; returns their names.
    pub async fn network_prune(
        self: &Shared,
        filters: super::filters::Filters,
    ) -> EngineResult<Vec<String>> {
        with_store(self, move |s| {
            let mut out = Vec::new();
            for n in s.list()? {
                if n.user_defined() && keep(&n, &filters) && s.endpoints(&n)?.is_empty() {
                    match s.remove(&n.name) {
                        Ok(_) => out.push(n.name),
                        // Someone attached meanwhile: not unused any more.
                        Err(NetError::InUse { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Connects container `what` to network `net` (Docker's `network
    /// connect`): an endpoint with `ep`'s aliases and address.
    pub async fn connect_network(
        self: &Shared,
        net: &str,
        what: &str,
        ep: crate::config::Endpoint,
    ) -> EngineResult<()> {
        let r = self.find(what).await?;
        let attach = AttachReq {
            container_id: r.id.clone(),
            container_name: r.name.clone(),
            hostname: hostname_of(&r),
            aliases: ep.aliases,
            ports: Vec::new(),
            ip: ep.ip,
        };
        let net = net.to_string();
        let net_id = with_store(self, move |s| {
            if !cubby_network::netns::is_mounted(&s.netns_path(&attach.container_id)) {
                return Err(NetError::Invalid(format!(
                    "container {} has no network namespace of cubby's (network mode none or host): it cannot be connected",
                    attach.container_name
                )));
            }
            let n = s.get(&net)?;
            s.attach(&n.id, attach)?;
            Ok(n.id)
        })
        .await?;
        self.publish(Event::new("network", "connect", &net_id).attr("container", r.id))
            .await;
        Ok(())
    }

    /// Disconnects container `what` from network `net`.
    pub async fn disconnect_network(self: &Shared, net: &str, what: &str) -> EngineResult<()> {
        let r = self.find(what).await?;
        let (cid, net) = (r.id.clone(), net.to_string());
        let net_id = with_store(self, move |s| {
            let n = s.get(&net)?;
            match s.detach(&n.id, &cid)? {
                Some(_) => Ok(n.id),
                None => Err(NetError::Invalid(format!(
                    "container {cid} is not connected to network {}",
                    n.name
                ))),
            }
        })
        .await?;
        self.publish(Event::new("network", "disconnect", &net_id).attr("container", r.id))
            .await;
        Ok(())
    }
}

/// The network option that stops containers from reaching the host's own
/// addresses (`docker network create -o cubby.isolate_host=true`).
pub const ISOLATE_HOST_OPTION: &str = "cubby.isolate_host";

pub(crate) fn store(d: &Engine) -> EngineResult<&NetworkStore> {
    d.networks.as_ref().ok_or_else(|| {
        EngineError::internal("container networking is not configured in this daemon")
    })
}

/// Runs `f` with the store on the blocking pool.
pub(crate) async fn with_store<T, F>(d: &Shared, f: F) -> EngineResult<T>
where
    T: Send + 'static,
    F: FnOnce(&NetworkStore) -> cubby_network::Result<T> + Send + 'static,
{
    store(d)?;
    let d = d.clone();
    blocking(move || f(store(&d)?).map_err(EngineError::from)).await
}

fn hostname_of(r: &crate::records::ContainerRecord) -> String {
    r.config["Config"]["Hostname"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| r.id[..r.id.len().min(12)].to_string())
}

/// The published ports with a free host port picked where none was given.
fn port_maps(ports: &[crate::config::PublishedPort]) -> EngineResult<Vec<PortMap>> {
    ports
        .iter()
        .map(|p| {
            Ok(PortMap {
                proto: p.proto.clone(),
                host_ip: p.host_ip,
                host_port: match p.host_port {
                    Some(port) => port,
                    None => free_port(p.host_ip, &p.proto)?,
                },
                port: p.port,
            })
        })
        .collect()
}

fn free_port(ip: Option<Ipv4Addr>, proto: &str) -> EngineResult<u16> {
    let addr = (ip.unwrap_or(Ipv4Addr::UNSPECIFIED), 0);
    let port = if proto == "udp" {
        std::net::UdpSocket::bind(addr).and_then(|s| s.local_addr())
    } else {
        std::net::TcpListener::bind(addr).and_then(|s| s.local_addr())
    };
    port.map(|a| a.port())
        .map_err(|e| EngineError::internal(format!("pick a free host port: {e}")))
}

/// Refuses a host port another container publishes, or a host service
/// holds (DNAT would silently shadow it).
fn check_ports(s: &NetworkStore, ports: &[PortMap]) -> EngineResult<()> {
    let mut taken = Vec::new();
    for n in s.list().map_err(EngineError::from)? {
        for ep in s.endpoints(&n).map_err(EngineError::from)? {
            taken.extend(ep.ports);
        }
    }
    for p in ports {
        let clash = taken.iter().any(|t| {
            t.proto == p.proto
                && t.host_port == p.host_port
                && (t.host_ip.is_none() || p.host_ip.is_none() || t.host_ip == p.host_ip)
        });
        let ip = p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        let bindable = if p.proto == "udp" {
            std::net::UdpSocket::bind((ip, p.host_port)).is_ok()
        } else {
            std::net::TcpListener::bind((ip, p.host_port)).is_ok()
        };
        if clash || !bindable {
            return Err(EngineError::internal(format!(
                "driver failed programming external connectivity: Bind for {ip}:{} failed: port is already allocated",
                p.host_port
            )));
        }
    }
    Ok(())
}

fn lock_transient(d: &Engine) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
    d.transient.lock().unwrap_or_else(|p| p.into_inner())
}

/// Networking for a container the monitor does not know (a build's RUN
/// step, blocking): like [`setup`] for `cfg.network` (a named network, or
/// the default one), and the id counts as live for the reconcile until
/// [`release_transient`]. Undone on failure.
pub fn setup_transient(
    d: &Engine,
    id: &str,
    cfg: &crate::config::ContainerConfig,
    spec: &mut oci_spec::runtime::Spec,
) -> EngineResult<()> {
    // Before the netns exists: the reconcile takes its live set under the
    // store's lock, which prepare also takes.
    lock_transient(d).insert(id.to_string());
    let r = setup(d, id, id, cfg, spec);
    if r.is_err() {
        lock_transient(d).remove(id);
    }
    r
}

/// Undoes [`setup_transient`] (blocking): endpoints, netns and files.
pub fn release_transient(d: &Engine, id: &str) -> EngineResult<()> {
    let r = match d.networks.as_ref() {
        Some(s) => s.release(id).map_err(EngineError::from),
        None => Ok(()),
    };
    lock_transient(d).remove(id);
    r
}

/// At create (blocking): gives the container its network per
/// HostConfig.NetworkMode and points the spec at it. Undone by [`release`].
pub(crate) fn setup(
    d: &Engine,
    id: &str,
    name: &str,
    cfg: &crate::config::ContainerConfig,
    spec: &mut oci_spec::runtime::Spec,
) -> EngineResult<()> {
    use crate::config::NetworkMode;
    use oci_spec::runtime::{LinuxNamespaceType, MountBuilder};
    let mut linux = spec.linux().clone().unwrap_or_default();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    let primary = match &cfg.network {
        // The builder gave the spec the host's netns, or an own one with
        // only loopback.
        NetworkMode::None | NetworkMode::Host => return Ok(()),
        NetworkMode::Default if d.networks.is_none() => {
            return Ok(()); // no networking configured: an isolated netns
        }
        NetworkMode::Default => cubby_network::DEFAULT_NETWORK.to_string(),
        NetworkMode::Named(n) => n.clone(),
    };
    let Some(s) = d.networks.as_ref() else {
        return Err(store(d)
            .err()
            .unwrap_or_else(|| EngineError::internal("no networking")));
    };
    let endpoints = &cfg.endpoints;
    let ports = port_maps(&cfg.ports)?;
    if !ports.is_empty() {
        check_ports(s, &ports)?;
    }
    let hostname = spec
        .hostname()
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    let mut nets: Vec<(String, crate::config::Endpoint)> = vec![(
        primary.clone(),
        endpoints.get(&primary).cloned().unwrap_or_default(),
    )];
    for (n, ep) in endpoints {
        let same =
            s.find(n).ok().flatten().map(|x| x.id) == s.find(&primary).ok().flatten().map(|x| x.id);
        if *n != primary && !same {
            nets.push((n.clone(), ep.clone()));
        }
    }
    let attach_all = || -> EngineResult<std::path::PathBuf> {
        let ns = s.prepare(id, &hostname).map_err(EngineError::from)?;
        for (i, (net, ep)) in nets.iter().enumerate() {
            s.attach(
                net,
                AttachReq {
                    container_id: id.to_string(),
                    container_name: name.to_string(),
                    hostname: hostname.clone(),
                    aliases: ep.aliases.clone(),
                    // Published ports go to the primary network's address.
                    ports: if i == 0 { ports.clone() } else { Vec::new() },
                    ip: ep.ip,
                },
            )
            .map_err(EngineError::from)?;
        }
        Ok(ns)
    };
    let ns = attach_all().inspect_err(|_| {
        let _ = s.release(id);
    })?;
    for n in namespaces.iter_mut() {
        if n.typ() == LinuxNamespaceType::Network {
            n.set_path(Some(ns.clone()));
        }
    }
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    let files = s.files_dir(id);
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for f in ["hosts", "resolv.conf", "hostname"] {
        let dest = format!("/etc/{f}");
        // A user's own mount of the file, or of all of /etc, wins: writing
        // mount targets into someone's volume would change its content.
        let covered = mounts.iter().any(|m| {
            let d = m.destination().to_string_lossy();
            let d = d.trim_end_matches('/');
            d == dest || d == "/etc"
        });
        if covered {
            continue;
        }
        let m = MountBuilder::default()
            .destination(dest.clone())
            .typ("bind")
            .source(files.join(f))
            .options(vec!["rbind".to_string(), "rprivate".to_string()])
            .build()
            .map_err(|e| EngineError::internal(format!("mount {dest}: {e}")))?;
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

fn keep(n: &Network, filters: &super::filters::Filters) -> bool {
    filters.iter().all(|(key, values)| {
        let any = |f: &dyn Fn(&str) -> bool| values.is_empty() || values.iter().any(|v| f(v));
        match key.as_str() {
            "name" => any(&|v| n.name.contains(v)),
            "id" => any(&|v| n.id.starts_with(v)),
            "driver" => any(&|v| v == "bridge"),
            "label" => super::filters::labels_match(values, &n.labels),
            "type" => any(&|v| (v == "custom") == n.user_defined()),
            _ => true,
        }
    })
}

/// Releases the container's networking (removal); failures are logged, not
/// returned: the reconcile in [`watch`] finishes the job later.
pub(crate) async fn release(d: &Shared, id: &str) {
    if d.networks.is_none() {
        return;
    }
    let id2 = id.to_string();
    if let Err(e) = with_store(d, move |s| s.release(&id2)).await {
        eprintln!("cubby daemon: release the network of {id}: {}", e);
    }
}

/// NetworkSettings (and Ports) of a container, from its endpoints.
fn settings(s: &NetworkStore, id: &str) -> cubby_network::Result<(Value, Vec<Value>)> {
    let eps = s.container_endpoints(id)?;
    let mut networks = serde_json::Map::new();
    let mut ports: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut summary_ports = Vec::new();
    for (n, ep) in &eps {
        let mut aliases = ep.aliases.clone();
        if n.user_defined() {
            aliases.push(id[..id.len().min(12)].to_string());
        }
        let settings = EndpointSettings {
            aliases: Some(aliases),
            network_id: Some(n.id.clone()),
            endpoint_id: Some(ep.id.clone()),
            gateway: Some(if n.internal {
                String::new()
            } else {
                n.gateway.to_string()
            }),
            ip_address: Some(ep.ip.to_string()),
            ip_prefix_len: Some(i64::from(n.subnet.prefix)),
            mac_address: Some(ep.mac.clone()),
            dns_names: n.user_defined().then(|| vec![ep.container_name.clone()]),
            ..Default::default()
        };
        networks.insert(n.name.clone(), json!(settings));
        for p in &ep.ports {
            let ip = p.host_ip.unwrap_or(Ipv4Addr::UNSPECIFIED).to_string();
            ports
                .entry(format!("{}/{}", p.port, p.proto))
                .or_default()
                .push(json!({ "HostIp": ip, "HostPort": p.host_port.to_string() }));
            summary_ports.push(json!({
                "IP": ip, "PrivatePort": p.port, "PublicPort": p.host_port, "Type": p.proto,
            }));
        }
    }
    let first = eps.first();
    let doc = json!({
        "Bridge": "",
        "SandboxID": if first.is_some() { id } else { "" },
        "SandboxKey": first.map(|_| s.netns_path(id).to_string_lossy().into_owned()).unwrap_or_default(),
        "HairpinMode": false,
        "Ports": ports,
        "IPAddress": first.map(|(_, e)| e.ip.to_string()).unwrap_or_default(),
        "IPPrefixLen": first.map(|(n, _)| n.subnet.prefix).unwrap_or(0),
        "Gateway": first.filter(|(n, _)| !n.internal).map(|(n, _)| n.gateway.to_string()).unwrap_or_default(),
        "MacAddress": first.map(|(_, e)| e.mac.clone()).unwrap_or_default(),
        "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0,
        "IPv6Gateway": "",
        "Networks": networks,
    });
    Ok((doc, summary_ports))
}

/// Fills `NetworkSettings` of a container inspect document.
pub(crate) async fn decorate_inspect(d: &Shared, id: &str, doc: &mut Value) {
    if d.networks.is_none() {
        return;
    }
    let id = id.to_string();
    if let Ok((settings, _)) = with_store(d, move |s| settings(s, &id)).await {
        doc["NetworkSettings"] = settings;
    }
}

/// Fills `Ports` and `NetworkSettings.Networks` of `docker ps` summaries.
pub(crate) async fn decorate_list(d: &Shared, docs: &mut [Value]) {
    if d.networks.is_none() {
        return;
    }
    let ids: Vec<String> = docs
        .iter()
        .map(|v| v["Id"].as_str().unwrap_or("").to_string())
        .collect();
    let Ok(all) = with_store(d, move |s| {
        ids.iter()
            .map(|id| settings(s, id))
            .collect::<cubby_network::Result<Vec<_>>>()
    })
    .await
    else {
        return;
    };
    for (doc, (settings, ports)) in docs.iter_mut().zip(all) {
        doc["Ports"] = json!(ports);
        doc["NetworkSettings"] = json!({ "Networks": settings["Networks"] });
    }
}

/// Keeps networking in step with the monitor: a reconcile now (strays of a
/// crash), then releases every container the monitor destroys; when the
/// event stream breaks it reconciles again and resumes after the last event.
pub async fn watch(d: Shared) {
    if d.networks.is_none() {
        return;
    }
    let mut since = crate::monitor::events::now_nanos();
    loop {
        // Creates in flight (reserved in the monitor by any client) count
        // as live: their endpoint exists before their record does.
        let d2 = d.clone();
        let reconciled = blocking(move || {
            let socket = d2.monitor_socket.clone();
            store(&d2)?.reconcile_with(|| -> EngineResult<_> {
                let mut c = crate::client::MonitorClient::connect(&socket)?;
                let mut live = super::containers::live_ids(&mut c)?;
                live.extend(lock_transient(&d2).iter().cloned());
                Ok(live)
            })
        })
        .await;
        match reconciled {
            Ok(r) => {
                for e in &r.errors {
                    eprintln!("cubby daemon: network reconcile: rebuild {e}");
                }
            }
            Err(e) => eprintln!("cubby daemon: network reconcile: {}", e),
        }
        let stream = super::conn::open_stream(
            &d.monitor_socket,
            &Request::Events {
                since: Some(since),
                until: None,
            },
        )
        .await;
        if let Ok(mut stream) = stream {
            let mut line = String::new();
            loop {
                line.clear();
                match stream.reader.read_line(&mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let Ok(e) = serde_json::from_str::<Event>(&line) else {
                    continue;
                };
                since = since.max(e.time_nano);
                if e.kind == "container" && e.action == "destroy" {
                    release(&d, &e.id).await;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}
