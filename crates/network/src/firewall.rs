//! nftables rules in cubby's own table (`inet <table>`, default `cubby`);
//! no other table is read or written.
//!
//! The whole table is rendered from the store's records and replaced in one
//! `nft -f -` transaction (add-if-missing, delete, recreate). That makes
//! every full apply a reconcile: a rule for a removed network or container
//! cannot survive, and a crash between two applies leaves the previous,
//! consistent table. Networks change the table's rules; containers only
//! change elements of two DNAT maps (published ports), so a container's
//! create or removal sends a small delta ([`port_delta`]) instead of the
//! whole table, and the store falls back to the full rewrite if the delta
//! fails (e.g. the table was flushed behind our back).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

use crate::error::{NetError, Result};
use crate::ipam::Subnet;

/// What the firewall needs to know about one network.
#[derive(Debug, Clone)]
pub struct FwNetwork {
    pub bridge: String,
    pub subnet: Subnet,
    pub internal: bool,
    pub isolate_host: bool,
}

/// One published port: host `host_ip:host_port` → `ip:port`.
#[derive(Debug, Clone)]
pub struct FwPort {
    pub proto: String,
    /// None (0.0.0.0): every local address.
    pub host_ip: Option<Ipv4Addr>,
    pub host_port: u16,
    pub ip: Ipv4Addr,
    pub port: u16,
}

fn q(name: &str) -> String {
    format!("\"{name}\"")
}

/// The nft script that replaces table `inet <table>` (deletes it when there
/// is nothing to enforce).
pub fn render(table: &str, nets: &[FwNetwork], ports: &[FwPort]) -> String {
    let mut s = format!("table inet {table} {{}}\ndelete table inet {table}\n");
    if nets.is_empty() {
        return s;
    }
    let mut fwd = String::new();
    let mut input = String::new();
    let mut post = String::new();
    for n in nets {
        let b = q(&n.bridge);
        fwd.push_str(&format!("    iifname {b} oifname {b} accept\n"));
        // Nothing enters a bridge from elsewhere except replies and
        // published ports (accepted above): this isolates networks.
        fwd.push_str(&format!("    oifname {b} drop\n"));
        if n.internal {
            fwd.push_str(&format!("    iifname {b} drop\n"));
        } else {
            post.push_str(&format!(
                "    ip saddr {} oifname != {b} masquerade\n",
                n.subnet
            ));
        }
        // Published ports reached from 127.0.0.1 (route_localnet) or from a
        // container of the same network need a source the target answers.
        post.push_str(&format!(
            "    oifname {b} ip saddr 127.0.0.0/8 masquerade\n"
        ));
        post.push_str(&format!(
            "    oifname {b} ip saddr {} ct status dnat masquerade\n",
            n.subnet
        ));
        if n.isolate_host {
            input.push_str(&format!(
                "    iifname {b} ct state established,related accept\n    iifname {b} drop\n"
            ));
        }
    }
    let (mut by_ip, mut any) = (Vec::new(), Vec::new());
    for p in ports {
        match element(p) {
            Ok((true, e)) => by_ip.push(e),
            Ok((false, e)) => any.push(e),
            // Refused at attach (see `check_port`): never in the records.
            Err(_) => {}
        }
    }
    let elements = |v: &[String]| {
        if v.is_empty() {
            String::new()
        } else {
            format!(" elements = {{ {} }};", v.join(", "))
        }
    };
    // Published ports are map elements: one lookup per new connection, and
    // a container's ports come and go as element deltas. Loopback-bound
    // ports never match in prerouting (only the host's own output).
    let maps = format!(
        "  map {MAP_IP} {{ type ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;{} }}\n\
         \x20 map {MAP_ANY} {{ type inet_proto . inet_service : ipv4_addr . inet_service;{} }}\n",
        elements(&by_ip),
        elements(&any)
    );
    let dnat = format!(
        "    ip daddr != 127.0.0.0/8 dnat ip to ip daddr . meta l4proto . th dport map @{MAP_IP}\n\
         \x20   fib daddr type local dnat ip to meta l4proto . th dport map @{MAP_ANY}\n"
    );
    let dnat_out = format!(
        "    dnat ip to ip daddr . meta l4proto . th dport map @{MAP_IP}\n\
         \x20   fib daddr type local dnat ip to meta l4proto . th dport map @{MAP_ANY}\n"
    );
    s.push_str(&format!(
        "table inet {table} {{\n{maps}\
         \x20 chain forward {{\n    type filter hook forward priority filter; policy accept;\n\
         \x20   ct state established,related accept\n    ct status dnat accept\n{fwd}  }}\n\
         \x20 chain input {{\n    type filter hook input priority filter; policy accept;\n{input}  }}\n\
         \x20 chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{dnat}  }}\n\
         \x20 chain output {{\n    type nat hook output priority -100; policy accept;\n{dnat_out}  }}\n\
         \x20 chain postrouting {{\n    type nat hook postrouting priority srcnat; policy accept;\n{post}  }}\n\
         }}\n"
    ));
    s
}

