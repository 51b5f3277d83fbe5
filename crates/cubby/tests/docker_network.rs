//! Container networking through the real `docker` CLI against `cubby
//! daemon`: user networks with name resolution, isolation between
//! networks, internal networks, published ports, clean teardown and
//! reconcile after a daemon crash. Each daemon has its own bridges,
//! subnets and nft table (see common/net.rs); traffic goes only to
//! 127.0.0.1 and to addresses cubby assigned.
//! Needs root, cgroups, a static busybox, nftables and /usr/local/bin/docker.

mod common;
#[path = "common/daemon.rs"]
mod daemon;

use daemon::{eventually, Daemon};
use serde_json::Value;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A shell snippet fetching `/` from HOST:PORT with nc (busybox-static's
/// wget crashes in a bare rootfs, even for an address; nc does not).
fn get(host: &str, port: u16) -> String {
    format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {host} {port}")
}

fn get_by_name(host: &str) -> String {
    get(host, 80)
}

/// The httpd every server container runs (busybox, page "hello NAME").
fn httpd(name: &str) -> String {
    format!("mkdir -p /www && echo hello {name} > /www/index.html && exec httpd -f -p 80 -h /www")
}

fn inspect(d: &Daemon, what: &[&str]) -> Value {
    let mut args = vec!["inspect"];
    args.extend_from_slice(what);
    let v: Value = serde_json::from_str(&d.ok(&args)).unwrap();
    v[0].clone()
}

/// `name` keeps each test's cgroup (which the harness empties on drop) its own.
fn start(name: &str) -> Daemon {
    assert!(
        std::process::Command::new("nft")
            .arg("--version")
            .output()
            .is_ok(),
        "nft is missing: apt-get install nftables"
    );
    let d = Daemon::start(name);
    d.import_busybox();
    d
}

/// GET / from 127.0.0.1:port, or None if nothing answers yet.
fn http_get(port: u16) -> Option<String> {
    let mut s =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

/// A free TCP port on 127.0.0.1 (the kernel's choice).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn netns_files(d: &Daemon) -> Vec<String> {
    std::fs::read_dir(d.tmp.path().join("netns"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn user_network_names_aliases_and_isolation() {
    let d = start("net-names");
    let front = d.net.subnet(0);
    d.ok(&[
        "network", "create", "--subnet", &front, "--label", "class=a", "front",
    ]);
    d.ok(&["network", "create", "--subnet", &d.net.subnet(1), "other"]);
    let ls = d.ok(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"]);
    assert!(
        ls.contains("front bridge") && ls.contains("other bridge") && ls.contains("bridge bridge"),
        "{ls}"
    );
    let net = inspect(&d, &["--type", "network", "front"]);
    assert_eq!(net["IPAM"]["Config"][0]["Subnet"], front.as_str());
    assert_eq!(net["Labels"]["class"], "a");
    let dup = d.fails(&["network", "create", "front"]);
    assert!(dup.contains("already exists"), "{dup}");

    d.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "--network",
        "front",
        "--network-alias",
        "api",
        "busybox",
        "sh",
        "-c",
        &httpd("web"),
    ]);
    let web = inspect(&d, &["web"]);
    let web_ip = web["NetworkSettings"]["Networks"]["front"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        web_ip.starts_with(front.trim_end_matches("0/24")),
        "{web_ip} not in {front}"
    );
    let net = inspect(&d, &["--type", "network", "front"]);
    assert_eq!(net["Containers"].as_object().unwrap().len(), 1, "{net}");

    // Same network: by name and alias, ping and HTTP.
    let out = eventually("web answers by name", || {
        let o = d.docker(&[
            "run",
            "--rm",
            "--network",
            "front",
            "busybox",
            "sh",
            "-c",
            &format!(
                "ping -c1 -W2 web >/dev/null && {} && {}",
                get_by_name("web"),
                get_by_name("api")
            ),
        ]);
        o.status
            .success()
            .then(|| String::from_utf8_lossy(&o.stdout).into_owned())
    });
    assert_eq!(out.matches("hello web").count(), 2, "{out}");
    let hosts = d.ok(&[
        "run",
        "--rm",
        "--network",
        "front",
        "--name",
        "peer",
        "busybox",
        "cat",
        "/etc/hosts",
    ]);
    assert!(hosts.contains(&format!("{web_ip}\tweb api")), "{hosts}");
    let resolv = d.ok(&[
        "run",
        "--rm",
        "--network",
        "front",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    assert!(
        !resolv.contains("nameserver"),
        "the harness gives containers no resolver: {resolv}"
    );

    // Another network: neither the name nor the address.
    let o = d.docker(&[
        "run",
        "--rm",
        "--network",
        "other",
        "busybox",
        "sh",
        "-c",
        &format!(
            "ping -c1 -W2 {web_ip}; {}; grep -w web /etc/hosts",
            get(&web_ip, 80)
        ),
    ]);
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "other network reached web: {text}");
    assert!(
        !text.contains("hello web") && !text.contains(" 0% packet loss"),
        "{text}"
    );
    // Nor from the default network.
    let o = d.docker(&["run", "--rm", "busybox", "sh", "-c", &get(&web_ip, 80)]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && !text.contains("hello web"),
        "default network reached web: {text}"
    );

    // A fixed address (docker run --ip).
    let fixed = format!("{}50", front.trim_end_matches("0/24"));
    d.ok(&[
        "run",
        "-d",
        "--name",
        "fixed",
        "--network",
        "front",
        "--ip",
        &fixed,
        "busybox",
        "sleep",
        "600",
    ]);
    let got = inspect(&d, &["fixed"])["NetworkSettings"]["Networks"]["front"]["IPAddress"].clone();
    assert_eq!(got, fixed.as_str());
    let taken = d.fails(&[
        "run",
        "-d",
        "--network",
        "front",
        "--ip",
        &fixed,
        "busybox",
        "true",
    ]);
    assert!(taken.contains("already in use"), "{taken}");
    d.ok(&["rm", "-f", "fixed"]);

    // connect/disconnect: a container on `other` joins `front` too.
    d.ok(&[
        "run",
        "-d",
        "--name",
        "late",
        "--network",
        "other",
        "busybox",
        "sleep",
        "600",
    ]);
    d.ok(&[
        "network",
        "connect",
        "--alias",
        "latecomer",
        "front",
        "late",
    ]);
    let late = inspect(&d, &["late"]);
    assert!(
        late["NetworkSettings"]["Networks"]["front"]["IPAddress"].is_string(),
        "{late}"
    );
    let hosts = d.ok(&["exec", "late", "cat", "/etc/hosts"]);
    assert!(hosts.contains("\tweb api"), "{hosts}");
    let web_hosts = d.ok(&["exec", "web", "cat", "/etc/hosts"]);
    assert!(web_hosts.contains("late latecomer"), "{web_hosts}");
    let out = d.ok(&["exec", "late", "sh", "-c", &get_by_name("web")]);
    assert!(out.contains("hello web"), "{out}");
    let busy = d.fails(&["network", "rm", "front"]);
    assert!(busy.contains("active endpoints"), "{busy}");
    d.ok(&["network", "disconnect", "front", "late"]);
    let hosts = d.ok(&["exec", "late", "cat", "/etc/hosts"]);
    assert!(!hosts.contains("\tweb"), "{hosts}");

    d.ok(&["rm", "-f", "web", "late"]);
    d.ok(&["network", "rm", "front"]);
    let pruned = d.ok(&["network", "prune", "-f"]);
    assert!(pruned.contains("other"), "{pruned}");
    let ls = d.ok(&["network", "ls", "--format", "{{.Name}}"]);
    let mut names: Vec<&str> = ls.lines().collect();
    names.sort();
    // host and none are listed as dockerd lists them.
    assert_eq!(names, ["bridge", "host", "none"]);
}

#[test]
fn internal_network_has_no_route_out() {
    let d = start("net-internal");
    d.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        &d.net.subnet(0),
        "exam",
    ]);
    let routes = d.ok(&[
        "run",
        "--rm",
        "--network",
        "exam",
        "busybox",
        "cat",
        "/proc/net/route",
    ]);
    let default = routes
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some("00000000"));
    assert!(!default, "internal network has a default route:\n{routes}");
    assert!(routes.contains("eth0"), "{routes}");
    let net = inspect(&d, &["--type", "network", "exam"]);
    assert_eq!(net["Internal"], true);
    // Without --subnet: a free /24 of the daemon's pool.
    d.ok(&["network", "create", "auto1"]);
    let auto = inspect(&d, &["--type", "network", "auto1"]);
    let subnet = auto["IPAM"]["Config"][0]["Subnet"]
        .as_str()
        .unwrap()
        .to_string();
    let pool = d.net.pool();
    let pool_prefix: Vec<&str> = pool.split('.').take(2).collect();
    assert!(
        subnet.starts_with(&pool_prefix.join(".")) && subnet.ends_with("/24"),
        "{subnet} not from {}",
        d.net.pool()
    );
    d.ok(&["network", "rm", "auto1"]);
    // The default network does route out (through masquerade: checked in
    // the nft table, this machine has no internet).
    let routes = d.ok(&["run", "--rm", "busybox", "cat", "/proc/net/route"]);
    assert!(
        routes
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(1) == Some("00000000")),
        "{routes}"
    );
    let table = std::process::Command::new("nft")
        .args(["list", "table", "inet", &d.net.table()])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(
        table.contains(&format!(
            "ip saddr {} oifname != \"{}\" masquerade",
            d.net.bridge_subnet(),
            d.net.bridge()
        )),
        "{table}"
    );
}

