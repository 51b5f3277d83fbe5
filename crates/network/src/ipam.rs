//! IPv4 subnets and address allocation. The allocation state of a network
//! lives in its `ipam.json` (written with temp + fsync + rename by the
//! store); this module only decides which address is next.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::NetError;

/// An IPv4 network in CIDR form, host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Subnet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Subnet {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, NetError> {
        if !(8..=30).contains(&prefix) {
            return Err(NetError::Invalid(format!(
                "subnet prefix /{prefix}: use a prefix between /8 and /30"
            )));
        }
        let mask = Self::mask_of(prefix);
        Ok(Subnet {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        })
    }
    fn mask_of(prefix: u8) -> u32 {
        u32::MAX << (32 - u32::from(prefix))
    }
    pub fn network(&self) -> u32 {
        u32::from(self.addr)
    }
    pub fn broadcast(&self) -> u32 {
        self.network() | !Self::mask_of(self.prefix)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & Self::mask_of(self.prefix) == self.network()
    }
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.addr) || other.contains(self.addr)
    }
    /// The first usable address (the conventional gateway).
    pub fn first_host(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.network() + 1)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Subnet {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        let bad = || {
            NetError::Invalid(format!(
                "subnet {s:?}: expected IPv4 CIDR such as 10.20.0.0/24"
            ))
        };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Subnet::new(addr, prefix)
    }
}

impl TryFrom<String> for Subnet {
    type Error = NetError;
    fn try_from(s: String) -> Result<Self, NetError> {
        s.parse()
    }
}

impl From<Subnet> for String {
    fn from(s: Subnet) -> String {
        s.to_string()
    }
}

/// Picks the next free host address after `last` (round robin, so a just
/// released address is not handed out again at once), skipping the network
/// and broadcast addresses, the gateway and everything in `used`.
pub fn next_free(
    subnet: &Subnet,
    gateway: Ipv4Addr,
    used: &BTreeSet<Ipv4Addr>,
    last: Option<Ipv4Addr>,
) -> Option<Ipv4Addr> {
    let (lo, hi) = (subnet.network() + 1, subnet.broadcast() - 1);
    let start = match last {
        Some(l) if subnet.contains(l) && u32::from(l) < hi => u32::from(l) + 1,
        _ => lo,
    };
    let span = hi - lo + 1;
    (0..span)
        .map(|i| lo + (start - lo + i) % span)
        .map(Ipv4Addr::from)
        .find(|ip| *ip != gateway && !used.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let s: Subnet = "10.1.2.3/24".parse().unwrap();
        assert_eq!(s.to_string(), "10.1.2.0/24");
        assert!("10.1.2.0".parse::<Subnet>().is_err());
        assert!("10.1.2.0/31".parse::<Subnet>().is_err());
    }

    #[test]
    fn allocates_round_robin_and_skips_used() {
        let s: Subnet = "10.0.0.0/29".parse().unwrap();
        let gw = s.first_host();
        let mut used = BTreeSet::new();
        let mut last = None;
        for want in [2, 3, 4, 5, 6] {
            let ip = next_free(&s, gw, &used, last).unwrap();
            assert_eq!(ip, Ipv4Addr::new(10, 0, 0, want));
            used.insert(ip);
            last = Some(ip);
        }
        assert_eq!(next_free(&s, gw, &used, last), None);
        used.remove(&Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(
            next_free(&s, gw, &used, last),
            Some(Ipv4Addr::new(10, 0, 0, 3))
        );
    }
}
