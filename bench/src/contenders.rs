//! The contenders: finding their programs, keying them, starting and stopping them, and
//! reading their CPU time and memory from /proc.

use std::fs::{self, File};
use std::io::Write;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

use crate::load::Speak;

/// Suites the bench offers, one at a time.
pub const ECDHE: &str = "ECDHE-PSK-CHACHA20-POLY1305";
pub const DHE: &str = "DHE-PSK-AES256-GCM-SHA384";

/// The name the bench's client is provisioned under; also the server ID.
pub const NAME: &str = "bench";

/// Linux reports process CPU times in /proc in USER_HZ units, 100 per second on every
/// architecture it runs on.
const USER_HZ: f64 = 100.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Cmdchan,
    Ceiling,
    Stunnel,
    SServer,
}

impl Kind {
    pub const ALL: [Kind; 4] = [Kind::Cmdchan, Kind::Ceiling, Kind::Stunnel, Kind::SServer];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Cmdchan => "cmdchan",
            Kind::Ceiling => "ceiling",
            Kind::Stunnel => "stunnel4",
            Kind::SServer => "s_server",
        }
    }

    pub fn speaks(self) -> Speak {
        match self {
            Kind::Cmdchan => Speak::Cmdchan,
            _ => Speak::Echo,
        }
    }

    /// openssl s_server serves one connection at a time: a handshake reference only.
    pub fn handshakes_only(self) -> bool {
        self == Kind::SServer
    }
}

/// The programs the bench runs.
#[derive(Debug)]
pub struct Tools {
    /// cmdchan-server, from the same build as this bench.
    pub server: PathBuf,
    /// This program, for the load generator and the echo servers.
    pub me: PathBuf,
    pub stunnel: PathBuf,
    pub openssl: PathBuf,
}

impl Tools {
    /// Finds every program or says how to get it; no contender is skipped silently.
    pub fn find() -> anyhow::Result<Self> {
        let me = std::env::current_exe()?;
        let server = me.with_file_name("cmdchan-server");
        if !server.exists() {
            bail!(
                "{} is missing: build it with the bench (`cargo build --release -p cmdchan-server -p cmdchan-bench`, or run scripts/bench)",
                server.display()
            );
        }
        Ok(Self {
            server,
            me,
            stunnel: on_path("stunnel4", "apt-get install -y stunnel4")?,
            openssl: on_path("openssl", "apt-get install -y openssl")?,
        })
    }
}

fn on_path(program: &str, install: &str) -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{program} is not installed, and the bench compares against it: {install}")
        })
}

/// Keys for every contender, all from one master key: the client's credential, its PSK
/// as hex for stunnel and s_server, and the DH parameters cmdchan uses.
#[derive(Debug)]
pub struct Keys {
    pub dir: TempDir,
    pub zone_key: PathBuf,
    pub cred: PathBuf,
    /// `IDENTITY:HEXPSK`, for contenders keyed with one fixed identity.
    pub psk_secrets: PathBuf,
    psk_hex: String,
    psk_identity: String,
    dh: PathBuf,
}