#[test]
fn published_ports_from_host_and_containers() {
    let d = start("net-ports");
    let (p1, p2) = (free_port(), free_port());
    d.ok(&[
        "run",
        "-d",
        "--name",
        "pub",
        "-p",
        &format!("127.0.0.1:{p1}:80"),
        "-p",
        &format!("{p2}:80"),
        "busybox",
        "sh",
        "-c",
        &httpd("pub"),
    ]);
    let page = eventually("published port answers on 127.0.0.1", || {
        http_get(p1).filter(|r| r.contains("hello pub"))
    });
    assert!(page.contains(" 200 OK"), "{page}");
    let port = d.ok(&["port", "pub", "80/tcp"]);
    assert!(
        port.contains(&format!("127.0.0.1:{p1}")) && port.contains(&format!("0.0.0.0:{p2}")),
        "{port}"
    );
    let ps = d.ok(&["ps", "--format", "{{.Ports}}"]);
    assert!(ps.contains(&format!("127.0.0.1:{p1}->80/tcp")), "{ps}");
    // From another container, through the gateway (an address cubby assigned).
    let gw = inspect(&d, &["pub"])["NetworkSettings"]["Gateway"]
        .as_str()
        .unwrap()
        .to_string();
    let out = d.ok(&["run", "--rm", "busybox", "sh", "-c", &get(&gw, p2)]);
    assert!(out.contains("hello pub"), "{out}");
    // Taken ports are refused.
    let err = d.fails(&[
        "run",
        "-d",
        "-p",
        &format!("127.0.0.1:{p1}:80"),
        "busybox",
        "true",
    ]);
    assert!(err.contains("already allocated"), "{err}");
    d.ok(&["rm", "-f", "pub"]);
    assert!(http_get(p1).is_none(), "port still answers after rm");
}

