//! `cubby network ...`, `cubby port` and the `-p`/`--network-alias` parts
//! of `cubby run`, through the daemon (networks exist only there).

use super::http::{enc, Client};
use crate::table::Table;
use anyhow::{bail, Context, Result};
use bollard_stubs::models::{
    EndpointSettings, Ipam, IpamConfig, NetworkConnectRequest, NetworkCreateRequest,
    NetworkDisconnectRequest, NetworkingConfig, PortBinding,
};
use hyper::Method;
use serde_json::Value;
use std::collections::HashMap;

/// Docker's `-p` forms: `CTR`, `HOST:CTR`, `IP:HOST:CTR`, `IP::CTR`, each
/// with an optional `/tcp` or `/udp`. Returns (`CTR/proto`, binding).
pub fn parse_publish(s: &str) -> Result<(String, PortBinding)> {
    let bad = |why: &str| {
        anyhow::anyhow!(
            "invalid -p {s:?}: {why}; use [IP:]HOST:CTR[/tcp|udp], e.g. -p 127.0.0.1:8080:80"
        )
    };
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, p)) if p == "tcp" || p == "udp" => (a, p),
        Some(_) => return Err(bad("the protocol must be tcp or udp")),
        None => (s, "tcp"),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => ("", "", *c),
        [h, c] => ("", *h, *c),
        [i, h, c] => (*i, *h, *c),
        _ => return Err(bad("too many ':'")),
    };
    let port = |p: &str, what: &str| -> Result<()> {
        match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(()),
            _ => Err(bad(&format!("{what} port {p:?} is not a number 1-65535"))),
        }
    };
    port(ctr, "container")?;
    if !host.is_empty() {
        port(host, "host")?;
    }
    if !ip.is_empty() && ip.parse::<std::net::Ipv4Addr>().is_err() {
        return Err(bad(&format!("host address {ip:?} is not an IPv4 address")));
    }
    Ok((
        format!("{ctr}/{proto}"),
        PortBinding {
            host_ip: Some(ip.to_string()),
            host_port: Some(host.to_string()),
        },
    ))
}

/// HostConfig.PortBindings.
pub type PortMap = HashMap<String, Option<Vec<PortBinding>>>;
/// Config.ExposedPorts (values are empty objects).
pub type ExposedPorts = HashMap<String, HashMap<(), ()>>;

/// HostConfig.PortBindings and Config.ExposedPorts for `-p` flags.
pub fn port_bindings(publish: &[String]) -> Result<(Option<PortMap>, Option<ExposedPorts>)> {
    if publish.is_empty() {
        return Ok((None, None));
    }
    let mut map: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in publish {
        let (key, b) = parse_publish(p)?;
        map.entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(b);
    }
    let exposed = map.keys().map(|k| (k.clone(), HashMap::new())).collect();
    Ok((Some(map), Some(exposed)))
}

/// NetworkingConfig carrying `--network-alias` for the run's network.
pub fn networking_config(network: Option<&str>, aliases: &[String]) -> Option<NetworkingConfig> {
    if aliases.is_empty() {
        return None;
    }
    let net = network.unwrap_or("bridge").to_string();
    Some(NetworkingConfig {
        endpoints_config: Some(HashMap::from([(
            net,
            EndpointSettings {
                aliases: Some(aliases.to_vec()),
                ..Default::default()
            },
        )])),
    })
}