impl Keys {
    pub fn provision(tools: &Tools) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("cmdchan-bench").tempdir()?;
        let root = dir.path().join("root.key");
        let zone_key = dir.path().join("bench-zone.key");
        let cred = dir.path().join("bench.cred");
        let admin = |args: &[&str]| -> anyhow::Result<String> {
            let out = Command::new(&tools.server)
                .arg("admin")
                .args(args)
                .output()?;
            if !out.status.success() {
                bail!(
                    "cmdchan-server admin {} failed: {}",
                    args.first().unwrap_or(&""),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(String::from_utf8(out.stdout)?)
        };
        let utf8 = |p: &Path| {
            p.to_str()
                .map(str::to_owned)
                .context("temporary path is not UTF-8")
        };
        let (r, z, c) = (utf8(&root)?, utf8(&zone_key)?, utf8(&cred)?);
        admin(&["init", "--root", &r])?;
        admin(&["zone-key", "--root", &r, "--zone", "bench", "--out", &z])?;
        admin(&[
            "provision",
            "--root",
            &r,
            "--zone",
            "bench",
            "--name",
            NAME,
            "--role",
            "bench",
            "--server",
            NAME,
            "--out",
            &c,
        ])?;
        // IDENTITY:HEXPSK, stunnel's PSKsecrets line.
        let line = admin(&["psk", "--root", &r, "--zone", "bench", "--name", NAME])?;
        let line = line.trim().to_owned();
        let (psk_identity, psk_hex) = line
            .split_once(':')
            .map(|(i, k)| (i.to_owned(), k.to_owned()))
            .context("admin psk printed no IDENTITY:HEXPSK")?;
        let psk_secrets = dir.path().join("stunnel.psk");
        write_private(&psk_secrets, &format!("{line}\n"))?;
        let dh = dir.path().join("ffdhe3072.pem");
        fs::write(&dh, cmdchan_common::tls::FFDHE3072_PEM)?;
        Ok(Self {
            dir,
            zone_key,
            cred,
            psk_secrets,
            psk_hex,
            psk_identity,
            dh,
        })
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

/// A started contender: its address and every process that serves it.
#[derive(Debug)]
pub struct Running {
    pub kind: Kind,
    pub addr: SocketAddr,
    procs: Vec<Child>,
    /// Files of this start (logs, replay log, audit), removed on stop.
    dir: TempDir,
}

impl Running {
    pub fn start(kind: Kind, tools: &Tools, keys: &Keys) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(kind.name())
            .tempdir_in(keys.dir.path())?;
        let mut procs = Vec::new();
        let addr = match kind {
            Kind::Cmdchan => {
                let mut cmd = Command::new(&tools.server);
                cmd.arg("serve")
                    .arg("--zone-key")
                    .arg(&keys.zone_key)
                    .args(["--listen", "127.0.0.1:0", "--server-id", NAME])
                    .env_remove("RUST_LOG")
                    .arg("--audit-log")
                    .arg(dir.path().join("audit.log"))
                    .arg("--replay-store")
                    .arg(format!("file:{}", dir.path().join("replay").display()));
                // The bench's one client makes far more than the default 50 requests
                // a second, over up to 1,000 connections from one address.
                cmd.args(["--rate", "10000000", "--burst", "10000000"])
                    // The bench measures DHE-PSK handshakes too, which are opt-in.
                    .arg("--dhe")
                    .args(["--max-connections", "4096"])
                    .args(["--max-connections-per-source", "4096"])
                    // The server remembers each command ID for its freshness window, up
                    // to 1,000,000 by default: at the bench's rates a 60 s window fills
                    // that in seconds (the server then refuses, failing closed), and even
                    // a 5 s one when pipelined requests pass 200,000 a second. A user at
                    // these rates shortens the window and raises the limit the same way.
                    .args(["--freshness-window", "5s"])
                    .args(["--max-remembered-ids", "4000000"]);
                spawn_listening(cmd, &dir.path().join("server.log"), &mut procs)?
            }
            Kind::Ceiling => {
                let mut cmd = Command::new(&tools.me);
                cmd.arg("ceiling").arg("--zone-key").arg(&keys.zone_key);
                spawn_listening(cmd, &dir.path().join("ceiling.log"), &mut procs)?
            }
            Kind::Stunnel => {
                let mut backend = Command::new(&tools.me);
                backend.arg("echo");
                let backend = spawn_listening(backend, &dir.path().join("echo.log"), &mut procs)?;
                let port = free_port()?;
                let conf = dir.path().join("stunnel.conf");
                fs::write(&conf, stunnel_conf(port, backend, keys))?;
                let mut cmd = Command::new(&tools.stunnel);
                cmd.arg(&conf);
                spawn_port(cmd, port, &dir.path().join("stunnel.log"), &mut procs)?
            }
            Kind::SServer => {
                let port = free_port()?;
                let mut cmd = Command::new(&tools.openssl);
                cmd.arg("s_server")
                    .args(["-accept", &format!("127.0.0.1:{port}")])
                    .args(["-nocert", "-tls1_2", "-quiet", "-serverpref"])
                    .args(["-psk", &keys.psk_hex, "-psk_identity", &keys.psk_identity])
                    .args(["-cipher", &format!("{ECDHE}:{DHE}")])
                    .args(["-groups", cmdchan_common::tls::GROUPS])
                    .arg("-dhparam")
                    .arg(&keys.dh);
                spawn_port(cmd, port, &dir.path().join("s_server.log"), &mut procs)?
            }
        };
        Ok(Self {
            kind,
            addr,
            procs,
            dir,
        })
    }

    /// One cmdchan server of a fleet: `server_id`, with `policy`, the durable file store
    /// and the audit file, and limits that let one client address it at any rate.
    pub fn fleet_member(
        tools: &Tools,
        keys: &Keys,
        server_id: &str,
        policy: &Path,
    ) -> anyhow::Result<Self> {
        Self::cmdchan_with(tools, keys, server_id, policy, &[])
    }

    /// As [`Running::fleet_member`], with more options for the server.
    pub fn cmdchan_with(
        tools: &Tools,
        keys: &Keys,
        server_id: &str,
        policy: &Path,
        extra: &[&std::ffi::OsStr],
    ) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix(server_id)
            .tempdir_in(keys.dir.path())?;
        let mut cmd = Command::new(&tools.server);
        cmd.arg("serve")
            .arg("--zone-key")
            .arg(&keys.zone_key)
            .args(["--listen", "127.0.0.1:0", "--server-id", server_id])
            .arg("--policy")
            .arg(policy)
            .arg("--audit-log")
            .arg(dir.path().join("audit.log"))
            .args(["--rate", "10000000", "--burst", "10000000"])
            .args(extra)
            .env_remove("RUST_LOG");
        if !extra.iter().any(|a| *a == "--replay-store") {
            cmd.arg("--replay-store")
                .arg(format!("file:{}", dir.path().join("replay").display()));
        }
        let mut procs = Vec::new();
        let addr = spawn_listening(cmd, &dir.path().join("server.log"), &mut procs)?;
        Ok(Self {
            kind: Kind::Cmdchan,
            addr,
            procs,
            dir,
        })
    }

    /// The contender's main process (the one a profiler watches).
    pub fn pid(&self) -> u32 {
        self.procs.first().map_or(0, Child::id)
    }

    /// CPU time (user + system) used so far by every process of this contender, in s.
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        self.cpu_of(&[11, 12])
    }

