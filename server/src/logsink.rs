//! The audit events, also where people already read logs: the systemd journal with
//! native fields (`journalctl CMDCHAN_ID=…` finds a run) and RFC 5424 syslog with
//! structured data. The audit file stays the source of truth: a sink is written with
//! one non-blocking datagram per event, and one that is slow, full or gone drops the
//! event (counted, and said in the log once a minute), never holding a request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The journal's socket when none is named.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// The structured-data ID of cmdchan's syslog fields (an enterprise number's place,
/// which a private ID without one may not take: `name@32473` is RFC 5612's example
/// number for documentation).
const SD_ID: &str = "cmdchan@32473";

/// Where audit events go besides stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkSpec {
    /// The journal's native protocol on its socket.
    Journal(PathBuf),
    /// RFC 5424 over UDP to HOST:PORT.
    SyslogUdp(String),
    /// RFC 5424 on a local datagram socket (`/dev/log`).
    SyslogUnix(PathBuf),
}

impl std::str::FromStr for SinkSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        match text.split_once(':') {
            None if text == "journald" => Ok(SinkSpec::Journal(JOURNAL_SOCKET.into())),
            Some(("journald", path)) => Ok(SinkSpec::Journal(path.into())),
            Some(("syslog", rest)) => match rest.split_once("://") {
                Some(("udp", addr)) if addr.contains(':') => Ok(SinkSpec::SyslogUdp(addr.into())),
                Some(("unix", path)) => Ok(SinkSpec::SyslogUnix(path.into())),
                _ => Err(format!(
                    "{text:?}: syslog:udp://HOST:PORT or syslog:unix:///dev/log"
                )),
            },
            _ => Err(format!(
                "{text:?}: journald, journald:SOCKET, syslog:udp://HOST:PORT or syslog:unix://PATH"
            )),
        }
    }
}

impl std::fmt::Display for SinkSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SinkSpec::Journal(path) => write!(f, "journald:{}", path.display()),
            SinkSpec::SyslogUdp(addr) => write!(f, "syslog:udp://{addr}"),
            SinkSpec::SyslogUnix(path) => write!(f, "syslog:unix://{}", path.display()),
        }
    }
}

impl<'de> serde::Deserialize<'de> for SinkSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

enum Socket {
    Unix(UnixDatagram, PathBuf),
    Udp(UdpSocket),
}

/// One sink: its socket (non-blocking) and how to write an event for it.
pub struct Sink {
    spec: SinkSpec,
    socket: Socket,
    host: String,
    dropped: AtomicU64,
    /// When the drops were last said in the log.
    said: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("spec", &self.spec)
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// Opens the socket; an address that cannot be reached now is not an error (the
    /// sink may come later), only a socket that cannot be made.
    pub fn open(spec: SinkSpec) -> std::io::Result<Self> {
        let socket = match &spec {
            SinkSpec::Journal(path) | SinkSpec::SyslogUnix(path) => {
                let socket = UnixDatagram::unbound()?;
                socket.set_nonblocking(true)?;
                Socket::Unix(socket, path.clone())
            }
            SinkSpec::SyslogUdp(addr) => {
                let socket = UdpSocket::bind(if addr.starts_with('[') {
                    "[::]:0"
                } else {
                    "0.0.0.0:0"
                })?;
                socket.set_nonblocking(true)?;
                socket.connect(addr)?;
                Socket::Udp(socket)
            }
        };
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .unwrap_or_else(|| "-".into());
        Ok(Self {
            spec,
            socket,
            host,
            dropped: AtomicU64::new(0),
            said: Mutex::new(None),
        })
    }

    /// Events this sink dropped.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn send(&self, datagram: &[u8]) {
        let sent = match &self.socket {
            Socket::Unix(socket, path) => socket.send_to(datagram, path).map(|_| ()),
            Socket::Udp(socket) => socket.send(datagram).map(|_| ()),
        };
        if sent.is_err() {
            let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            self.say_drops(dropped);
        }
    }

    /// Once a minute at most, on stderr (not through tracing: this is its own layer).
    fn say_drops(&self, dropped: u64) {
        let mut said = cmdchan_common::sync::lock(&self.said);
        if said.is_some_and(|at| at.elapsed() < Duration::from_secs(60)) {
            return;
        }
        *said = Some(Instant::now());
        eprintln!(
            "cmdchan-server: the log sink {} takes no events ({dropped} dropped so far); the audit file has them all",
            self.spec
        );
    }

    fn write(&self, event: &Audited) {
        let datagram = match self.spec {
            SinkSpec::Journal(_) => journal(event),
            SinkSpec::SyslogUdp(_) | SinkSpec::SyslogUnix(_) => syslog(event, &self.host),
        };
        self.send(&datagram);
    }
}

/// An audit event's level, message and fields.
#[derive(Debug, Default)]
struct Audited {
    level: Option<Level>,
    message: String,
    fields: BTreeMap<String, String>,
}

impl Visit for Audited {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        self.record_text(field, text);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.record_text(field, value.to_owned());
    }
}

impl Audited {
    fn record_text(&mut self, field: &Field, text: String) {
        match field.name() {
            "message" => self.message = text,
            name => {
                self.fields.insert(name.to_owned(), text);
            }
        }
    }
}

