//! Where an inventory comes from: a TOML file, what a command prints (`exec:COMMAND`,
//! TOML or Ansible's `--list` JSON, so a dynamic inventory script works unchanged), or
//! DNS SRV records (`srv:NAME[@IP:PORT]`, see `srv`). A source that fails is an error
//! that names it, never an empty or partial fleet.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{ansible, Inventory};

/// How long an inventory command may run.
const EXEC_TIMEOUT: Duration = Duration::from_secs(60);
/// The most an inventory command may print.
const EXEC_OUTPUT: u64 = 64 << 20;

/// One source of servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    File(PathBuf),
    /// A command and its arguments, split on spaces (no shell).
    Exec(Vec<String>),
    /// The SRV records of a DNS name, from a given name server or the system's.
    Srv {
        name: String,
        server: Option<std::net::SocketAddr>,
    },
}

impl std::str::FromStr for Source {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(rest) = text.strip_prefix("srv:") {
            let (name, server) = match rest.split_once('@') {
                Some((name, server)) => {
                    let server = server.parse().map_err(|_| {
                        format!("srv:{rest}: the name server {server:?} is not IP:PORT")
                    })?;
                    (name, Some(server))
                }
                None => (rest, None),
            };
            return match name.is_empty() {
                true => Err("srv: needs a DNS name (srv:_cmdchan._tcp.example.com)".into()),
                false => Ok(Source::Srv {
                    name: name.to_owned(),
                    server,
                }),
            };
        }
        match text.strip_prefix("exec:") {
            Some(command) => {
                let words: Vec<String> = command.split_whitespace().map(str::to_owned).collect();
                match words.is_empty() {
                    true => Err("exec: needs a command (exec:./inventory.py --list)".into()),
                    false => Ok(Source::Exec(words)),
                }
            }
            None => Ok(Source::File(PathBuf::from(text))),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::File(path) => write!(f, "{}", path.display()),
            Source::Exec(words) => write!(f, "exec:{}", words.join(" ")),
            Source::Srv { name, server: None } => write!(f, "srv:{name}"),
            Source::Srv {
                name,
                server: Some(server),
            } => write!(f, "srv:{name}@{server}"),
        }
    }
}

impl Source {
    /// Reads the servers this source gives.
    pub fn load(&self) -> Result<Inventory, String> {
        let name = self.to_string();
        let text = match self {
            Source::File(path) => std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read the inventory {name}: {e}"))?,
            Source::Exec(words) => run(words).map_err(|e| format!("inventory {name}: {e}"))?,
            Source::Srv { name: dns, server } => {
                return srv_hosts(dns, *server, &name).map_err(|e| format!("inventory {name}: {e}"))
            }
        };
        let parsed = match text.trim_start().starts_with('{') {
            true => ansible::parse(&text, &name),
            false => Inventory::parse_from(&text, &name),
        };
        parsed.map_err(|e| format!("inventory {name}: {e}"))
    }
}

/// What `words` prints on stdout (its stderr is the user's); it must exit 0 within
/// [`EXEC_TIMEOUT`] and print at most [`EXEC_OUTPUT`] bytes of UTF-8.
fn run(words: &[String]) -> Result<String, String> {
    let mut child = Command::new(&words[0])
        .args(&words[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let read = (&mut stdout).take(EXEC_OUTPUT + 1).read_to_end(&mut bytes);
        read.map(|_| bytes)
    });
    let deadline = Instant::now() + EXEC_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(|e| e.to_string())? {
            Some(status) => break status,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "ran longer than {}s and was stopped",
                    EXEC_TIMEOUT.as_secs()
                ));
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    };
    let bytes = reader
        .join()
        .map_err(|_| "its output could not be read")?
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err(format!("it failed ({status})"));
    }
    if bytes.len() as u64 > EXEC_OUTPUT {
        return Err(format!("it printed more than {} MiB", EXEC_OUTPUT >> 20));
    }
    String::from_utf8(bytes).map_err(|_| "it printed text that is not UTF-8".into())
}

/// One server per SRV record of `dns`: named by its target host, at the address the
/// answer gives for it (else the host name) and the record's port.
fn srv_hosts(
    dns: &str,
    server: Option<std::net::SocketAddr>,
    source: &str,
) -> Result<Inventory, String> {
    let records = super::srv::lookup(dns, server)?;
    if records.is_empty() {
        return Err("no SRV records".into());
    }
    let mut hosts = Vec::with_capacity(records.len());
    for r in records {
        let name = cmdchan_common::ident::Ident::new(&r.target)
            .map_err(|e| format!("the target {:?} is not a server name: {e}", r.target))?;
        let address = match r.address {
            Some(std::net::IpAddr::V6(ip)) => format!("[{ip}]:{}", r.port),
            Some(ip) => format!("{ip}:{}", r.port),
            None => format!("{}:{}", r.target, r.port),
        };
        hosts.push(super::Host {
            name,
            address,
            zone: None,
            labels: Default::default(),
            source: source.to_owned(),
        });
    }
    Inventory::of_hosts(hosts)
}
