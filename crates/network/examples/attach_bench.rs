//! Times what a container's network costs: `prepare` (named netns + hosts
//! files) plus `attach` (veth pair, bridge port, move into the netns,
//! address, default route), N times on one bridge, and prints the median
//! and 90th percentile in ms; then releases everything. Used by
//! bench/network.sh; run as root.
//!
//!   attach_bench [N] [SUBNET] [keep]   (default 50, 10.213.250.0/24)
//!
//! With `keep` the containers stay attached until all N are, as a class
//! of N on one network (then the last attaches cost what a full network
//! costs), and their releases are timed too.

use std::time::Instant;

use cubby_network::{AttachReq, CreateOpts, NetConfig, NetworkStore};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(50);
    let subnet = args.next().unwrap_or_else(|| "10.213.250.0/24".into());
    let keep = args.next().as_deref() == Some("keep");
    let root = tempfile::tempdir()?;
    let mut cfg = NetConfig::new(root.path());
    cfg.netns_dir = root.path().join("netns");
    cfg.ifprefix = "bz".into();
    cfg.table = "cubby-bench".into();
    cfg.default_bridge = "bzdef".into();
    cfg.resolv_conf = "/dev/null".into();
    let store = NetworkStore::open(cfg)?;
    store.create(CreateOpts {
        name: "bench".into(),
        subnet: Some(subnet.parse()?),
        ..Default::default()
    })?;
    let mut total = Vec::new();
    let mut attach_only = Vec::new();
    let mut releases = Vec::new();
    let mut run = || -> Result<(), Box<dyn std::error::Error>> {
        for i in 0..n {
            let id = format!("bench{i}");
            let t0 = Instant::now();
            store.prepare(&id, &id)?;
            let t1 = Instant::now();
            store.attach(
                "bench",
                AttachReq {
                    container_id: id.clone(),
                    container_name: id.clone(),
                    hostname: id.clone(),
                    ..Default::default()
                },
            )?;
            let t2 = Instant::now();
            total.push((t2 - t0).as_secs_f64() * 1000.0);
            attach_only.push((t2 - t1).as_secs_f64() * 1000.0);
            if !keep {
                store.release(&id)?;
            }
        }
        for i in (0..n).filter(|_| keep) {
            let t0 = Instant::now();
            store.release(&format!("bench{i}"))?;
            releases.push(t0.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(())
    };
    let res = run();
    // Clean up whatever happened.
    for i in 0..n {
        let _ = store.release(&format!("bench{i}"));
    }
    let bridge = store.get("bench").map(|n| n.bridge);
    let _ = store.remove("bench");
    if let Ok(b) = bridge {
        let _ = cubby_network::netlink::delete_link(&b);
    }
    let _ = cubby_network::firewall::apply(
        "table inet cubby-bench {}\ndelete table inet cubby-bench\n",
    );
    let _ = cubby_network::netns::unmount_dir(&root.path().join("netns"));
    res?;
    if keep {
        let last = &attach_only[n - n / 10..];
        let sum: f64 = attach_only.iter().sum();
        let rel: f64 = releases.iter().sum();
        println!(
            "kept on one network: attach total {sum:.0} ms, the last tenth {:.2} ms each on average; release total {rel:.0} ms",
            last.iter().sum::<f64>() / last.len().max(1) as f64
        );
    }
    let stats = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        (v[v.len() / 2], v[(v.len() * 9 / 10).min(v.len() - 1)])
    };
    let (m, p90) = stats(&mut total);
    let (am, ap90) = stats(&mut attach_only);
    println!("netns+veth+address+route (prepare+attach), n={n}: median {m:.2} ms, p90 {p90:.2} ms");
    println!(
        "attach only (veth+address+route),          n={n}: median {am:.2} ms, p90 {ap90:.2} ms"
    );
    Ok(())
}
