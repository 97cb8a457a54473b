//! The test harness: a temporary directory with a root key and a zone key, the real `cmdchan-server`
//! and `cmdchan` binaries, servers started on `127.0.0.1:0` with their logs captured, and
//! raw TLS connections for tests that must misbehave.
//!
//! The binaries are the ones cargo builds beside this crate's test executables (the
//! `server` and `client` packages have integration tests, so `cargo test --workspace`
//! builds them first). A missing binary or system tool fails the test loudly.

#![allow(
    clippy::unwrap_used,
    clippy::missing_panics_doc,
    reason = "test harness: a panic is a test failure"
)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cmdchan::{Client, Credential, Options};
use cmdchan_common::keys::Psk;
use cmdchan_common::tls;
use openssl::ssl::Ssl;
use tempfile::TempDir;
use tokio::net::TcpStream;
use tokio_openssl::SslStream;

/// The server ID every test server uses.
pub const SERVER_ID: &str = "test-server";

/// A scratch directory with a root key and the key of zone [`ZONE`], for one test.
#[derive(Debug)]
pub struct TestEnv {
    pub dir: TempDir,
    /// The root key (the admin's).
    pub root: PathBuf,
    /// The key of zone [`ZONE`], generation 1: what the servers get.
    pub zone_key: PathBuf,
}

/// The zone every test server is in.
pub const ZONE: &str = "test";

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root.key");
        let zone_key = dir.path().join("zone.key");
        let env = Self {
            dir,
            root,
            zone_key,
        };
        env.admin_ok(&["init", "--root", env.root.to_str().unwrap()]);
        env.make_zone_key(ZONE, 1, &env.zone_key);
        env
    }

    /// Writes the key of `zone`, `generation`, to `out`.
    pub fn make_zone_key(&self, zone: &str, generation: u64, out: &Path) {
        self.admin_ok(&[
            "zone-key",
            "--root",
            self.root.to_str().unwrap(),
            "--zone",
            zone,
            "--generation",
            &generation.to_string(),
            "--out",
            out.to_str().unwrap(),
            "--force",
        ]);
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `text` to `name` in the scratch directory.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Writes an executable `/bin/sh` script; the policy runs it as a program (no shell
    /// is involved in passing its arguments).
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.write(name, &format!("#!/bin/sh\n{body}\n"));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// Runs `cmdchan-server admin ARGS`.
    pub fn admin(&self, args: &[&str]) -> Output {
        run(Command::new(bin("cmdchan-server")).arg("admin").args(args))
    }

    pub fn admin_ok(&self, args: &[&str]) -> String {
        let out = self.admin(args);
        assert!(
            out.status.success(),
            "admin {args:?} failed: {}",
            text(&out.stderr)
        );
        text(&out.stdout)
    }

    /// Provisions `name` with `role` in zone [`ZONE`] (plus `extra` flags, such as more
    /// `--zone`s) into `NAME.cred`.
    pub fn provision(&self, name: &str, role: &str, extra: &[&str]) -> PathBuf {
        let out = self.path(&format!("{name}.cred"));
        let root = self.root.to_str().unwrap();
        let mut args = vec!["provision", "--root", root, "--name", name, "--role", role];
        if !extra.contains(&"--zone") {
            args.extend(["--zone", ZONE]);
        }
        args.extend(["--out", out.to_str().unwrap(), "--force"]);
        args.extend(extra);
        self.admin_ok(&args);
        out
    }

    /// The sealed PSK identity and hex key of `name` at epoch 0 in zone [`ZONE`], from
    /// `admin psk` (the `IDENTITY:HEXPSK` line standard tools take).
    pub fn psk_pair(&self, name: &str) -> (String, String) {
        self.psk_pair_in(ZONE, name)
    }

    /// [`TestEnv::psk_pair`] in `zone`.
    pub fn psk_pair_in(&self, zone: &str, name: &str) -> (String, String) {
        let line = self.admin_ok(&[
            "psk",
            "--root",
            self.root.to_str().unwrap(),
            "--zone",
            zone,
            "--name",
            name,
        ]);
        let (identity, hex) = line.trim().split_once(':').unwrap();
        (identity.to_owned(), hex.to_owned())
    }

    /// Starts `cmdchan-server serve` on a free loopback port with `extra` flags.
    pub fn start(&self, extra: &[&str]) -> Server {
        Server::spawn(self.serve_command(&[], extra))
    }

    /// Runs `cmdchan-server serve ARGS` to its end (for start-up errors), with the
    /// scratch master key.
    pub fn admin_like_serve(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bin("cmdchan-server"));
        cmd.args([
            "serve",
            "--zone-key",
            self.zone_key.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        run(cmd.args(args))
    }

    /// The command [`TestEnv::start`] runs, behind `wrapper` (such as `faketime -f -5s`).
    pub fn serve_command(&self, wrapper: &[&str], extra: &[&str]) -> Command {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = system(program);
                cmd.args(args).arg(bin("cmdchan-server"));
                cmd
            }
            None => Command::new(bin("cmdchan-server")),
        };
        cmd.args([
            "serve",
            "--zone-key",
            self.zone_key.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ]);
        cmd.args(["--server-id", SERVER_ID]).args(extra);
        if !extra.contains(&"--replay-store") {
            cmd.args([
                "--replay-store",
                &format!("file:{}", self.path("replay").display()),
            ]);
        }
        cmd
    }

    /// Runs the `cmdchan` binary against `server` with credential `cred`.
    pub fn cmdchan(&self, server: &Server, cred: &Path, args: &[&str]) -> Output {
        cmdchan_as(server, SERVER_ID, cred, args)
    }
}

