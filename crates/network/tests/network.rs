//! Real networking tests (root): bridges, veths and netns made by
//! cubby-network, traffic only between addresses it assigned.
//! Each test has its own interface prefix, nft table, subnets and temp
//! root, and removes everything on drop (also when it fails).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use cubby_network::ipam::Subnet;
use cubby_network::{firewall, netlink, netns, AttachReq, CreateOpts, NetConfig, NetworkStore};

static SEQ: AtomicU32 = AtomicU32::new(0);

struct Env {
    store: NetworkStore,
    _root: tempfile::TempDir,
    prefix: String,
    table: String,
    netns_dir: PathBuf,
    /// Third octet base of this test's 10.213.X.0/24 subnets.
    base: u32,
}

fn require_root() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "these tests create bridges and namespaces: run them as root"
    );
    assert!(
        Command::new("nft").arg("--version").output().is_ok(),
        "nft is missing: apt-get install nftables"
    );
}

impl Env {
    fn new() -> Env {
        require_root();
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let tag = (std::process::id() * 13 + n * 7) % 1296;
        let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let prefix = format!(
            "t{}{}",
            digits[(tag / 36) as usize] as char,
            digits[(tag % 36) as usize] as char
        );
        let root = tempfile::tempdir().expect("temp dir");
        let netns_dir = root.path().join("netns");
        let base = ((std::process::id() % 20) * 12 + n * 3) % 240;
        let mut cfg = NetConfig::new(root.path());
        cfg.netns_dir = netns_dir.clone();
        cfg.ifprefix = prefix.clone();
        cfg.table = format!("cubby-test-{prefix}");
        cfg.default_bridge = format!("{prefix}def");
        cfg.default_subnet = format!("10.213.{}.0/24", base + 2).parse().unwrap();
        cfg.auto_pool = "10.212.0.0/16".parse().unwrap();
        cfg.resolv_conf = PathBuf::from("/dev/null");
        let table = cfg.table.clone();
        let store = NetworkStore::open(cfg).expect("open store");
        Env {
            store,
            _root: root,
            prefix,
            table,
            netns_dir,
            base,
        }
    }

    fn subnet(&self, i: u32) -> Subnet {
        format!("10.213.{}.0/24", self.base + i).parse().unwrap()
    }

    fn net(&self, name: &str, i: u32, internal: bool) -> cubby_network::Network {
        self.store
            .create(CreateOpts {
                name: name.into(),
                subnet: Some(self.subnet(i)),
                internal,
                ..Default::default()
            })
            .expect("create network")
    }

    fn container(&self, id: &str, net: &str) -> (PathBuf, Ipv4Addr) {
        let ns = self.store.prepare(id, id).expect("prepare");
        let ep = self
            .store
            .attach(
                net,
                AttachReq {
                    container_id: id.into(),
                    container_name: format!("c-{id}"),
                    hostname: id.into(),
                    ..Default::default()
                },
            )
            .expect("attach");
        (ns, ep.ip)
    }

    fn our_links(&self) -> Vec<String> {
        netlink::list_links(None)
            .unwrap()
            .into_iter()
            .filter(|l| l.starts_with(&self.prefix))
            .collect()
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for ns in netns::list(&self.netns_dir).unwrap_or_default() {
            let _ = self.store.release(&ns);
        }
        for l in self.our_links() {
            let _ = netlink::delete_link(&l);
        }
        let _ = firewall::apply(&format!(
            "table inet {t} {{}}\ndelete table inet {t}\n",
            t = self.table
        ));
        let _ = netns::unmount_dir(&self.netns_dir);
    }
}

/// Runs `f` on a thread inside `ns`.
fn in_netns<T: Send + 'static>(ns: &Path, f: impl FnOnce() -> T + Send + 'static) -> T {
    let file = std::fs::File::open(ns).expect("open netns");
    std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("netns thread")
}

/// A TCP echo-once server inside `ns` on `ip:port`; returns its thread.
fn serve_once(ns: &Path, ip: Ipv4Addr, port: u16) -> std::thread::JoinHandle<()> {
    let file = std::fs::File::open(ns).expect("open netns");
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let l = TcpListener::bind((ip, port)).expect("bind in netns");
        tx.send(()).unwrap();
        l.set_nonblocking(false).unwrap();
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 5];
            if s.read_exact(&mut buf).is_ok() {
                let _ = s.write_all(&buf);
            }
        }
    });
    rx.recv().expect("server ready");
    h
}