/// The DNAT map of ports bound to one host address, and of ports bound to
/// every local address (0.0.0.0).
pub const MAP_IP: &str = "ports_ip";
pub const MAP_ANY: &str = "ports_any";

/// Refuses what cannot be an nft element (the protocol is user input).
pub fn check_port(p: &FwPort) -> Result<()> {
    if p.proto != "tcp" && p.proto != "udp" {
        return Err(NetError::Invalid(format!(
            "port protocol {:?}: use tcp or udp",
            p.proto
        )));
    }
    Ok(())
}

/// (in the by-address map?, element text).
fn element(p: &FwPort) -> Result<(bool, String)> {
    check_port(p)?;
    Ok(match p.host_ip {
        Some(ip) => (
            true,
            format!(
                "{ip} . {} . {} : {} . {}",
                p.proto, p.host_port, p.ip, p.port
            ),
        ),
        None => (
            false,
            format!("{} . {} : {} . {}", p.proto, p.host_port, p.ip, p.port),
        ),
    })
}

/// The nft script that adds (or deletes) one container's published ports
/// as elements of the table's DNAT maps: one small transaction, all or
/// nothing.
pub fn port_delta(table: &str, add: bool, ports: &[FwPort]) -> Result<String> {
    let mut s = String::new();
    for p in ports {
        let (by_ip, e) = element(p)?;
        let map = if by_ip { MAP_IP } else { MAP_ANY };
        if add {
            s.push_str(&format!("add element inet {table} {map} {{ {e} }}\n"));
        } else {
            // Deleting needs the key only.
            let key = e.split(" : ").next().unwrap_or(&e);
            s.push_str(&format!("delete element inet {table} {map} {{ {key} }}\n"));
        }
    }
    Ok(s)
}

/// Runs `nft -f -` with `script`.
pub fn apply(script: &str) -> Result<()> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| NetError::Nft(format!("run nft: {e} (install the nftables package)")))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NetError::Nft(format!("write rules to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::Nft(format!("wait for nft: {e}")))?;
    if !out.status.success() {
        return Err(NetError::Nft(format!(
            "nft -f - failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// Number of rules in `inet <table>` (0 if absent), via `nft -j`.
pub fn rule_count(table: &str) -> Result<usize> {
    Ok(count(table)?.0)
}

/// Number of DNAT map elements (published ports) in `inet <table>`.
pub fn port_count(table: &str) -> Result<usize> {
    Ok(count(table)?.1)
}

fn count(table: &str) -> Result<(usize, usize)> {
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", table])
        .output()
        .map_err(|e| NetError::Nft(format!("run nft: {e}")))?;
    if !out.status.success() {
        return Ok((0, 0));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| NetError::Nft(format!("parse nft -j output: {e}")))?;
    let objs = v["nftables"].as_array().cloned().unwrap_or_default();
    let rules = objs.iter().filter(|o| o.get("rule").is_some()).count();
    let elems = objs
        .iter()
        .filter_map(|o| o.get("map")?.get("elem")?.as_array().map(Vec::len))
        .sum();
    Ok((rules, elems))
}

/// Sets a per-interface IPv4 sysctl (e.g. route_localnet on a bridge).
pub fn set_if_sysctl(ifname: &str, key: &str, value: &str) -> Result<()> {
    let p = format!("/proc/sys/net/ipv4/conf/{ifname}/{key}");
    std::fs::write(&p, value).map_err(|e| NetError::io(format!("write {p}"), e))
}

/// Enables IPv4 forwarding (needed for egress through masquerade and for
/// published ports reached from other containers), as Docker does.
pub fn enable_forwarding() -> Result<()> {
    let p = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(p)
        .map(|v| v.trim() == "1")
        .unwrap_or(false)
    {
        return Ok(());
    }
    std::fs::write(p, "1").map_err(|e| NetError::io(format!("write {p}"), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_is_valid_nft() {
        let nets = vec![
            FwNetwork {
                bridge: "cbtx1".into(),
                subnet: "10.213.250.0/24".parse().unwrap(),
                internal: false,
                isolate_host: true,
            },
            FwNetwork {
                bridge: "cbtx2".into(),
                subnet: "10.213.251.0/24".parse().unwrap(),
                internal: true,
                isolate_host: false,
            },
        ];
        let ports = vec![
            FwPort {
                proto: "tcp".into(),
                host_ip: Some(Ipv4Addr::LOCALHOST),
                host_port: 18080,
                ip: "10.213.250.2".parse().unwrap(),
                port: 80,
            },
            FwPort {
                proto: "udp".into(),
                host_ip: None,
                host_port: 18081,
                ip: "10.213.250.2".parse().unwrap(),
                port: 53,
            },
        ];
        let script = render("cubby-unit-check", &nets, &ports);
        // `nft -c` checks without applying anything.
        let mut child = Command::new("nft")
            .args(["-c", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nft must be installed (apt-get install nftables)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{script}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
