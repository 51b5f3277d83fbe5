//! Links, veth pairs, bridges, addresses and routes through rtnetlink (no
//! `ip` subprocess). Every operation runs on its own short-lived OS thread
//! with a current-thread tokio runtime: the thread can `setns` into a
//! container's network namespace without affecting any other thread, and
//! callers (sync code or a daemon's blocking pool) need no runtime.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures_util::TryStreamExt;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InfoData, InfoKind, InfoVeth, LinkAttribute,
    LinkMessage,
};
use rtnetlink::{
    Handle, LinkBridge, LinkMessageBuilder, LinkUnspec, LinkVeth, RouteMessageBuilder,
};

use crate::error::{NetError, Result};

/// ENODEV/ENOENT/ESRCH/EADDRNOTAVAIL: "it is not there" for idempotent deletes.
fn is_absent(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m)
        if [libc::ENODEV, libc::ENOENT, libc::ESRCH, libc::EADDRNOTAVAIL].contains(&-m.raw_code()))
}

fn is_exists(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if -m.raw_code() == libc::EEXIST)
}

fn nl(what: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetError {
    let what = what.into();
    move |e| NetError::Netlink {
        what,
        message: e.to_string(),
    }
}

/// Runs `f` with a netlink handle on a fresh thread, inside `netns` if given.
fn run<T, F, Fut>(netns: Option<&Path>, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(Handle) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T>>,
{
    let netns: Option<PathBuf> = netns.map(Path::to_path_buf);
    let thread = std::thread::Builder::new()
        .name("cubby-netlink".into())
        .spawn(move || -> Result<T> {
            if let Some(path) = &netns {
                let file = std::fs::File::open(path)
                    .map_err(|e| NetError::io(format!("open netns {}", path.display()), e))?;
                // Only this thread moves; it exits when done.
                nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).map_err(|e| {
                    NetError::io(format!("setns into {}", path.display()), e.into())
                })?;
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()
                .map_err(|e| NetError::io("start netlink runtime", e))?;
            rt.block_on(async move {
                let (conn, handle, _) = rtnetlink::new_connection()
                    .map_err(|e| NetError::io("open netlink socket", e))?;
                let task = tokio::spawn(conn);
                let out = f(handle).await;
                task.abort();
                out
            })
        })
        .map_err(|e| NetError::io("spawn netlink thread", e))?;
    thread.join().unwrap_or_else(|_| {
        Err(NetError::Netlink {
            what: "netlink thread".into(),
            message: "panicked".into(),
        })
    })
}

/// Brings link `idx` up with no IPv6 address of its own (addrgenmode
/// none, set while it is still down: the kernel cannot take it at creation
/// and generates the link-local address the moment a link comes up). Our
/// networks are IPv4 only, as Docker's without `--ipv6`, which disables
/// IPv6 on a container's interface: a link-local address would run
/// duplicate address detection, router solicitation and multicast listener
/// reports on every link, each flooded by the bridge to all of its ports —
/// per container O(ports) packets, so a burst of N starts cost O(N²) kernel
/// time (half of the host's CPU in a 300-container burst).
async fn up_without_ipv6(h: &Handle, idx: u32, what: &str) -> Result<()> {
    let quiet = LinkUnspec::new_with_index(idx)
        .append_extra_attribute(LinkAttribute::AfSpecUnspec(vec![AfSpecUnspec::Inet6(
            vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)],
        )]))
        .build();
    h.link()
        .set(quiet)
        .execute()
        .await
        .map_err(nl(format!("turn off IPv6 addresses on {what}")))?;
    h.link()
        .set(LinkUnspec::new_with_index(idx).up().build())
        .execute()
        .await
        .map_err(nl(format!("bring up {what}")))
}

async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>> {
    match h
        .link()
        .get()
        .match_name(name.to_string())
        .execute()
        .try_next()
        .await
    {
        Ok(Some(m)) => Ok(Some(m.header.index)),
        Ok(None) => Ok(None),
        Err(e) if is_absent(&e) => Ok(None),
        Err(e) => Err(nl(format!("look up link {name}"))(e)),
    }
}

