//! A private PostgreSQL 15 cluster for one test process: initdb + pg_ctl as
//! user postgres, on 127.0.0.1 and a free port, removed on drop. Fails with
//! the reason when Debian's postgresql is not installed.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct Postgres {
    dir: PathBuf,
    pub port: u16,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Postgres {
    pub fn start() -> Postgres {
        assert!(
            Path::new(PG_BIN).join("initdb").exists(),
            "these tests need PostgreSQL 15 at {PG_BIN}: apt-get install postgresql"
        );
        let dir =
            std::env::temp_dir().join(format!("cubby-pg-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        run("chown", Command::new("chown").arg("postgres").arg(&dir));
        let data = dir.join("data");
        run(
            "initdb",
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(format!("{PG_BIN}/initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-A", "trust", "-U", "cubby", "--no-sync"]),
        );
        let port = free_port();
        run(
            "pg_ctl start",
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(format!("{PG_BIN}/pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(dir.join("log"))
                .arg("-o")
                .arg(format!(
                    "-c listen_addresses=127.0.0.1 -p {port} -k {} -c fsync=off -c max_connections=200",
                    dir.display()
                ))
                .args(["-w", "start"]),
        );
        Postgres { dir, port }
    }

    /// A fresh database in the cluster; returns its URL.
    pub fn database(&self, name: &str) -> String {
        run(
            "createdb",
            Command::new(format!("{PG_BIN}/createdb")).args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "cubby",
                name,
            ]),
        );
        format!("postgres://cubby@127.0.0.1:{}/{name}", self.port)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(format!("{PG_BIN}/pg_ctl"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
