//! `cmdchan-bench spawn`: what one program run costs the server, each on a new
//! connection, beside a bare fork-and-exec server measured in the same run: `socat
//! TCP-LISTEN,fork EXEC:/bin/true`, the least a network server that runs a program per
//! connection can do. Each server runs in a cpuacct cgroup of its own (cgroup v1, or its
//! /proc times with its reaped children where there is none), so the programs it starts
//! count. cmdchan runs `/bin/true` from its policy, in cgroup and in subreaper tracking.
//! Exits non-zero when cmdchan's CPU per run passes [`TARGET`] × socat's.

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use cmdchan::{Connector, Credential, Ident, Options};

use crate::contenders::{Keys, Running, Tools, NAME};

/// Target: server CPU per program run at most this many times the fork-and-exec
/// server's.
const TARGET: f64 = 1.2;

pub fn main(runs: usize, rounds: usize) -> anyhow::Result<ExitCode> {
    let tools = Tools::find()?;
    let keys = Keys::provision(&tools)?;
    let policy = keys.dir.path().join("policy.toml");
    std::fs::write(
        &policy,
        "[roles.bench]\ncommands = [\"true\"]\n[commands.true]\nprogram = \"/bin/true\"\n",
    )?;
    let socat = which("socat")?;
    let cred = std::sync::Arc::new(Credential::load(&keys.cred)?);
    let connector = Connector::new(cred)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut contenders = Vec::new();
    for (label, tracking) in [
        ("cmdchan, cgroup", "cgroup"),
        ("cmdchan, subreaper", "subreaper"),
    ] {
        let extra = [
            std::ffi::OsStr::new("--process-tracking"),
            std::ffi::OsStr::new(tracking),
        ];
        let server = Running::cmdchan_with(&tools, &keys, NAME, &policy, &extra)?;
        let account = Account::of(server.pid(), &format!("cmdchan-{}", contenders.len()))?;
        contenders.push((label.to_owned(), Contender::Cmdchan(server), account));
    }
    let port = free_port()?;
    let child = Command::new(&socat)
        .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr"))
        .arg("EXEC:/bin/true")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let account = Account::of(child.id(), "socat")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_for(addr)?;
    contenders.push((
        "socat fork+exec".into(),
        Contender::Socat(child, addr),
        account,
    ));

    println!("server CPU per program run (/bin/true, a new connection each), {runs} runs a round, {rounds} rounds; accounted by {}", contenders[0].2.how());
    println!("| server | round | CPU per run, µs | × fork+exec |");
    println!("|---|---|---|---|");
    let mut medians = Vec::new();
    let mut per_run: Vec<Vec<f64>> = vec![Vec::new(); contenders.len()];
    for round in 1..=rounds {
        let mut this_round = Vec::new();
        for (i, (_, contender, account)) in contenders.iter().enumerate() {
            let before = account.cpu()?;
            for _ in 0..runs {
                contender.run_once(&runtime, &connector)?;
            }
            // The last run's program and its reaping finish after its answer.
            std::thread::sleep(Duration::from_millis(200));
            let used = account.cpu()? - before;
            let each = used / runs as f64;
            per_run[i].push(each);
            this_round.push(each);
        }
        let base = *this_round.last().context("no contender")?;
        for ((name, _, _), each) in contenders.iter().zip(&this_round) {
            println!(
                "| {name} | {round} | {:.0} | {:.2} |",
                each * 1e6,
                each / base
            );
        }
    }
    for values in &mut per_run {
        values.sort_by(f64::total_cmp);
        medians.push(values[values.len() / 2]);
    }
    let base = *medians.last().context("no contender")?;
    let mut met = true;
    for ((name, _, _), median) in contenders.iter().zip(&medians).take(contenders.len() - 1) {
        let ratio = median / base;
        met &= ratio <= TARGET;
        println!(
            "{name}: {:.0} µs of server CPU per run, {ratio:.2}× the fork-and-exec server's {:.0} µs (medians; at most {TARGET}×) — {}",
            median * 1e6,
            base * 1e6,
            if ratio <= TARGET { "met" } else { "MISSED" }
        );
    }
    for (_, contender, account) in contenders {
        contender.stop();
        account.remove();
    }
    match sshd(keys.dir.path(), runs.min(30))? {
        Some(each) => println!(
            "sshd beside them (OpenSSH, key authentication, ForceCommand /bin/true, its default key exchange; {} runs): {:.0} µs of server CPU per run, {:.1}× the fork-and-exec server's",
            runs.min(30),
            each * 1e6,
            each / base
        ),
        None => println!("sshd: not installed (apt-get install openssh-server), so not measured beside them"),
    }
    Ok(if met {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

enum Contender {
    Cmdchan(Running),
    Socat(Child, SocketAddr),
}

impl Contender {
    fn run_once(
        &self,
        runtime: &tokio::runtime::Runtime,
        connector: &Connector,
    ) -> anyhow::Result<()> {
        match self {
            Contender::Cmdchan(server) => runtime.block_on(async {
                let options = Options {
                    target: Some(Ident::new(NAME)?),
                    ..Options::default()
                };
                let addr = server.addr.to_string();
                let mut client = connector.connect(Some(&addr), options).await?;
                let reply = client.call("true", &[]).await?;
                client.close().await;
                match reply {
                    cmdchan::Reply::Exit(info) if info.code == Some(0) => Ok(()),
                    other => bail!("/bin/true answered {other:?}"),
                }
            }),
            Contender::Socat(_, addr) => {
                let mut tcp = TcpStream::connect(addr)?;
                let mut sink = Vec::new();
                tcp.read_to_end(&mut sink)?;
                Ok(())
            }
        }
    }

    fn stop(self) {
        match self {
            Contender::Cmdchan(server) => drop(server),
            Contender::Socat(mut child, _) => {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Where a server's CPU time, its children's included, is read from.
enum Account {
    /// A cpuacct cgroup (v1) of its own: every process it starts, reaped or not.
    Cgroup(PathBuf),
    /// /proc/PID/stat: its own times and those of the children it reaped.
    Proc(u32),
}

impl Account {
    fn of(pid: u32, name: &str) -> anyhow::Result<Account> {
        let dir = Path::new("/sys/fs/cgroup/cpuacct")
            .join(format!("cmdchan-bench-{}-{name}", std::process::id()));
        let joined = std::fs::create_dir(&dir)
            .and_then(|()| std::fs::write(dir.join("cgroup.procs"), pid.to_string()));
        Ok(match joined {
            Ok(()) => Account::Cgroup(dir),
            Err(_) => {
                let _ = std::fs::remove_dir(&dir);
                Account::Proc(pid)
            }
        })
    }

    fn how(&self) -> &'static str {
        match self {
            Account::Cgroup(_) => "a cpuacct cgroup per server",
            Account::Proc(_) => "/proc times with reaped children (no cpuacct cgroup here)",
        }
    }

    /// Seconds of CPU so far.
    fn cpu(&self) -> anyhow::Result<f64> {
        match self {
            Account::Cgroup(dir) => {
                let ns: u64 = std::fs::read_to_string(dir.join("cpuacct.usage"))?
                    .trim()
                    .parse()?;
                Ok(ns as f64 / 1e9)
            }
            Account::Proc(pid) => {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
                let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let mut ticks = 0u64;
                for i in [11, 12, 13, 14] {
                    ticks += fields.get(i).context("short /proc stat")?.parse::<u64>()?;
                }
                Ok(ticks as f64 / 100.0)
            }
        }
    }

    fn remove(self) {
        if let Account::Cgroup(dir) = self {
            // Empty once its processes are gone; give them a moment.
            for _ in 0..50 {
                if std::fs::remove_dir(&dir).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn which(program: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("{program} is not installed (apt-get install {program})"))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn wait_for(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    // A connection made to see it listen runs one /bin/true; it is not measured.
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("socat did not listen on {addr}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// sshd's CPU per `/bin/true` run (each a new connection, key authentication), in a
/// cpuacct cgroup of its own; none if sshd is not installed.
fn sshd(dir: &Path, runs: usize) -> anyhow::Result<Option<f64>> {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.is_file() {
        return Ok(None);
    }
    let keygen = |path: &Path| -> anyhow::Result<()> {
        let status = Command::new(which("ssh-keygen")?)
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(path)
            .status()?;
        if !status.success() {
            bail!("ssh-keygen failed");
        }
        Ok(())
    };
    let (host, user) = (dir.join("ssh_host"), dir.join("ssh_user"));
    keygen(&host)?;
    keygen(&user)?;
    std::fs::copy(dir.join("ssh_user.pub"), dir.join("authorized_keys"))?;
    // The privilege separation directory sshd insists on.
    std::fs::create_dir_all("/run/sshd")?;
    let port = free_port()?;
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             PermitRootLogin yes\nStrictModes no\nUsePAM no\nForceCommand /bin/true\nLogLevel QUIET\n",
            host.display(),
            dir.join("authorized_keys").display(),
            dir.join("sshd.pid").display()
        ),
    )?;
    let mut child = Command::new(sshd)
        .arg("-D")
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let account = Account::of(child.id(), "sshd")?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let measured = (|| {
        wait_for(addr)?;
        let ssh = which("ssh")?;
        let before = account.cpu()?;
        for _ in 0..runs {
            let status = Command::new(&ssh)
                .args(["-q", "-T", "-i"])
                .arg(&user)
                .args(["-p", &port.to_string()])
                .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no"])
                .args([
                    "-o",
                    "UserKnownHostsFile=/dev/null",
                    "root@127.0.0.1",
                    "true",
                ])
                .stdin(Stdio::null())
                .status()?;
            if !status.success() {
                bail!("ssh to the bench's sshd failed ({status})");
            }
        }
        std::thread::sleep(Duration::from_millis(200));
        Ok((account.cpu()? - before) / runs as f64)
    })();
    let _ = child.kill();
    let _ = child.wait();
    account.remove();
    measured.map(Some)
}