/// `cubby network ...`.
#[derive(clap::Subcommand, Debug)]
pub enum NetworkCmd {
    /// Create a bridge network.
    Create {
        /// IPv4 subnet in CIDR form (default: a free /24).
        #[arg(long, value_name = "CIDR")]
        subnet: Option<String>,
        /// The bridge's address (default: the subnet's first).
        #[arg(long, value_name = "IP")]
        gateway: Option<String>,
        /// No route out: containers reach only each other.
        #[arg(long)]
        internal: bool,
        /// Containers may not reach the host's own addresses.
        #[arg(long = "isolate-host")]
        isolate_host: bool,
        #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
        label: Vec<String>,
        name: String,
    },
    /// List networks.
    Ls {
        #[arg(short, long)]
        quiet: bool,
    },
    /// Show networks as JSON.
    Inspect {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove networks (none may have containers).
    Rm {
        #[arg(required = true)]
        networks: Vec<String>,
    },
    /// Remove every user-defined network without containers.
    Prune,
    /// Connect a container to a network.
    Connect {
        #[arg(long = "alias", value_name = "NAME")]
        alias: Vec<String>,
        #[arg(long, value_name = "IP")]
        ip: Option<String>,
        network: String,
        container: String,
    },
    /// Disconnect a container from a network.
    Disconnect {
        #[arg(short, long)]
        force: bool,
        network: String,
        container: String,
    },
}

pub async fn network(c: &Client, cmd: &NetworkCmd) -> Result<i32> {
    match cmd {
        NetworkCmd::Create {
            subnet,
            gateway,
            internal,
            isolate_host,
            label,
            name,
        } => {
            let mut labels = HashMap::new();
            for l in label {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                if k.is_empty() {
                    bail!("invalid --label {l:?}: use KEY=VALUE, e.g. -l class=os101");
                }
                labels.insert(k.to_string(), v.to_string());
            }
            let mut options = HashMap::new();
            if *isolate_host {
                options.insert("cubby.isolate_host".to_string(), "true".to_string());
            }
            let body = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                internal: Some(*internal),
                ipam: Some(Ipam {
                    config: Some(vec![IpamConfig {
                        subnet: subnet.clone(),
                        gateway: gateway.clone(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                }),
                options: Some(options),
                labels: Some(labels),
                ..Default::default()
            };
            let v: Value = c
                .json(
                    Method::POST,
                    "/networks/create",
                    Some(&serde_json::to_value(&body)?),
                )
                .await?;
            println!("{}", v["Id"].as_str().unwrap_or(""));
            Ok(0)
        }
        NetworkCmd::Ls { quiet } => {
            let nets: Vec<Value> = c.json(Method::GET, "/networks", None).await?;
            let mut table = Table::new(&["NETWORK ID", "NAME", "SUBNET", "INTERNAL", "CONTAINERS"]);
            for n in &nets {
                let id = n["Id"].as_str().unwrap_or("");
                let short = id.get(..12).unwrap_or(id);
                if *quiet {
                    println!("{short}");
                    continue;
                }
                table.row(&[
                    short.to_string(),
                    n["Name"].as_str().unwrap_or("").to_string(),
                    n["IPAM"]["Config"][0]["Subnet"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    n["Internal"].as_bool().unwrap_or(false).to_string(),
                    n["Containers"]
                        .as_object()
                        .map_or(0, |m| m.len())
                        .to_string(),
                ]);
            }
            if !*quiet {
                table.print();
            }
            Ok(0)
        }
        NetworkCmd::Inspect { networks } => {
            let mut out = Vec::new();
            for n in networks {
                out.push(
                    c.json::<Value>(Method::GET, &format!("/networks/{}", enc(n)), None)
                        .await?,
                );
            }
            println!("{}", serde_json::to_string_pretty(&Value::Array(out))?);
            Ok(0)
        }
        NetworkCmd::Rm { networks } => {
            let mut code = 0;
            for n in networks {
                match c
                    .call(Method::DELETE, &format!("/networks/{}", enc(n)), None)
                    .await
                {
                    Ok(_) => println!("{n}"),
                    Err(e) => {
                        eprintln!("{e}");
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        NetworkCmd::Prune => {
            let v: Value = c.json(Method::POST, "/networks/prune", None).await?;
            for n in v["NetworksDeleted"].as_array().into_iter().flatten() {
                println!("{}", n.as_str().unwrap_or(""));
            }
            Ok(0)
        }
        NetworkCmd::Connect {
            alias,
            ip,
            network,
            container,
        } => {
            let body = NetworkConnectRequest {
                container: Some(container.clone()),
                endpoint_config: Some(EndpointSettings {
                    aliases: (!alias.is_empty()).then(|| alias.clone()),
                    ipam_config: ip
                        .clone()
                        .map(|ip| bollard_stubs::models::EndpointIpamConfig {
                            ipv4_address: Some(ip),
                            ..Default::default()
                        }),
                    ..Default::default()
                }),
            };
            c.call(
                Method::POST,
                &format!("/networks/{}/connect", enc(network)),
                Some(&serde_json::to_value(&body)?),
            )
            .await?;
            Ok(0)
        }
        NetworkCmd::Disconnect {
            force,
            network,
            container,
        } => {
            let body = NetworkDisconnectRequest {
                container: Some(container.clone()),
                force: Some(*force),
            };
            c.call(
                Method::POST,
                &format!("/networks/{}/disconnect", enc(network)),
                Some(&serde_json::to_value(&body)?),
            )
            .await?;
            Ok(0)
        }
    }
}

/// `cubby port CTR [PORT[/proto]]`, as `docker port`.
pub async fn port(c: &Client, container: &str, which: Option<&str>) -> Result<i32> {
    let v: Value = c
        .json(
            Method::GET,
            &format!("/containers/{}/json", enc(container)),
            None,
        )
        .await?;
    let ports = v["NetworkSettings"]["Ports"]
        .as_object()
        .context("the daemon's inspect answer has no NetworkSettings.Ports")?;
    let want = which.map(|w| {
        if w.contains('/') {
            w.to_string()
        } else {
            format!("{w}/tcp")
        }
    });
    let mut keys: Vec<&String> = ports.keys().collect();
    keys.sort();
    let mut found = false;
    for k in keys {
        if want.as_ref().is_some_and(|w| w != k) {
            continue;
        }
        for b in ports[k].as_array().into_iter().flatten() {
            let addr = format!(
                "{}:{}",
                b["HostIp"].as_str().unwrap_or(""),
                b["HostPort"].as_str().unwrap_or("")
            );
            found = true;
            if want.is_some() {
                println!("{addr}");
            } else {
                println!("{k} -> {addr}");
            }
        }
    }
    if !found {
        if let Some(w) = want {
            bail!("no public port '{w}' published for {container}");
        }
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_forms() {
        let p = |s: &str| {
            let (k, b) = parse_publish(s).unwrap();
            (k, b.host_ip.unwrap(), b.host_port.unwrap())
        };
        assert_eq!(p("80"), ("80/tcp".into(), "".into(), "".into()));
        assert_eq!(p("8080:80"), ("80/tcp".into(), "".into(), "8080".into()));
        assert_eq!(
            p("127.0.0.1:8080:80/udp"),
            ("80/udp".into(), "127.0.0.1".into(), "8080".into())
        );
        assert_eq!(
            p("127.0.0.1::80"),
            ("80/tcp".into(), "127.0.0.1".into(), "".into())
        );
        for bad in [
            "",
            "x:80",
            "1:2:3:4",
            "80/sctp",
            "host:1:80",
            "0:80",
            "70000",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }
}