#[test]
fn removal_leaves_nothing_and_crash_reconciles() {
    let d = start("net-teardown");
    d.ok(&["network", "create", "--subnet", &d.net.subnet(0), "cyc"]);
    // Baseline: the default bridge and the network's bridge appear with
    // their first container; count after one.
    d.ok(&["run", "--rm", "--network", "cyc", "busybox", "true"]);
    d.ok(&["run", "--rm", "busybox", "true"]);
    let links = eventually("rm'd containers released", || {
        let l = d.net.links();
        (l.len() == 2 && netns_files(&d).is_empty()).then_some(l)
    });
    let rules = nft_rules(&d);
    // 100 containers: 50 removed with rm -f, 50 by the monitor (--rm).
    for i in 0..50 {
        let name = format!("c{i}");
        d.ok(&[
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "cyc",
            "-p",
            &format!("127.0.0.1:{}:80", free_port()),
            "busybox",
            "sleep",
            "600",
        ]);
        d.ok(&["rm", "-f", &name]);
        // --rm containers are removed by the monitor: released on `destroy`.
        d.ok(&["run", "--rm", "--network", "cyc", "busybox", "true"]);
    }
    eventually("nothing left behind", || {
        (d.net.links() == links && netns_files(&d).is_empty() && nft_rules(&d) == rules)
            .then_some(())
    });

    // A crash: strays appear while the daemon is gone; the next start
    // removes them and the running container keeps its network.
    let p = free_port();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "keep",
        "--network",
        "cyc",
        "-p",
        &format!("127.0.0.1:{p}:80"),
        "busybox",
        "sh",
        "-c",
        &httpd("keep"),
    ]);
    eventually("keep answers", || {
        http_get(p).filter(|r| r.contains("hello keep"))
    });
    let stray_link = format!("{}v00deadbeef", d.net.prefix);
    cubby_network::netlink::ensure_bridge(
        &stray_link,
        std::net::Ipv4Addr::new(169, 254, 213, 1),
        30,
    )
    .unwrap();
    cubby_network::netns::create(&d.tmp.path().join("netns"), "stray0").unwrap();
    let mut d = d;
    d.kill9_and_restart();
    eventually("strays removed", || {
        (!d.net.links().contains(&stray_link) && !netns_files(&d).contains(&"stray0".to_string()))
            .then_some(())
    });
    assert!(
        http_get(p).is_some_and(|r| r.contains("hello keep")),
        "keep lost its published port"
    );
    let ip = inspect(&d, &["keep"])["NetworkSettings"]["Networks"]["cyc"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    let out = d.ok(&[
        "run",
        "--rm",
        "--network",
        "cyc",
        "busybox",
        "sh",
        "-c",
        &get_by_name("keep"),
    ]);
    assert!(out.contains("hello keep"), "{out} (keep at {ip})");
    d.ok(&["rm", "-f", "keep"]);
}