/// The journal's native format: `KEY=VALUE` lines, a value with a newline as the key, a
/// newline, its length (u64 little-endian) and its bytes.
fn journal(event: &Audited) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field = |key: &str, value: &str| {
        if value.contains('\n') {
            out.extend_from_slice(key.as_bytes());
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        } else {
            out.extend_from_slice(format!("{key}={value}\n").as_bytes());
        }
    };
    field("MESSAGE", &line(event));
    field("PRIORITY", &priority(event.level).to_string());
    field("SYSLOG_IDENTIFIER", "cmdchan-server");
    for (name, value) in &event.fields {
        // Journal field names: upper case letters, digits and underscores.
        let key: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect();
        field(&format!("CMDCHAN_{key}"), value);
    }
    out
}

/// RFC 5424: `<PRI>1 TIMESTAMP HOST APP PROCID MSGID [SD] MSG`, facility auth (4).
fn syslog(event: &Audited, host: &str) -> Vec<u8> {
    let pri = 4 * 8 + priority(event.level);
    let now = cmdchan_common::time::rfc3339(cmdchan_common::time::now());
    let mut sd = format!("[{SD_ID}");
    for (name, value) in &event.fields {
        let name: String = name
            .chars()
            .filter(|c| c.is_ascii_graphic() && !"= ]\"".contains(*c))
            .take(32)
            .collect();
        let value = value
            .replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace(']', "\\]");
        let _ = write!(sd, " {name}=\"{value}\"");
    }
    sd.push(']');
    let pid = std::process::id();
    format!(
        "<{pri}>1 {now} {host} cmdchan-server {pid} audit {sd} {}",
        line(event)
    )
    .into_bytes()
}

/// The event in one line of words, as the text log has it.
fn line(event: &Audited) -> String {
    let mut text = event.message.clone();
    for key in ["client", "command", "outcome"] {
        if let Some(value) = event.fields.get(key) {
            let _ = write!(text, " {key}={value}");
        }
    }
    text
}

/// Syslog severity of a tracing level.
fn priority(level: Option<Level>) -> u8 {
    match level {
        Some(Level::ERROR) => 3,
        Some(Level::WARN) => 4,
        Some(Level::INFO) => 6,
        _ => 7,
    }
}

/// The layer that hands every audit event (target `cmdchan::audit`, any level) to the
/// sinks.
#[derive(Debug)]
pub struct SinkLayer {
    sinks: Vec<Sink>,
}

impl SinkLayer {
    pub fn new(sinks: Vec<Sink>) -> Self {
        Self { sinks }
    }
}

impl<S: Subscriber> Layer<S> for SinkLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !event.metadata().target().starts_with("cmdchan::audit") {
            return;
        }
        let mut audited = Audited {
            level: Some(*event.metadata().level()),
            ..Audited::default()
        };
        event.record(&mut audited);
        for sink in &self.sinks {
            sink.write(&audited);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Audited {
        let mut fields = BTreeMap::new();
        fields.insert("id".into(), "00ff".into());
        fields.insert("client".into(), "alice".into());
        fields.insert(
            "reason".into(),
            "a \"quoted\" ] thing\nover two lines".into(),
        );
        Audited {
            level: Some(Level::INFO),
            message: "refused".into(),
            fields,
        }
    }

    #[test]
    fn the_journal_gets_native_fields_and_a_value_with_a_newline_in_its_binary_form() {
        let bytes = journal(&event());
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            text.starts_with(
                "MESSAGE=refused client=alice\nPRIORITY=6\nSYSLOG_IDENTIFIER=cmdchan-server\n"
            ),
            "{text}"
        );
        assert!(text.contains("CMDCHAN_ID=00ff\n") && text.contains("CMDCHAN_CLIENT=alice\n"));
        let value = "a \"quoted\" ] thing\nover two lines";
        let mut binary = b"CMDCHAN_REASON\n".to_vec();
        binary.extend_from_slice(&(value.len() as u64).to_le_bytes());
        binary.extend_from_slice(value.as_bytes());
        assert!(bytes.windows(binary.len()).any(|w| w == binary.as_slice()));
    }

    #[test]
    fn syslog_lines_carry_escaped_structured_data() {
        let line = String::from_utf8(syslog(&event(), "db1")).expect("utf-8");
        assert!(line.starts_with("<38>1 "), "{line}");
        assert!(line.contains(" db1 cmdchan-server "), "{line}");
        assert!(line.contains("[cmdchan@32473 client=\"alice\" id=\"00ff\" reason=\"a \\\"quoted\\\" \\] thing\nover two lines\"]"), "{line}");
        assert!(line.ends_with("] refused client=alice"), "{line}");
        for bad in ["journal", "syslog:tcp://x:1", "syslog:udp://nohost"] {
            assert!(bad.parse::<SinkSpec>().is_err(), "{bad}");
        }
        assert_eq!(
            "syslog:udp://127.0.0.1:514".parse::<SinkSpec>(),
            Ok(SinkSpec::SyslogUdp("127.0.0.1:514".into()))
        );
    }
}