fn tcp_roundtrip(ip: Ipv4Addr, port: u16) -> std::io::Result<()> {
    let mut s = TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.write_all(b"hello")?;
    let mut buf = [0u8; 5];
    s.read_exact(&mut buf)?;
    assert_eq!(&buf, b"hello");
    Ok(())
}

fn ping_from(ns: &Path, ip: Ipv4Addr) -> bool {
    Command::new("nsenter")
        .arg(format!("--net={}", ns.display()))
        .args(["busybox", "ping", "-c1", "-W2", &ip.to_string()])
        .output()
        .expect("nsenter + busybox ping (apt-get install busybox util-linux)")
        .status
        .success()
}

#[test]
fn same_bridge_ping_and_tcp() {
    let env = Env::new();
    env.net("front", 0, false);
    let (a, ip_a) = env.container("a1", "front");
    let (b, ip_b) = env.container("b1", "front");
    assert_ne!(ip_a, ip_b);
    assert!(ping_from(&a, ip_b), "a cannot ping b at {ip_b}");
    let srv = serve_once(&b, ip_b, 7000);
    let res = in_netns(&a, move || {
        tcp_roundtrip(ip_b, 7000).map_err(|e| e.to_string())
    });
    srv.join().unwrap();
    res.expect("tcp a -> b");
    // Names: each hosts file lists the other container.
    let hosts = std::fs::read_to_string(env.store.files_dir("a1").join("hosts")).unwrap();
    assert!(hosts.contains(&format!("{ip_b}\tc-b1")), "{hosts}");
    assert!(netlink::has_default_route(&a).unwrap());
}

/// The links with IPv6 addresses in the calling thread's netns.
fn ipv6_interfaces() -> Vec<String> {
    std::fs::read_to_string("/proc/thread-self/net/if_inet6")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().last().map(str::to_string))
        .collect()
}

/// Our networks are IPv4 only: no link (container end, host end, bridge)
/// gets an IPv6 address, so none sends duplicate address detection, router
/// solicitations or listener reports that the bridge would flood to every
/// port (a burst of N starts was O(N²) packets).
#[test]
fn links_carry_no_ipv6_and_stay_quiet() {
    let env = Env::new();
    let net = env.net("quiet", 0, false);
    let (a, _) = env.container("q1", "quiet");
    let eps = env.store.endpoints(&net).unwrap();
    let ep = eps
        .iter()
        .find(|e| e.container_id == "q1")
        .expect("endpoint q1");
    let toward_q1 = || {
        std::fs::read_to_string(format!(
            "/sys/class/net/{}/statistics/tx_packets",
            ep.host_if
        ))
        .unwrap()
        .trim()
        .parse::<u64>()
        .unwrap()
    };
    // DAD would finish and router solicitation start within ~1 s.
    std::thread::sleep(Duration::from_millis(1500));
    let before = toward_q1();
    for id in ["q2", "q3", "q4"] {
        env.container(id, "quiet");
    }
    std::thread::sleep(Duration::from_millis(1500));
    // With IPv6 on the links each join floods ~4 packets to every port (12
    // here); a late one of the new bridge's own start-up announcements may
    // still arrive, so fewer than one per join is what is asserted.
    let flooded = toward_q1() - before;
    assert!(
        flooded < 3,
        "{flooded} packets the bridge flooded to an idle container while 3 others joined"
    );
    let inside = in_netns(&a, ipv6_interfaces);
    assert!(inside.iter().all(|i| i == "lo"), "IPv6 inside: {inside:?}");
    let host = ipv6_interfaces();
    let ours: Vec<&String> = host.iter().filter(|i| i.starts_with(&env.prefix)).collect();
    assert!(ours.is_empty(), "IPv6 on our host links: {ours:?}");
}

#[test]
fn different_bridges_are_isolated() {
    let env = Env::new();
    env.net("red", 0, false);
    env.net("blue", 1, false);
    let (a, _) = env.container("r1", "red");
    let (b, ip_b) = env.container("u1", "blue");
    let _srv = serve_once(&b, ip_b, 7001);
    assert!(!ping_from(&a, ip_b), "red reached blue by ping");
    let res = in_netns(&a, move || tcp_roundtrip(ip_b, 7001).is_ok());
    assert!(!res, "red reached blue over TCP");
    // The server is up and routable: the host itself reaches it (this also
    // ends the server thread), so only the cross-network path is blocked.
    tcp_roundtrip(ip_b, 7001).expect("host -> blue container");
    let hosts = std::fs::read_to_string(env.store.files_dir("r1").join("hosts")).unwrap();
    assert!(!hosts.contains("c-u1"), "{hosts}");
}