fn nft_rules(d: &Daemon) -> usize {
    cubby_network::firewall::rule_count(&d.net.table()).unwrap()
}

#[test]
fn cubby_cli_networks_and_ports() {
    let d = start("net-cli");
    let host = format!("unix://{}", d.socket.display());
    let cubby = |args: &[&str]| -> String {
        let out = d.cubby().arg("-H").arg(&host).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "cubby {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    cubby(&[
        "network",
        "create",
        "--subnet",
        &d.net.subnet(0),
        "--internal",
        "-l",
        "k=v",
        "lab",
    ]);
    let ls = cubby(&["network", "ls"]);
    assert!(ls.contains("lab") && ls.contains(&d.net.subnet(0)), "{ls}");
    let v: Value = serde_json::from_str(&cubby(&["network", "inspect", "lab"])).unwrap();
    assert_eq!(v[0]["Internal"], true);
    assert_eq!(v[0]["Labels"]["k"], "v");
    cubby(&[
        "run",
        "-d",
        "--name",
        "s1",
        "--network",
        "lab",
        "--network-alias",
        "srv",
        "busybox",
        "sh",
        "-c",
        &httpd("s1"),
    ]);
    let out = eventually("s1 answers by alias", || {
        let o = d
            .cubby()
            .arg("-H")
            .arg(&host)
            .args([
                "run",
                "--rm",
                "--network",
                "lab",
                "busybox",
                "sh",
                "-c",
                &get_by_name("srv"),
            ])
            .output()
            .unwrap();
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        s.contains("hello s1").then_some(s)
    });
    assert!(out.contains("200 OK"), "{out}");
    let p = free_port();
    cubby(&[
        "run",
        "-d",
        "--name",
        "s2",
        "-p",
        &format!("127.0.0.1:{p}:80"),
        "busybox",
        "sh",
        "-c",
        &httpd("s2"),
    ]);
    assert_eq!(
        cubby(&["port", "s2"]).trim(),
        format!("80/tcp -> 127.0.0.1:{p}")
    );
    assert_eq!(
        cubby(&["port", "s2", "80"]).trim(),
        format!("127.0.0.1:{p}")
    );
    eventually("s2's published port answers", || {
        http_get(p).filter(|r| r.contains("hello s2"))
    });
    cubby(&["network", "connect", "--alias", "two", "lab", "s2"]);
    let hosts = d.ok(&["exec", "s1", "cat", "/etc/hosts"]);
    assert!(hosts.contains("s2 two"), "{hosts}");
    cubby(&["network", "disconnect", "lab", "s2"]);
    cubby(&["rm", "-f", "s1", "s2"]);
    cubby(&["network", "rm", "lab"]);
    assert!(
        !cubby(&["network", "ls", "-q"]).is_empty(),
        "the default network stays"
    );
    // Standalone (no daemon): bridges are refused with the way out.
    let out = d
        .cubby()
        .args(["run", "--network", "lab", "busybox", "true"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs the cubby daemon"));
}