fn link_name(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// Creates bridge `name` (if missing) with `gateway/prefix` and brings it up.
pub fn ensure_bridge(name: &str, gateway: Ipv4Addr, prefix: u8) -> Result<()> {
    let name = name.to_string();
    run(None, move |h| async move {
        let (idx, created) = match index_of(&h, &name).await? {
            Some(i) => (i, false),
            None => {
                // Born down: up_without_ipv6 brings it up once IPv6 is off.
                let bridge = LinkMessageBuilder::<LinkBridge>::new(&name).build();
                match h.link().add(bridge).execute().await {
                    Ok(()) => {}
                    Err(e) if is_exists(&e) => {}
                    Err(e) => return Err(nl(format!("create bridge {name}"))(e)),
                }
                let idx = index_of(&h, &name)
                    .await?
                    .ok_or_else(|| NetError::Netlink {
                        what: format!("create bridge {name}"),
                        message: "bridge vanished after creation".into(),
                    })?;
                (idx, true)
            }
        };
        match h
            .address()
            .add(idx, IpAddr::V4(gateway), prefix)
            .execute()
            .await
        {
            Ok(()) => {}
            Err(e) if is_exists(&e) => {}
            Err(e) => return Err(nl(format!("add {gateway}/{prefix} to {name}"))(e)),
        }
        if created {
            return up_without_ipv6(&h, idx, &name).await;
        }
        h.link()
            .set(LinkUnspec::new_with_index(idx).up().build())
            .execute()
            .await
            .map_err(nl(format!("bring up {name}")))
    })
}

/// Deletes a link by name; Ok(false) if it did not exist.
pub fn delete_link(name: &str) -> Result<bool> {
    let name = name.to_string();
    run(None, move |h| async move {
        let Some(idx) = index_of(&h, &name).await? else {
            return Ok(false);
        };
        match h.link().del(idx).execute().await {
            Ok(()) => Ok(true),
            Err(e) if is_absent(&e) => Ok(false),
            Err(e) => Err(nl(format!("delete link {name}"))(e)),
        }
    })
}

/// Names of all links in `netns` (None: the caller's namespace).
pub fn list_links(netns: Option<&Path>) -> Result<Vec<String>> {
    run(netns, move |h| async move {
        let mut out = Vec::new();
        let mut s = h.link().get().execute();
        while let Some(m) = s.try_next().await.map_err(nl("list links"))? {
            out.extend(link_name(&m));
        }
        Ok(out)
    })
}

/// IPv4 addresses (with prefix) on link `name`, empty if the link is absent.
pub fn addresses(netns: Option<&Path>, name: &str) -> Result<Vec<(Ipv4Addr, u8)>> {
    let name = name.to_string();
    run(netns, move |h| async move {
        let Some(idx) = index_of(&h, &name).await? else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        let mut s = h.address().get().set_link_index_filter(idx).execute();
        while let Some(m) = s.try_next().await.map_err(nl("list addresses"))? {
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                    out.push((*ip, m.header.prefix_len));
                }
            }
        }
        Ok(out)
    })
}

/// What to build for one container endpoint.
#[derive(Debug, Clone)]
pub struct VethSpec {
    pub bridge: String,
    /// Host-side name (also the key for cleanup).
    pub host_if: String,
    /// The name inside the container (eth0, eth1, ...).
    pub ifname: String,
    pub netns: PathBuf,
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub mac: [u8; 6],
    /// Default route via this address (None on internal networks).
    pub gateway: Option<Ipv4Addr>,
}