/// Runs the `cmdchan` binary against `server`, addressing it as `server_id`.
pub fn cmdchan_as(server: &Server, server_id: &str, cred: &Path, args: &[&str]) -> Output {
    run(cmdchan_command(server, server_id, cred).args(args))
}

/// The `cmdchan` command with `cred`, `server`'s address and `server_id`, for a test
/// to add its arguments and plumbing to.
pub fn cmdchan_command(server: &Server, server_id: &str, cred: &Path) -> Command {
    let mut cmd = Command::new(bin("cmdchan"));
    cmd.arg("--cred").arg(cred).args([
        "--server",
        &server.addr.to_string(),
        "--server-id",
        server_id,
    ]);
    cmd
}

/// An answer sink that keeps the signs of life a server sent (and drops output).
#[derive(Debug, Clone, Default)]
pub struct Heard(pub Arc<Mutex<Vec<cmdchan::Alive>>>);

impl Heard {
    /// How many signs of life of this kind came.
    pub fn count(&self, kind: cmdchan::Alive) -> usize {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|a| **a == kind)
            .count()
    }
}

impl cmdchan::AnswerSink for Heard {
    async fn output(&mut self, _: cmdchan::Output) {}

    fn alive(&mut self, alive: cmdchan::Alive) {
        self.0.lock().unwrap().push(alive);
    }
}

/// The refusal code of a call, if the server refused it.
pub fn refusal(result: &Result<cmdchan::Reply, cmdchan::Error>) -> Option<cmdchan::ErrorCode> {
    match result {
        Err(cmdchan::Error::Refused(f)) => Some(f.code),
        _ => None,
    }
}

