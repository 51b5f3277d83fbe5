//! Times a class's worth of network churn: N containers joined to one
//! network (each `prepare` + `attach`, every `PORTS`-th one with a
//! published port), all alive at once, then all released. Prints the
//! median and p90 of attach and of release in ms, and the totals. Used by
//! bench/network.sh; run as root.
//!
//!   churn_bench [N] [SUBNET] [PORTS]   (default 100, 10.213.248.0/24, 0 = none)

use std::time::Instant;

use cubby_network::{AttachReq, CreateOpts, NetConfig, NetworkStore, PortMap};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let subnet = args.next().unwrap_or_else(|| "10.213.248.0/24".into());
    let every: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(0);
    let root = tempfile::tempdir()?;
    let mut cfg = NetConfig::new(root.path());
    cfg.netns_dir = root.path().join("netns");
    cfg.ifprefix = "bc".into();
    cfg.table = "cubby-churn".into();
    cfg.default_bridge = "bcdef".into();
    cfg.resolv_conf = "/dev/null".into();
    let store = NetworkStore::open(cfg)?;
    store.create(CreateOpts {
        name: "churn".into(),
        subnet: Some(subnet.parse()?),
        ..Default::default()
    })?;
    let mut attach = Vec::new();
    let mut release = Vec::new();
    let (mut t_attach, mut t_release) = (0.0, 0.0);
    let mut run = || -> Result<(), Box<dyn std::error::Error>> {
        let t = Instant::now();
        for i in 0..n {
            let id = format!("churn{i}");
            let t0 = Instant::now();
            store.prepare(&id, &id)?;
            let ports = if every > 0 && i % every == 0 {
                vec![PortMap {
                    proto: "tcp".into(),
                    host_ip: Some(std::net::Ipv4Addr::LOCALHOST),
                    host_port: 41000 + i as u16,
                    port: 80,
                }]
            } else {
                Vec::new()
            };
            store.attach(
                "churn",
                AttachReq {
                    container_id: id.clone(),
                    container_name: id.clone(),
                    hostname: id.clone(),
                    ports,
                    ..Default::default()
                },
            )?;
            attach.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        t_attach = t.elapsed().as_secs_f64();
        let t = Instant::now();
        for i in 0..n {
            let t0 = Instant::now();
            store.release(&format!("churn{i}"))?;
            release.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        t_release = t.elapsed().as_secs_f64();
        Ok(())
    };
    let res = run();
    for i in 0..n {
        let _ = store.release(&format!("churn{i}"));
    }
    let bridge = store.get("churn").map(|n| n.bridge);
    let _ = store.remove("churn");
    if let Ok(b) = bridge {
        let _ = cubby_network::netlink::delete_link(&b);
    }
    let _ = cubby_network::firewall::apply(
        "table inet cubby-churn {}\ndelete table inet cubby-churn\n",
    );
    let _ = cubby_network::netns::unmount_dir(&root.path().join("netns"));
    res?;
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[(v.len() * 9 / 10).min(v.len() - 1)])
    };
    let (am, ap) = stats(&mut attach);
    let (rm, rp) = stats(&mut release);
    let ports = if every > 0 {
        format!("1 in {every} with a published port")
    } else {
        "no ports".into()
    };
    println!("{n} containers on one network ({ports}):");
    println!("  prepare+attach: median {am:.2} ms, p90 {ap:.2} ms, all {t_attach:.2} s");
    println!("  release:        median {rm:.2} ms, p90 {rp:.2} ms, all {t_release:.2} s");
    Ok(())
}
