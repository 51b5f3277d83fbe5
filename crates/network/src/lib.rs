//! cubby-network: container networking for the cubby engine.
//!
//! One module per concern: `netlink` (links, veth, bridges, addresses,
//! routes), `netns` (named, bind-mounted network namespaces), `ipam`
//! (crash-safe address allocation), `firewall` (cubby's own nftables
//! table), `files` (hosts/resolv.conf/hostname) and `store` (networks on
//! disk and the operations that tie the rest together).

pub mod error;
pub mod files;
pub mod firewall;
pub mod ipam;
pub mod netlink;
pub mod netns;
pub mod store;

pub use error::{NetError, Result};
pub use store::{
    AttachReq, CreateOpts, Endpoint, NetConfig, Network, NetworkStore, PortMap, DEFAULT_NETWORK,
};