/// How many lines the file `name` of the scratch directory has (0 if it is missing):
/// the count of runs of a program that appends a line each time.
pub fn lines_in(env: &TestEnv, name: &str) -> usize {
    std::fs::read_to_string(env.path(name)).map_or(0, |s| s.lines().count())
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

/// Opens a TLS-PSK connection to `addr` with the credential at `cred`.
pub async fn raw_tls(
    addr: SocketAddr,
    cred: &Path,
) -> Result<SslStream<TcpStream>, openssl::ssl::Error> {
    raw_tls_from("127.0.0.1", addr, cred).await
}

/// As [`raw_tls`], from the loopback address `source`.
pub async fn raw_tls_from(
    source: &str,
    addr: SocketAddr,
    cred: &Path,
) -> Result<SslStream<TcpStream>, openssl::ssl::Error> {
    let cred = std::sync::Arc::new(Credential::load(cred).unwrap());
    let (zone, _) = cred.zone(None).unwrap();
    let ssl = tls::client_ssl(&tls::client_context(cred.clone()).unwrap(), zone).unwrap();
    handshake_from(source, addr, ssl).await
}

/// Opens a TLS-PSK connection with any identity text and key (a wrong key, a forged
/// identity), from the loopback address `source`.
pub async fn raw_tls_fixed(
    source: &str,
    addr: SocketAddr,
    identity: &str,
    psk: &Psk,
) -> Result<SslStream<TcpStream>, openssl::ssl::Error> {
    let ctx = tls::fixed_client_builder(identity, psk).unwrap().build();
    handshake_from(source, addr, Ssl::new(&ctx).unwrap()).await
}

async fn handshake_from(
    source: &str,
    addr: SocketAddr,
    ssl: Ssl,
) -> Result<SslStream<TcpStream>, openssl::ssl::Error> {
    let tcp = tcp_from(source, addr).await.unwrap();
    let mut stream = SslStream::new(ssl, tcp).unwrap();
    std::pin::Pin::new(&mut stream).connect().await?;
    Ok(stream)
}

/// Path of a workspace binary built beside this executable (a test in `target/*/deps`,
/// or a binary such as `soak` in `target/*`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let here = exe.parent().unwrap();
    let candidates = [here.join(name), here.parent().unwrap().join(name)];
    let found = candidates.iter().find(|p| p.exists());
    let hint =
        "build the workspace first (`cargo build --workspace`, or the README's test command)";
    found
        .unwrap_or_else(|| panic!("{name} is missing beside {}: {hint}", exe.display()))
        .clone()
}

/// Runs a system program the tests need; fails loudly if it is not installed.
pub fn system(program: &str) -> Command {
    let found = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false);
    assert!(found, "{program} is not installed: run the README's test command (scripts/test), which installs it");
    Command::new(program)
}

pub fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Rewrites one `key = value` line of a credential file (keeping mode 0600).
pub fn edit_credential(path: &Path, key: &str, value: &str) {
    let body = std::fs::read_to_string(path).unwrap();
    let edited: Vec<String> = body
        .lines()
        .map(|l| {
            if l.starts_with(&format!("{key} =")) {
                format!("{key} = {value}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(path, edited.join("\n") + "\n").unwrap();
}

/// A credential's value for `key`, as written in the file.
pub fn credential_field(path: &Path, key: &str) -> String {
    let body = std::fs::read_to_string(path).unwrap();
    let line = body
        .lines()
        .find(|l| l.starts_with(&format!("{key} =")))
        .unwrap();
    line.split_once(" = ").unwrap().1.to_owned()
}

/// Whether process `pid` is gone (or a zombie waiting for its parent to reap it).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state is the field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z')),
    }
}

/// Polls `check` every 20 ms for up to `secs` seconds.
pub fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    check()
}

/// A TCP proxy to `target` for cutting connections: the first connection it carries is
/// cut at the server's first TLS application-data record (so the request got through
/// but its answer does not); later connections pass untouched.
pub async fn cutting_proxy(target: SocketAddr) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let server = TcpStream::connect(target).await.unwrap();
            tokio::spawn(relay(client, server, std::mem::take(&mut first)));
        }
    });
    addr
}

async fn relay(client: TcpStream, server: TcpStream, cut: bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let upstream =
        tokio::spawn(async move { tokio::io::copy(&mut client_read, &mut server_write).await });
    // Downstream, record by record: header (type, version, length), then the body.
    loop {
        let mut header = [0u8; 5];
        if server_read.read_exact(&mut header).await.is_err() {
            break;
        }
        if cut && header[0] == 0x17 {
            break;
        }
        let mut body = vec![0u8; usize::from(u16::from_be_bytes([header[3], header[4]]))];
        if server_read.read_exact(&mut body).await.is_err() {
            break;
        }
        if client_write.write_all(&header).await.is_err()
            || client_write.write_all(&body).await.is_err()
        {
            break;
        }
    }
    upstream.abort();
}

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

/// A plain TCP connection to `addr` from the loopback address `source` (127.0.0.0/8 is
/// all loopback, so tests can be several sources on one machine).
pub async fn tcp_from(source: &str, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{source}:0").parse().unwrap())?;
    socket.connect(addr).await
}

