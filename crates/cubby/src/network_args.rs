//! `cubby daemon`'s networking options, and opening the network store.

use anyhow::{Context, Result};
use cubby_network::ipam::Subnet;
use cubby_network::{NetConfig, NetworkStore};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug, Clone)]
pub struct NetArgs {
    /// Subnet of the default network `bridge`.
    #[arg(long, value_name = "CIDR", default_value = "172.30.0.0/16")]
    pub bridge_subnet: String,
    /// Linux bridge of the default network.
    #[arg(long, value_name = "NAME", default_value = "cubby0")]
    pub bridge_name: String,
    /// Networks created without --subnet get a /24 from here.
    #[arg(long, value_name = "CIDR", default_value = "10.231.0.0/16")]
    pub network_pool: String,
    /// Prefix (1-3 characters) of the bridges and veths cubby names; the
    /// reconcile after a crash removes only links with it.
    #[arg(long, value_name = "PREFIX", default_value = "cb")]
    pub net_prefix: String,
    /// cubby's own nftables table (family inet); no other table is touched.
    #[arg(long, value_name = "NAME", default_value = "cubby")]
    pub nft_table: String,
    /// Containers' resolv.conf: this file without loopback nameservers.
    #[arg(long, value_name = "FILE", default_value = "/etc/resolv.conf")]
    pub resolv_conf: PathBuf,
    /// Where containers' network namespaces are mounted (default: `netns`
    /// next to the state dir, /run/cubby/netns).
    #[arg(long, value_name = "DIR")]
    pub netns_dir: Option<PathBuf>,
}

impl NetArgs {
    pub fn config(&self, root: &Path, state_dir: &Path) -> Result<NetConfig> {
        let subnet = |flag: &str, v: &str| -> Result<Subnet> {
            v.parse().with_context(|| format!("--{flag} {v}"))
        };
        let mut c = NetConfig::new(root);
        c.default_subnet = subnet("bridge-subnet", &self.bridge_subnet)?;
        c.auto_pool = subnet("network-pool", &self.network_pool)?;
        c.default_bridge = self.bridge_name.clone();
        c.ifprefix = self.net_prefix.clone();
        c.table = self.nft_table.clone();
        c.resolv_conf = self.resolv_conf.clone();
        c.netns_dir = self
            .netns_dir
            .clone()
            .unwrap_or_else(|| state_dir.with_file_name("netns"));
        Ok(c)
    }

    /// Opens (creating if needed) the store under `<root>/networks`.
    pub fn open(&self, root: &Path, state_dir: &Path) -> Result<NetworkStore> {
        let cfg = self.config(root, state_dir)?;
        let dir = cfg.state_dir.clone();
        NetworkStore::open(cfg)
            .with_context(|| format!("open the network store at {}", dir.display()))
    }
}
