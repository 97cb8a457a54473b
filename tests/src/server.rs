//! A real `cmdchan-server` process on a free loopback port, its log captured, and the
//! real `cmdchan` command pointed at it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmdchan::{Client, Credential, Options};
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

use crate::{bin, raw_tls, run, SERVER_ID};

/// Runs the `cmdchan` binary against `server`, addressing it as `server_id`.
pub fn cmdchan_as(server: &Server, server_id: &str, cred: &Path, args: &[&str]) -> Output {
    run(cmdchan_command(server, server_id, cred).args(args))
}

/// The `cmdchan` command with `cred`, `server`'s address and `server_id`, for a test
/// to add its arguments and plumbing to.
pub fn cmdchan_command(server: &Server, server_id: &str, cred: &Path) -> Command {
    let mut cmd = Command::new(bin("cmdchan"));
    // The revocation list a client keeps is its test's, not the machine user's.
    if let Some(dir) = cred.parent() {
        cmd.env("XDG_CACHE_HOME", dir.join("cache"));
    }
    cmd.arg("--cred").arg(cred).args([
        "--server",
        &server.addr.to_string(),
        "--server-id",
        server_id,
    ]);
    cmd
}

/// Runs the `cmdchan` binary with `cred` and the servers of `inventory`; the client's
/// cache (the revocation list it keeps) is the credential's own, beside it.
pub fn cmdchan_in(inventory: &Path, cred: &Path, args: &[&str]) -> Output {
    run(Command::new(bin("cmdchan"))
        .env("XDG_CACHE_HOME", cred.with_extension("cache"))
        .arg("--cred")
        .arg(cred)
        .arg("--inventory")
        .arg(inventory)
        .args(args))
}

/// The refusal code of a call, if the server refused it.
pub fn refusal(result: &Result<cmdchan::Reply, cmdchan::Error>) -> Option<cmdchan::ErrorCode> {
    match result {
        Err(cmdchan::Error::Refused(f)) => Some(f.code),
        _ => None,
    }
}

/// A running server; killed when dropped.
#[derive(Debug)]
pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    log: Arc<Mutex<String>>,
}

impl Server {
    /// Spawns `cmd`, waits (at most 20 s) for its "listening on ADDR" line.
    pub fn spawn(mut cmd: Command) -> Server {
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = line.split("listening on ").nth(1) {
                    let _ = tx.send(addr.split_whitespace().next().unwrap_or("").to_owned());
                }
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!("server did not start; its log:\n{}", log.lock().unwrap());
        };
        Server {
            child,
            addr: addr.parse().unwrap(),
            log,
        }
    }

    /// Sends `signal` (like "HUP") to the server.
    pub fn signal(&self, signal: &str) {
        run(Command::new("kill").args([format!("-{signal}"), self.pid().to_string()]));
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The server's resident memory, in KiB, from /proc.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits up to 10 s for `needle` to appear in the log.
    pub fn wait_for_log(&self, needle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// Waits up to 10 s for `count` log lines with `needle`, then returns all such lines.
    /// Server logs arrive through a pipe, so a line may lag behind the response it
    /// belongs to; tests count lines only through this.
    pub fn wait_for_lines(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let lines = self.log_lines(needle);
            if lines.len() >= count || Instant::now() >= deadline {
                return lines;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines that mention `needle`.
    pub fn log_lines(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Kills the server with SIGKILL (no drain, no cleanup) and waits for it to die.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (at most 20 s) for the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        run(Command::new("kill").args(["-TERM", &pid]));
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("server did not exit within 20 s of SIGTERM");
    }

    /// A library client for `cred`, addressing this server.
    pub async fn client(&self, cred: &Path) -> Client {
        let cred = Credential::load(cred).unwrap();
        let opts = Options {
            target: Some(SERVER_ID.parse().unwrap()),
            ..Options::default()
        };
        Client::connect(cred, Some(&self.addr.to_string()), opts)
            .await
            .unwrap()
    }

    /// The address of the metrics endpoint, from the server's log (`--metrics` given).
    pub fn metrics_addr(&self) -> String {
        assert!(self.wait_for_log("metrics at http://"), "{}", self.log());
        let line = self.log_lines("metrics at http://").remove(0);
        let rest = line.split("http://").nth(1).unwrap();
        rest.split('/').next().unwrap().to_owned()
    }

    /// Sends `req` again on a new connection as `cred` (same ID and issue time, the new
    /// connection's first counter), as a client retrying after a lost connection does.
    pub async fn resend(
        &self,
        cred: &Path,
        req: &cmdchan::Request,
    ) -> Result<cmdchan::Reply, cmdchan::Error> {
        let mut client = self.client(cred).await;
        let mut again = req.clone();
        again.counter = 1;
        client.run(&again, |_| {}).await
    }

    /// A TLS connection that speaks raw bytes, authenticated as `cred`.
    pub async fn raw(&self, cred: &Path) -> SslStream<TcpStream> {
        raw_tls(self.addr, cred).await.unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
