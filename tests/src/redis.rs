//! Real `redis-server` processes on loopback: one, a Cluster, a primary with a replica
//! and a Sentinel; each killed on drop.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use crate::{eventually, free_port, run, system, text};

/// A real `redis-server` on a free loopback port, without persistence; killed on drop.
/// [`Redis::start_tls`] gives one that speaks only TLS and wants a password.
#[derive(Debug)]
pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    /// (directory with cert.pem and key.pem, password)
    tls: Option<(PathBuf, String)>,
}

impl Redis {
    pub fn start() -> Redis {
        Self::launch(None)
    }

    /// A TLS-only Redis with a self-signed certificate (made with openssl in `dir`) and a
    /// password.
    pub fn start_tls(dir: &Path, password: &str) -> Redis {
        let mut cmd = system("openssl");
        cmd.args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "1",
        ]);
        cmd.args(["-subj", "/CN=127.0.0.1", "-keyout"])
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"));
        assert!(
            run(&mut cmd).status.success(),
            "openssl could not make a certificate"
        );
        Self::launch(Some((dir.to_owned(), password.to_owned())))
    }

    fn launch(tls: Option<(PathBuf, String)>) -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut redis = Redis {
            child: None,
            port,
            tls,
        };
        redis.restart();
        redis
    }

    /// The URL servers use to reach it (`#insecure`: the test certificate is self-signed).
    pub fn url(&self) -> String {
        match &self.tls {
            None => format!("redis://127.0.0.1:{}/0", self.port),
            Some((_, password)) => {
                format!("rediss://:{password}@127.0.0.1:{}/0#insecure", self.port)
            }
        }
    }

    /// Freezes it (SIGSTOP): it holds its connections and answers nothing.
    pub fn freeze(&self) {
        self.send("-STOP");
    }

    /// Thaws a frozen Redis (SIGCONT): what it was sent meanwhile applies now.
    pub fn thaw(&self) {
        self.send("-CONT");
    }

    fn send(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        run(Command::new("kill").args([signal, &pid]));
    }

    /// Stops it (SIGKILL), as an outage would.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and waits until it answers PING.
    pub fn restart(&mut self) {
        self.stop();
        let port = self.port.to_string();
        let mut cmd = system("redis-server");
        cmd.current_dir(std::env::temp_dir());
        cmd.args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]);
        match &self.tls {
            None => cmd.args(["--port", &port]),
            Some((dir, password)) => {
                cmd.args([
                    "--port",
                    "0",
                    "--tls-port",
                    &port,
                    "--tls-auth-clients",
                    "no",
                    "--requirepass",
                    password,
                ]);
                cmd.arg("--tls-cert-file")
                    .arg(dir.join("cert.pem"))
                    .arg("--tls-key-file")
                    .arg(dir.join("key.pem"));
                cmd.arg("--tls-ca-cert-file").arg(dir.join("cert.pem"))
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        assert!(
            eventually(10, || self.pings()),
            "redis-server did not start on port {port}"
        );
    }

    fn pings(&self) -> bool {
        let mut cli = system("redis-cli");
        cli.args(["-p", &self.port.to_string()]);
        if let Some((_, password)) = &self.tls {
            cli.args(["--tls", "--insecure", "--no-auth-warning", "-a", password]);
        }
        text(&run(cli.arg("PING")).stdout).trim() == "PONG"
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let mut cli = system("redis-cli");
    cli.args(["-p", &port.to_string()]).args(args);
    text(&run(&mut cli).stdout)
}

/// Spawns `redis-server ARGS` quietly; the caller kills it.
/// It runs in the temporary directory: replication writes an RDB file there even
/// without persistence, never into the source tree.
fn redis_server(args: &[&str]) -> Child {
    system("redis-server")
        .current_dir(std::env::temp_dir())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// A Redis Cluster of three primaries on loopback, without persistence; killed on drop.
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<Child>,
    pub ports: Vec<u16>,
    _dir: TempDir,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
        let nodes = ports
            .iter()
            .map(|port| {
                let conf = dir.path().join(format!("nodes-{port}.conf"));
                redis_server(&[
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    conf.to_str().unwrap(),
                    "--dir",
                    dir.path().to_str().unwrap(),
                ])
            })
            .collect();
        let cluster = RedisCluster {
            nodes,
            ports,
            _dir: dir,
        };
        for &port in &cluster.ports {
            assert!(
                eventually(10, || redis_cli(port, &["PING"]).trim() == "PONG"),
                "node {port} did not start"
            );
        }
        let mut create = system("redis-cli");
        create.args(["--cluster", "create"]);
        create.args(cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")));
        create.args(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = run(&mut create);
        assert!(
            out.status.success(),
            "redis-cli --cluster create: {}",
            text(&out.stderr)
        );
        for &port in &cluster.ports {
            assert!(
                eventually(20, || redis_cli(port, &["CLUSTER", "INFO"])
                    .contains("cluster_state:ok")),
                "the cluster did not come up"
            );
        }
        cluster
    }

    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

/// A Redis primary, one replica and one Sentinel (quorum 1) on loopback; killed on drop.
#[derive(Debug)]
pub struct RedisSentinel {
    children: Vec<Child>,
    pub primary: u16,
    pub replica: u16,
    pub sentinel: u16,
    _dir: TempDir,
}

impl RedisSentinel {
    pub const SERVICE: &'static str = "cmdchan-test";

    pub fn start() -> RedisSentinel {
        let dir = tempfile::tempdir().unwrap();
        let (primary, replica, sentinel) = (free_port(), free_port(), free_port());
        let base = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"];
        let p = primary.to_string();
        let mut children = vec![redis_server(&[&["--port", &p][..], &base[..]].concat())];
        assert!(eventually(10, || redis_cli(primary, &["PING"]).trim() == "PONG"));
        let r = replica.to_string();
        children.push(redis_server(
            &[
                &["--port", &r, "--replicaof", "127.0.0.1", &p][..],
                &base[..],
            ]
            .concat(),
        ));
        assert!(
            eventually(20, || redis_cli(replica, &["INFO", "replication"])
                .contains("master_link_status:up")),
            "the replica did not sync"
        );
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {sentinel}\nbind 127.0.0.1\nsentinel monitor {s} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {s} 1000\nsentinel failover-timeout {s} 5000\n",
                s = Self::SERVICE
            ),
        )
        .unwrap();
        children.push(redis_server(&[conf.to_str().unwrap(), "--sentinel"]));
        let s = RedisSentinel {
            children,
            primary,
            replica,
            sentinel,
            _dir: dir,
        };
        assert!(
            eventually(20, || s.primary_port() == Some(primary)),
            "the sentinel does not know the primary"
        );
        assert!(
            eventually(20, || redis_cli(
                sentinel,
                &["SENTINEL", "REPLICAS", Self::SERVICE]
            )
            .contains(&r)),
            "the sentinel does not know the replica"
        );
        s
    }

    /// Freezes the replica (SIGSTOP): the primary's writes are acknowledged by none.
    pub fn freeze_replica(&self) {
        run(Command::new("kill").args(["-STOP", &self.children[1].id().to_string()]));
    }

    pub fn thaw_replica(&self) {
        run(Command::new("kill").args(["-CONT", &self.children[1].id().to_string()]));
    }

    /// The port of the primary as the Sentinel names it now.
    pub fn primary_port(&self) -> Option<u16> {
        let out = redis_cli(
            self.sentinel,
            &["SENTINEL", "get-master-addr-by-name", Self::SERVICE],
        );
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// Makes the replica the primary (`SENTINEL FAILOVER`) and waits until it is.
    pub fn failover(&self) {
        // The Sentinel refuses (NOGOODSLAVE, INPROG) until it has seen the replica in
        // sync and after a recent failover; ask again until it happens.
        let done = || {
            self.primary_port() == Some(self.replica)
                && redis_cli(self.replica, &["ROLE"]).starts_with("master")
        };
        let happened = eventually(60, || {
            if !done() {
                redis_cli(self.sentinel, &["SENTINEL", "FAILOVER", Self::SERVICE]);
                std::thread::sleep(Duration::from_millis(500));
            }
            done()
        });
        assert!(happened, "the failover did not happen");
    }

    pub fn url(&self) -> String {
        format!(
            "redis+sentinel://127.0.0.1:{}/{}",
            self.sentinel,
            Self::SERVICE
        )
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