/// Whether the server closed `tcp` within `within` (rather than holding it open).
pub async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// A small tmpfs mounted for one test (a file system that fills up); unmounted on drop.
/// Mounting needs root, which CI has: without it the test fails, it never skips.
#[derive(Debug)]
pub struct Tmpfs {
    pub dir: PathBuf,
}

impl Tmpfs {
    pub fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        std::fs::create_dir_all(&dir).unwrap();
        let out = run(system("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir));
        assert!(
            out.status.success(),
            "cannot mount a tmpfs at {} (the full-disk tests need root): {}",
            dir.display(),
            text(&out.stderr)
        );
        Tmpfs { dir }
    }

    /// Fills the file system to the last byte with a file named `filler`.
    pub fn fill(&self) {
        let filler = self.dir.join("filler");
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&filler)
            .unwrap();
        let block = vec![0u8; 4096];
        use std::io::Write;
        while file.write_all(&block).is_ok() {}
        // Whatever room is left is smaller than a block: take it byte by byte.
        while file.write_all(&[0]).is_ok() {}
    }

    /// Frees what [`Tmpfs::fill`] took.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.dir.join("filler"));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = run(Command::new("umount").arg("-l").arg(&self.dir));
    }
}

/// A free loopback TCP port (for servers that need one chosen beforehand).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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

/// What a hostile server answers to one request: any bodies it likes, in order.
pub type Answers = Box<dyn Iterator<Item = cmdchan::Body> + Send>;

/// A hostile server: it holds the zone key of [`ZONE`] (a compromised server, or a zone
/// peer), completes real TLS-PSK handshakes with clients of the zone, answers every
/// request with whatever `answer` makes of it, and keeps every frame clients send.
#[derive(Debug)]
pub struct Hostile {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<cmdchan::ClientMsg>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Hostile {
    pub async fn start(
        env: &TestEnv,
        answer: impl Fn(&cmdchan::Request) -> Answers + Send + Sync + 'static,
    ) -> Hostile {
        let key = cmdchan_common::zonekey::load(&env.zone_key).unwrap();
        let ctx = tls::server_context(vec![key], tls::FFDHE3072_PEM, false, |_| None).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(Mutex::new(Vec::new()));
        let (kept, answer) = (Arc::clone(&received), Arc::new(answer));
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (ctx, kept, answer) = (ctx.clone(), Arc::clone(&kept), Arc::clone(&answer));
                tokio::spawn(async move {
                    let _ = tcp.set_nodelay(true);
                    let mut tls = SslStream::new(Ssl::new(&ctx).unwrap(), tcp).unwrap();
                    if std::pin::Pin::new(&mut tls).accept().await.is_err() {
                        return;
                    }
                    let codec = cmdchan_common::frame::MsgCodec::<
                        cmdchan::ClientMsg,
                        cmdchan::Response,
                    >::new(1 << 20);
                    serve_hostile(tokio_util::codec::Framed::new(tls, codec), &kept, &*answer)
                        .await;
                });
            }
        });
        Hostile {
            addr,
            received,
            task,
        }
    }

    /// The bytes of stdin clients sent it.
    pub fn stdin_received(&self) -> Vec<u8> {
        let received = self.received.lock().unwrap();
        received
            .iter()
            .filter_map(|m| match m {
                cmdchan::ClientMsg::Input(input) => Some(input.data.clone()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_hostile<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut io: tokio_util::codec::Framed<
        T,
        cmdchan_common::frame::MsgCodec<cmdchan::ClientMsg, cmdchan::Response>,
    >,
    kept: &Mutex<Vec<cmdchan::ClientMsg>>,
    answer: &(dyn Fn(&cmdchan::Request) -> Answers + Send + Sync),
) {
    use futures::{SinkExt, StreamExt};
    while let Ok(Some(Ok(message))) = tokio::time::timeout(Duration::from_secs(5), io.next()).await
    {
        kept.lock().unwrap().push(message.clone());
        let cmdchan::ClientMsg::Request(request) = message else {
            continue;
        };
        for body in answer(&request) {
            let response = cmdchan::Response {
                counter: request.counter,
                id: request.id,
                body,
            };
            if io.send(&response).await.is_err() {
                return;
            }
        }
    }
}
