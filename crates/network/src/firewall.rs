//! nftables rules in cubby's own table (`inet <table>`, default `cubby`);
//! no other table is read or written.
//!
//! The whole table is rendered from the store's records and replaced in one
//! `nft -f -` transaction (add-if-missing, delete, recreate). That makes
//! every apply a reconcile: a rule for a removed network or container
//! cannot survive, and a crash between two applies leaves the previous,
//! consistent table.

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
    let mut dnat = String::new();
    let mut dnat_out = String::new();
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
    for p in ports {
        let m = match p.host_ip {
            Some(ip) => format!("ip daddr {ip}"),
            None => "fib daddr type local".into(),
        };
        let rule = format!(
            "    {m} {} dport {} dnat ip to {}:{}\n",
            p.proto, p.host_port, p.ip, p.port
        );
        // Loopback never arrives from outside: only the host's own output.
        if !p.host_ip.is_some_and(|ip| ip.is_loopback()) {
            dnat.push_str(&rule);
        }
        dnat_out.push_str(&rule);
    }
    s.push_str(&format!(
        "table inet {table} {{\n\
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
    let out = Command::new("nft")
        .args(["-j", "list", "table", "inet", table])
        .output()
        .map_err(|e| NetError::Nft(format!("run nft: {e}")))?;
    if !out.status.success() {
        return Ok(0);
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| NetError::Nft(format!("parse nft -j output: {e}")))?;
    Ok(v["nftables"]
        .as_array()
        .map(|a| a.iter().filter(|o| o.get("rule").is_some()).count())
        .unwrap_or(0))
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
