//! A create body's network endpoint settings, as Docker sends them:
//! `NetworkingConfig.EndpointsConfig` (aliases, `--ip`) and
//! `HostConfig.PortBindings` (`-p`), into [`Endpoint`]s and
//! [`PublishedPort`]s. The engine attaches them (`service/networks.rs`).

use crate::config::{ConfigError, ConfigResult, Endpoint, PublishedPort};
use bollard_stubs::models::{ContainerCreateBody, EndpointSettings, HostConfig};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The body's endpoints, keyed by network name (the CLI calls the
/// default network `default` or ``; those become `bridge`).
pub fn endpoints(body: &ContainerCreateBody) -> ConfigResult<BTreeMap<String, Endpoint>> {
    let mut out = BTreeMap::new();
    let configs = body
        .networking_config
        .as_ref()
        .and_then(|n| n.endpoints_config.clone())
        .unwrap_or_default();
    for (name, ep) in configs {
        let name = match name.as_str() {
            "" | "default" => cubby_network::DEFAULT_NETWORK.to_string(),
            _ => name,
        };
        out.insert(name, endpoint(&ep)?);
    }
    Ok(out)
}

/// One network's settings (also `network connect`'s `EndpointConfig`).
pub fn endpoint(ep: &EndpointSettings) -> ConfigResult<Endpoint> {
    Ok(Endpoint {
        aliases: ep.aliases.clone().unwrap_or_default(),
        ip: requested_ip(ep)?,
    })
}

fn requested_ip(ep: &EndpointSettings) -> ConfigResult<Option<Ipv4Addr>> {
    if let Some(c) = &ep.ipam_config {
        if c.link_local_ips.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(ConfigError::unsupported(
                "--link-local-ip (IPAMConfig.LinkLocalIPs)",
            ));
        }
        if c.ipv6_address.as_deref().is_some_and(|a| !a.is_empty()) {
            return Err(ConfigError::unsupported_because(
                "--ip6 (IPAMConfig.IPv6Address)",
                "its networks are IPv4 only",
            ));
        }
    }
    ep.ipam_config
        .as_ref()
        .and_then(|c| c.ipv4_address.as_deref())
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse()
                .map_err(|_| ConfigError::invalid(format!("invalid IPv4 address {a:?}")))
        })
        .transpose()
}

/// HostConfig.PortBindings (`-p [IP:]HOST:CTR[/proto]`); an empty host
/// port is one the engine picks.
pub fn ports(host: &HostConfig) -> ConfigResult<Vec<PublishedPort>> {
    let mut out = Vec::new();
    for (key, bindings) in host.port_bindings.iter().flatten() {
        let (port, proto) = key.split_once('/').unwrap_or((key.as_str(), "tcp"));
        let port: u16 = port
            .parse()
            .map_err(|_| ConfigError::invalid(format!("invalid container port {key:?}")))?;
        if proto != "tcp" && proto != "udp" {
            return Err(ConfigError::invalid(format!(
                "port {key}: only tcp and udp can be published"
            )));
        }
        for b in bindings.iter().flatten() {
            let host_ip = match b.host_ip.as_deref().unwrap_or("") {
                "" | "0.0.0.0" => None,
                // The CLI adds an IPv6 twin of every binding; cubby is IPv4 only.
                "::" => continue,
                ip => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
                    ConfigError::invalid(format!("invalid host IP {ip:?} in -p (IPv4 only)"))
                })?),
            };
            let host_port = match b.host_port.as_deref().unwrap_or("") {
                "" | "0" => None,
                p => Some(p.parse::<u16>().map_err(|_| {
                    ConfigError::invalid(format!(
                        "invalid host port {p:?}: give one port (ranges are not supported)"
                    ))
                })?),
            };
            out.push(PublishedPort {
                proto: proto.to_string(),
                host_ip,
                host_port,
                port,
            });
        }
    }
    Ok(out)
}
