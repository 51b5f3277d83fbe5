//! A host-wide unique networking identity for one test daemon: interface
//! prefix, nft table, default bridge and subnets, so daemons running in
//! parallel (in this and other test binaries) never share kernel objects.
//! Claimed with an O_EXCL lock file naming our pid (a dead owner's claim is
//! taken over); drop removes the daemon's bridges, veths and nft table.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

const LOCKS: &str = "/run/cubby-test-nettags";
const TAGS: u32 = 500;

pub struct NetTag {
    pub index: u32,
    pub prefix: String,
    lock: PathBuf,
}

fn alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

impl NetTag {
    pub fn claim() -> NetTag {
        std::fs::create_dir_all(LOCKS).expect("create the test tag lock dir");
        let me = std::process::id();
        let start = (me * 37) % TAGS;
        for i in 0..TAGS {
            let index = (start + i) % TAGS;
            let lock = PathBuf::from(format!("{LOCKS}/{index}"));
            let stale = std::fs::read_to_string(&lock)
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .is_some_and(|pid| !alive(pid));
            if stale {
                let _ = std::fs::remove_file(&lock);
            }
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                let _ = write!(f, "{me}");
                let digits = b"0123456789abcdefghijklmnopqrstuvwxyz";
                let prefix = format!(
                    "d{}{}",
                    digits[(index / 36) as usize] as char,
                    digits[(index % 36) as usize] as char
                );
                let tag = NetTag {
                    index,
                    prefix,
                    lock,
                };
                tag.cleanup(); // whatever a killed earlier owner left
                return tag;
            }
        }
        panic!("no free test network tag in {LOCKS}: remove stale files there");
    }

    pub fn table(&self) -> String {
        format!("cubby-test-{}", self.prefix)
    }

    pub fn bridge(&self) -> String {
        format!("{}def", self.prefix)
    }

    /// The default network's /24 (10.214.0.0/24 ... 10.215.243.0/24).
    pub fn bridge_subnet(&self) -> String {
        format!("10.{}.{}.0/24", 214 + self.index / 256, self.index % 256)
    }

    /// A /24 for a test's own `--subnet` (i < 4), outside every pool.
    pub fn subnet(&self, i: u32) -> String {
        let n = self.index * 4 + i;
        format!("10.{}.{}.0/24", 216 + n / 256, n % 256)
    }

    /// A /22 of its own for explicit subnets a test's client picks (the
    /// classroom service's `--class-subnets`), outside every pool:
    /// 10.160.0.0/22 ... 10.167.204.0/22.
    pub fn class_range(&self) -> String {
        format!(
            "10.{}.{}.0/22",
            160 + self.index / 64,
            (self.index % 64) * 4
        )
    }

    /// Networks without --subnet come from this /20.
    pub fn pool(&self) -> String {
        format!(
            "10.{}.{}.0/20",
            224 + self.index / 16,
            (self.index % 16) * 16
        )
    }

    pub fn daemon_args(&self) -> Vec<String> {
        [
            "--net-prefix",
            &self.prefix,
            "--nft-table",
            &self.table(),
            "--bridge-name",
            &self.bridge(),
            "--bridge-subnet",
            &self.bridge_subnet(),
            "--network-pool",
            &self.pool(),
            // No nameserver in containers: a failed hosts lookup must not
            // become a DNS query to the host's resolver (network rule).
            "--resolv-conf",
            "/dev/null",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Links (bridges, veths) with our prefix on the host.
    pub fn links(&self) -> Vec<String> {
        cubby_network::netlink::list_links(None)
            .unwrap_or_default()
            .into_iter()
            .filter(|l| l.starts_with(&self.prefix))
            .collect()
    }

    pub fn cleanup(&self) {
        for l in self.links() {
            let _ = cubby_network::netlink::delete_link(&l);
        }
        let t = self.table();
        let _ = cubby_network::firewall::apply(&format!(
            "table inet {t} {{}}\ndelete table inet {t}\n"
        ));
    }
}

impl Drop for NetTag {
    fn drop(&mut self) {
        self.cleanup();
        let _ = std::fs::remove_file(&self.lock);
    }
}