#[test]
fn internal_network_has_no_default_route() {
    let env = Env::new();
    env.net("exam", 0, true);
    let (a, _) = env.container("i1", "exam");
    let (_b, ip_b) = env.container("i2", "exam");
    assert!(!netlink::has_default_route(&a).unwrap());
    assert!(
        ping_from(&a, ip_b),
        "internal containers must still reach each other"
    );
}

#[test]
fn ipam_survives_reopen_and_never_repeats_live_address() {
    let env = Env::new();
    env.net("ipam", 0, false);
    let (_, ip1) = env.container("p1", "ipam");
    let (_, ip2) = env.container("p2", "ipam");
    // A second store on the same records (a daemon restart).
    let again = NetworkStore::open(env.store.config().clone()).unwrap();
    let mut live: HashSet<Ipv4Addr> = [ip1, ip2].into();
    for i in 0..5 {
        let id = format!("q{i}");
        again.prepare(&id, &id).unwrap();
        let ep = again
            .attach(
                "ipam",
                AttachReq {
                    container_id: id.clone(),
                    container_name: id.clone(),
                    hostname: id.clone(),
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(live.insert(ep.ip), "address {} handed out twice", ep.ip);
    }
    let net = again.get("ipam").unwrap();
    assert_eq!(again.endpoints(&net).unwrap().len(), 7);
    // Released addresses are not reused at once (round robin).
    again.release("q0").unwrap();
    again.prepare("q9", "q9").unwrap();
    let ep = again
        .attach(
            "ipam",
            AttachReq {
                container_id: "q9".into(),
                container_name: "q9".into(),
                hostname: "q9".into(),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(!live.contains(&ep.ip));
}

#[test]
fn hundred_cycles_leak_nothing() {
    let env = Env::new();
    env.net("churn", 0, false);
    // The bridge appears with the first endpoint: baseline after one cycle.
    let mut links_before = None;
    let mut rules_before = None;
    for i in 0..101 {
        if i == 1 {
            links_before = Some(env.our_links());
            rules_before = Some(firewall::rule_count(&env.table).unwrap());
            assert_eq!(firewall::port_count(&env.table).unwrap(), 0);
        }
        let id = format!("cyc{i}");
        env.store.prepare(&id, &id).unwrap();
        env.store
            .attach(
                "churn",
                AttachReq {
                    container_id: id.clone(),
                    container_name: id.clone(),
                    hostname: id.clone(),
                    ports: vec![cubby_network::PortMap {
                        proto: "tcp".into(),
                        host_ip: Some(Ipv4Addr::LOCALHOST),
                        host_port: 20000 + i as u16,
                        port: 80,
                    }],
                    ..Default::default()
                },
            )
            .unwrap();
        env.store.release(&id).unwrap();
    }
    let links_before = links_before.unwrap();
    assert_eq!(links_before.len(), 1, "only the bridge: {links_before:?}");
    // A released container's veth pair goes with its netns, in the
    // kernel's asynchronous namespace cleanup: give it a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while env.our_links() != links_before && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(env.our_links(), links_before, "interfaces leaked");
    assert_eq!(
        Some(firewall::rule_count(&env.table).unwrap()),
        rules_before,
        "nft rules leaked"
    );
    assert_eq!(
        firewall::port_count(&env.table).unwrap(),
        0,
        "published-port elements leaked"
    );
    assert!(
        netns::list(&env.netns_dir).unwrap().is_empty(),
        "netns files leaked"
    );
    let net = env.store.get("churn").unwrap();
    assert!(env.store.endpoints(&net).unwrap().is_empty());
    let addrs = netlink::addresses(None, &net.bridge).unwrap();
    assert_eq!(addrs.len(), 1, "bridge addresses: {addrs:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(&*env.netns_dir.join("cyc").to_string_lossy()),
        "netns mounts leaked"
    );
}

#[test]
fn reconcile_removes_strays() {
    let env = Env::new();
    env.net("rec", 0, false);
    let (_, _) = env.container("live1", "rec");
    let (_, _) = env.container("dead1", "rec");
    // A stray link with our prefix (a crash between create and record).
    let stray = format!("{}v{}", env.prefix, "00deadbeef");
    let br = env.store.get("rec").unwrap().bridge;
    netlink::ensure_bridge(&stray, Ipv4Addr::new(10, 213, (env.base + 5) as u8, 1), 30).ok();
    let report = env.store.reconcile(&["live1".to_string()].into()).unwrap();
    assert!(report.netns.contains(&"dead1".to_string()), "{report:?}");
    assert!(report.links.contains(&stray), "{report:?}");
    let links = env.our_links();
    assert!(!links.contains(&stray));
    assert!(links.contains(&br), "network bridge must stay");
    assert_eq!(
        netns::list(&env.netns_dir).unwrap(),
        vec!["live1".to_string()]
    );
    let net = env.store.get("rec").unwrap();
    let eps = env.store.endpoints(&net).unwrap();
    assert_eq!(eps.len(), 1);
    assert_eq!(eps[0].container_id, "live1");
}

#[test]
fn isolate_host_blocks_the_host_but_not_peers() {
    let env = Env::new();
    for (name, i, isolate) in [("open", 0, false), ("closed", 1, true)] {
        env.store
            .create(CreateOpts {
                name: name.into(),
                subnet: Some(env.subnet(i)),
                isolate_host: isolate,
                ..Default::default()
            })
            .unwrap();
    }
    let (open_ns, _) = env.container("o1", "open");
    let (closed_ns, _) = env.container("h1", "closed");
    let (_peer_ns, peer_ip) = env.container("h2", "closed");
    // A host service on each gateway (addresses cubby assigned).
    let gw_open = env.store.get("open").unwrap().gateway;
    let gw_closed = env.store.get("closed").unwrap().gateway;
    let l_open = TcpListener::bind((gw_open, 7100)).unwrap();
    let l_closed = TcpListener::bind((gw_closed, 7100)).unwrap();
    let accept = |l: TcpListener| {
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut b = [0u8; 5];
                if s.read_exact(&mut b).is_ok() {
                    let _ = s.write_all(&b);
                }
            }
        })
    };
    let t_open = accept(l_open);
    let _t_closed = accept(l_closed);
    let ok = in_netns(&open_ns, move || tcp_roundtrip(gw_open, 7100).is_ok());
    assert!(ok, "a normal network reaches the host");
    t_open.join().unwrap();
    let ok = in_netns(&closed_ns, move || tcp_roundtrip(gw_closed, 7100).is_ok());
    assert!(!ok, "an isolate_host network reached the host");
    assert!(
        ping_from(&closed_ns, peer_ip),
        "peers on the isolated network must still talk"
    );
    // End the closed listener's thread from the host itself.
    let _ = tcp_roundtrip(gw_closed, 7100);
}

#[test]
fn reconcile_rebuilds_live_endpoints_after_a_reboot() {
    let env = Env::new();
    env.net("boot", 0, false);
    let (_, ip_a) = env.container("ra", "boot");
    let (_, ip_b) = env.container("rb", "boot");
    let net = env.store.get("boot").unwrap();
    let host_if = env
        .store
        .endpoints(&net)
        .unwrap()
        .into_iter()
        .find(|e| e.container_id == "ra")
        .unwrap()
        .host_if;
    // What a reboot leaves: no netns mounts, no links; records on disk.
    netns::remove(&env.netns_dir, "ra").unwrap();
    netns::remove(&env.netns_dir, "rb").unwrap();
    netlink::delete_link(&net.bridge).unwrap();
    let _ = netlink::delete_link(&host_if);
    let live: HashSet<String> = ["ra".to_string(), "rb".to_string()].into();
    let report = env.store.reconcile(&live).unwrap();
    assert_eq!(report.repaired.len(), 2, "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    let a = env.store.netns_path("ra");
    assert!(netns::is_mounted(&a));
    assert_eq!(
        netlink::addresses(Some(&a), "eth0").unwrap(),
        vec![(ip_a, 24)],
        "same address after the rebuild"
    );
    assert!(ping_from(&a, ip_b), "rebuilt containers reach each other");
    // A second reconcile has nothing to do.
    let again = env.store.reconcile(&live).unwrap();
    assert!(
        again.repaired.is_empty() && again.links.is_empty(),
        "{again:?}"
    );
}

/// A published port reached on 127.0.0.1 through the DNAT map element the
/// attach added as a delta; after the table vanished behind our back the
/// next delta fails and the store rewrites the whole table, so both ports
/// answer; release deletes the elements.
#[test]
fn published_ports_as_deltas_with_full_rewrite_fallback() {
    let env = Env::new();
    env.net("pub", 0, false);
    let port_of = |i: u16| 21000 + (std::process::id() % 500) as u16 * 4 + i;
    let attach = |id: &str, host_port: u16| {
        env.store.prepare(id, id).unwrap();
        env.store
            .attach(
                "pub",
                AttachReq {
                    container_id: id.into(),
                    container_name: id.into(),
                    hostname: id.into(),
                    ports: vec![cubby_network::PortMap {
                        proto: "tcp".into(),
                        host_ip: Some(Ipv4Addr::LOCALHOST),
                        host_port,
                        port: 7100,
                    }],
                    ..Default::default()
                },
            )
            .unwrap()
    };
    let a = attach("pa", port_of(0));
    assert_eq!(firewall::port_count(&env.table).unwrap(), 1);
    let srv = serve_once(&env.store.netns_path("pa"), a.ip, 7100);
    tcp_roundtrip(Ipv4Addr::LOCALHOST, port_of(0)).expect("published port of pa");
    srv.join().unwrap();
    let bad = env.store.prepare("px", "px").and_then(|_| {
        env.store.attach(
            "pub",
            AttachReq {
                container_id: "px".into(),
                container_name: "px".into(),
                hostname: "px".into(),
                ports: vec![cubby_network::PortMap {
                    proto: "sctp; flush ruleset".into(),
                    host_ip: None,
                    host_port: port_of(2),
                    port: 1,
                }],
                ..Default::default()
            },
        )
    });
    assert!(bad.is_err(), "a protocol other than tcp/udp is refused");
    env.store.release("px").unwrap();
    // Someone deletes the table: the delta cannot apply, the rewrite does.
    let out = Command::new("nft")
        .args(["delete", "table", "inet", &env.table])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let b = attach("pb", port_of(1));
    assert_eq!(firewall::port_count(&env.table).unwrap(), 2);
    for (id, ip, port) in [("pa", a.ip, port_of(0)), ("pb", b.ip, port_of(1))] {
        let srv = serve_once(&env.store.netns_path(id), ip, 7100);
        tcp_roundtrip(Ipv4Addr::LOCALHOST, port).expect("published port after the rewrite");
        srv.join().unwrap();
    }
    env.store.release("pa").unwrap();
    env.store.release("pb").unwrap();
    assert_eq!(firewall::port_count(&env.table).unwrap(), 0);
}

/// Joins and leaves at once from many threads (a class starting together):
/// the peers' hosts files are rewritten in rounds that cover several
/// changes, and when each call returns its change is in every peer's file.
#[test]
fn concurrent_joins_and_leaves_keep_every_hosts_file_whole() {
    let env = Env::new();
    env.net("crowd", 5, false);
    let ids: Vec<String> = (0..16).map(|i| format!("k{i}")).collect();
    let ips: Vec<Ipv4Addr> = std::thread::scope(|sc| {
        let hs: Vec<_> = ids
            .iter()
            .map(|id| {
                let env = &env;
                sc.spawn(move || {
                    let ip = env.container(id, "crowd").1;
                    // Returned: every peer attached before knows it.
                    (ip, id.clone())
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap().0).collect()
    });
    let hosts = |id: &str| std::fs::read_to_string(env.store.files_dir(id).join("hosts")).unwrap();
    for (i, id) in ids.iter().enumerate() {
        let h = hosts(id);
        for (j, other) in ids.iter().enumerate() {
            if i != j {
                assert!(
                    h.contains(&format!("{}\tc-{other} ", ips[j])),
                    "{id} lacks {other}:\n{h}"
                );
            }
        }
    }
    let (gone, kept) = ids.split_at(8);
    std::thread::scope(|sc| {
        for id in gone {
            let env = &env;
            sc.spawn(move || env.store.release(id).expect("release"));
        }
    });
    for id in kept {
        let h = hosts(id);
        for other in gone {
            assert!(
                !h.contains(&format!("\tc-{other} ")),
                "{id} still lists {other}:\n{h}"
            );
        }
        for other in kept.iter().filter(|o| *o != id) {
            assert!(
                h.contains(&format!("\tc-{other} ")),
                "{id} lacks {other}:\n{h}"
            );
        }
    }
}