    /// As [`Running::cpu_seconds`], with the children its processes waited for (the
    /// programs a server ran).
    pub fn cpu_with_children_seconds(&self) -> anyhow::Result<f64> {
        self.cpu_of(&[11, 12, 13, 14])
    }

    /// The sum of these fields of `/proc/PID/stat` (counted after the command name).
    fn cpu_of(&self, which: &[usize]) -> anyhow::Result<f64> {
        let mut ticks = 0u64;
        for p in &self.procs {
            let stat = fs::read_to_string(format!("/proc/{}/stat", p.id()))?;
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            for &i in which {
                ticks += fields.get(i).context("short /proc stat")?.parse::<u64>()?;
            }
        }
        Ok(ticks as f64 / USER_HZ)
    }

    /// Resident memory of every process of this contender, in KiB.
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let mut total = 0;
        for p in &self.procs {
            let status = fs::read_to_string(format!("/proc/{}/status", p.id()))?;
            let line = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .context("no VmRSS in /proc status")?;
            total += line.trim().trim_end_matches("kB").trim().parse::<u64>()?;
        }
        Ok(total)
    }

    /// The contender's own log, for an error message.
    pub fn logs(&self) -> String {
        let mut all = String::new();
        for entry in fs::read_dir(self.dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log")
                && !path.ends_with("audit.log")
                && !path.ends_with("seen.log")
            {
                let text = fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(20).collect();
                all += &format!("--- {}\n", path.display());
                for line in tail.iter().rev() {
                    all += line;
                    all.push('\n');
                }
            }
        }
        all
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

fn stunnel_conf(port: u16, backend: SocketAddr, keys: &Keys) -> String {
    format!(
        "foreground = yes\n\
         pid =\n\
         debug = 3\n\
         [echo]\n\
         accept = 127.0.0.1:{port}\n\
         connect = {backend}\n\
         PSKsecrets = {secrets}\n\
         sslVersion = TLSv1.2\n\
         ciphers = {ECDHE}:{DHE}\n\
         curves = {groups}\n\
         options = CIPHER_SERVER_PREFERENCE\n\
         socket = l:TCP_NODELAY=1\n\
         socket = r:TCP_NODELAY=1\n",
        secrets = keys.psk_secrets.display(),
        groups = cmdchan_common::tls::GROUPS,
    )
}

/// Starts a program that prints `listening on ADDR` on stderr; returns ADDR.
fn spawn_listening(
    mut cmd: Command,
    log: &Path,
    procs: &mut Vec<Child>,
) -> anyhow::Result<SocketAddr> {
    let child = spawn_logged(&mut cmd, log)?;
    procs.push(child);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = fs::read_to_string(log).unwrap_or_default();
        if let Some(rest) = text.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            return addr
                .parse()
                .with_context(|| format!("bad address {addr:?}"));
        }
        check_alive(procs, log, deadline)?;
    }
}

/// Starts a program that listens on `port` and waits until it accepts.
fn spawn_port(
    mut cmd: Command,
    port: u16,
    log: &Path,
    procs: &mut Vec<Child>,
) -> anyhow::Result<SocketAddr> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    procs.push(spawn_logged(&mut cmd, log)?);
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        check_alive(procs, log, deadline)?;
    }
    Ok(addr)
}

fn spawn_logged(cmd: &mut Command, log: &Path) -> anyhow::Result<Child> {
    let file = File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {cmd:?}"))
}

/// Waits a little; fails if the last process exited or the deadline passed.
fn check_alive(procs: &mut [Child], log: &Path, deadline: Instant) -> anyhow::Result<()> {
    let text = || fs::read_to_string(log).unwrap_or_default();
    if let Some(p) = procs.last_mut() {
        if let Some(status) = p.try_wait()? {
            bail!("it exited ({status}) before it was ready:\n{}", text());
        }
    }
    if Instant::now() > deadline {
        bail!("not ready after 20 s:\n{}", text());
    }
    std::thread::sleep(Duration::from_millis(20));
    Ok(())
}

/// A loopback port nothing listens on now, for the programs that need one named.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