/// Creates the veth pair with its container end born inside the netns
/// (named `ifname`, with its MAC: moving a link between namespaces later
/// would cost an unregister and an RCU grace period), plugs the host end
/// into the bridge, then configures the container end. On failure nothing
/// is left behind.
pub fn add_endpoint(spec: &VethSpec) -> Result<()> {
    let s = spec.clone();
    let host = {
        let s = s.clone();
        run(None, move |h| async move {
            let bridge = index_of(&h, &s.bridge)
                .await?
                .ok_or_else(|| NetError::NotFound(format!("bridge {}", s.bridge)))?;
            let ns = std::fs::File::open(&s.netns)
                .map_err(|e| NetError::io(format!("open netns {}", s.netns.display()), e))?;
            let peer = LinkMessageBuilder::<LinkUnspec>::new()
                .name(s.ifname.clone())
                .address(s.mac.to_vec())
                .setns_by_fd(ns.as_raw_fd())
                .build();
            let veth = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
                .name(s.host_if.clone())
                .controller(bridge)
                .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
                .build();
            h.link()
                .add(veth)
                .execute()
                .await
                .map_err(nl(format!("create veth {}", s.host_if)))?;
            let idx = index_of(&h, &s.host_if)
                .await?
                .ok_or_else(|| NetError::NotFound(format!("link {} after creation", s.host_if)))?;
            let up = up_without_ipv6(&h, idx, &s.host_if).await;
            if up.is_err() {
                let _ = h.link().del(idx).execute().await;
            }
            up
        })
    };
    host?;
    let inside = {
        let s = s.clone();
        run(Some(&s.netns.clone()), move |h| async move {
            if let Some(lo) = index_of(&h, "lo").await? {
                h.link()
                    .set(LinkUnspec::new_with_index(lo).up().build())
                    .execute()
                    .await
                    .map_err(nl("bring up lo"))?;
            }
            let idx = index_of(&h, &s.ifname)
                .await?
                .ok_or_else(|| NetError::NotFound(format!("link {} in netns", s.ifname)))?;
            h.address()
                .add(idx, IpAddr::V4(s.address), s.prefix)
                .execute()
                .await
                .map_err(nl(format!(
                    "add {}/{} to {}",
                    s.address, s.prefix, s.ifname
                )))?;
            up_without_ipv6(&h, idx, &s.ifname).await?;
            if let Some(gw) = s.gateway {
                let route = RouteMessageBuilder::<Ipv4Addr>::new()
                    .gateway(gw)
                    .output_interface(idx)
                    .build();
                match h.route().add(route).execute().await {
                    Ok(()) => {}
                    // A second non-internal network: the first default route stays.
                    Err(e) if is_exists(&e) => {}
                    Err(e) => return Err(nl(format!("add default route via {gw}"))(e)),
                }
            }
            Ok(())
        })
    };
    if let Err(e) = inside {
        let _ = delete_link(&s.host_if);
        return Err(e);
    }
    Ok(())
}

/// Whether `netns` has a default route (for tests and inspection).
pub fn has_default_route(netns: &Path) -> Result<bool> {
    run(Some(netns), move |h| async move {
        let mut s = h
            .route()
            .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
            .execute();
        while let Some(m) = s.try_next().await.map_err(nl("list routes"))? {
            if m.header.destination_prefix_length == 0
                && m.header.table == rtnetlink::packet_route::route::RouteHeader::RT_TABLE_MAIN
            {
                return Ok(true);
            }
        }
        Ok(false)
    })
}

/// Every IPv4 subnet configured on the host (to avoid clashing with it).
pub fn host_subnets() -> Result<Vec<crate::ipam::Subnet>> {
    run(None, move |h| async move {
        let mut out = Vec::new();
        let mut s = h.address().get().execute();
        while let Some(m) = s.try_next().await.map_err(nl("list addresses"))? {
            for a in &m.attributes {
                if let AddressAttribute::Address(IpAddr::V4(ip)) = a {
                    if let Ok(sn) = crate::ipam::Subnet::new(*ip, m.header.prefix_len.clamp(8, 30))
                    {
                        out.push(sn);
                    }
                }
            }
        }
        Ok(out)
    })
}
