//! Servers from DNS SRV records (`srv:_cmdchan._tcp.example.com`, RFC 2782): one server
//! per record, named by its target host, at the target's address (from the answer's
//! additional section when the DNS server gives it, else the host name) and the record's
//! port, in priority then weight order. The query goes over UDP (TCP when the answer is
//! truncated) to the name server given (`srv:NAME@IP:PORT`) or to /etc/resolv.conf's.
//! Every byte of the answer is the DNS server's: it is parsed with bounds on every
//! read, and an answer that does not parse is an error, never a partial fleet.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

/// How long one name server has to answer.
const TIMEOUT: Duration = Duration::from_secs(5);
const TYPE_A: u16 = 1;
const TYPE_AAAA: u16 = 28;
const TYPE_SRV: u16 = 33;

/// One SRV record, with the target's address if the answer carried it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub priority: u16,
    pub weight: u16,
    pub port: u16,
    /// The target host, without the root's trailing dot.
    pub target: String,
    pub address: Option<IpAddr>,
}

/// The SRV records of `name`, asking `server` (or the system's name servers), sorted by
/// priority, then heavier weight first.
pub fn lookup(name: &str, server: Option<SocketAddr>) -> Result<Vec<Record>, String> {
    let servers = match server {
        Some(s) => vec![s],
        None => system_servers()?,
    };
    let query = query(name, random_id())?;
    let mut last = String::from("no name server to ask");
    for server in servers {
        let answered = ask(&query, server).and_then(|answer| parse(&answer, &query));
        match answered {
            Ok(mut records) => {
                records.sort_by(|a, b| (a.priority, b.weight).cmp(&(b.priority, a.weight)));
                return Ok(records);
            }
            Err(e) => last = format!("{server}: {e}"),
        }
    }
    Err(last)
}

fn random_id() -> u16 {
    let mut id = [0u8; 2];
    let _ = openssl::rand::rand_bytes(&mut id);
    u16::from_be_bytes(id)
}

/// The name servers of /etc/resolv.conf, on port 53.
fn system_servers() -> Result<Vec<SocketAddr>, String> {
    let text = std::fs::read_to_string("/etc/resolv.conf")
        .map_err(|e| format!("cannot read /etc/resolv.conf: {e}"))?;
    let servers: Vec<SocketAddr> = text
        .lines()
        .filter_map(|l| l.strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    match servers.is_empty() {
        true => Err("/etc/resolv.conf names no name server: give one (srv:NAME@IP:PORT)".into()),
        false => Ok(servers),
    }
}

/// A standard query for `name`'s SRV records, recursion desired.
fn query(name: &str, id: u16) -> Result<Vec<u8>, String> {
    let mut q = Vec::with_capacity(64);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(format!("{name:?} is not a DNS name"));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.push(0);
    if q.len() > 12 + 255 {
        return Err(format!("{name:?} is longer than a DNS name may be"));
    }
    q.extend_from_slice(&TYPE_SRV.to_be_bytes());
    q.extend_from_slice(&1u16.to_be_bytes());
    Ok(q)
}

/// Sends the query over UDP; over TCP again if the answer came truncated.
fn ask(query: &[u8], server: SocketAddr) -> Result<Vec<u8>, String> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    socket.connect(server).map_err(|e| e.to_string())?;
    socket.send(query).map_err(|e| e.to_string())?;
    let mut buf = vec![0u8; 4096];
    let n = socket
        .recv(&mut buf)
        .map_err(|e| format!("no answer within {}s ({e})", TIMEOUT.as_secs()))?;
    buf.truncate(n);
    let truncated = buf.get(2).is_some_and(|flags| flags & 0x02 != 0);
    if !truncated {
        return Ok(buf);
    }
    let mut tcp = TcpStream::connect_timeout(&server, TIMEOUT).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(TIMEOUT))
        .map_err(|e| e.to_string())?;
    let mut framed = (query.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(query);
    tcp.write_all(&framed).map_err(|e| e.to_string())?;
    let mut len = [0u8; 2];
    tcp.read_exact(&mut len).map_err(|e| e.to_string())?;
    let mut answer = vec![0u8; usize::from(u16::from_be_bytes(len))];
    tcp.read_exact(&mut answer).map_err(|e| e.to_string())?;
    Ok(answer)
}

/// The SRV records an answer to `query` gives for the name asked (from its answer
/// section), each with its target's address if an A or AAAA record in the answer gives
/// it. An answer to another ID or another question is refused.
pub fn parse(answer: &[u8], query: &[u8]) -> Result<Vec<Record>, String> {
    let mut r = Reader {
        bytes: answer,
        at: 0,
    };
    let mut q = Reader {
        bytes: query,
        at: 0,
    };
    if r.u16()? != q.u16()? {
        return Err("the answer is to another query".into());
    }
    q.skip(10)?;
    let asked = q.name()?;
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err("the name server sent a query, not an answer".into());
    }
    match flags & 0x000f {
        0 => {}
        3 => return Err("no such name".into()),
        2 => return Err("the name server failed (SERVFAIL)".into()),
        5 => return Err("the name server refused the query (REFUSED)".into()),
        code => return Err(format!("the name server answered with error {code}")),
    }
    let (questions, answers, authority, additional) = (r.u16()?, r.u16()?, r.u16()?, r.u16()?);
    if questions != 1 {
        return Err("the answer does not repeat the one question asked".into());
    }
    let question = r.name()?;
    let (kind, class) = (r.u16()?, r.u16()?);
    if !question.eq_ignore_ascii_case(&asked) || kind != TYPE_SRV || class != 1 {
        return Err(format!(
            "the answer is about {question:?}, not the name asked"
        ));
    }
    let mut records = Vec::new();
    let mut addresses = Vec::new();
    let all = u32::from(answers) + u32::from(authority) + u32::from(additional);
    for index in 0..all {
        let owner = r.name()?;
        let (kind, class, _ttl, len) = (r.u16()?, r.u16()?, r.u32()?, r.u16()?);
        let end = r.at + usize::from(len);
        if end > answer.len() {
            return Err("a record runs past the end of the answer".into());
        }
        let in_answer = index < u32::from(answers);
        match kind {
            TYPE_SRV if in_answer && class == 1 && owner.eq_ignore_ascii_case(&asked) => {
                let (priority, weight, port) = (r.u16()?, r.u16()?, r.u16()?);
                let target = r.name()?.to_ascii_lowercase();
                if r.at > end {
                    return Err("an SRV record runs past its own length".into());
                }
                records.push(Record {
                    priority,
                    weight,
                    port,
                    target,
                    address: None,
                });
            }
            TYPE_A if len == 4 && class == 1 => {
                let b = r.take(4)?;
                addresses.push((owner, IpAddr::from([b[0], b[1], b[2], b[3]])));
            }
            TYPE_AAAA if len == 16 && class == 1 => {
                let b: [u8; 16] = r.take(16)?.try_into().map_err(|_| "short address")?;
                addresses.push((owner, IpAddr::from(b)));
            }
            _ => {}
        }
        r.at = end;
    }
    for record in &mut records {
        record.address = addresses
            .iter()
            .find(|(owner, _)| owner.eq_ignore_ascii_case(&record.target))
            .map(|(_, ip)| *ip);
    }
    Ok(records)
}

/// Reads an answer with a bound on every read.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or("the answer ends too soon")?;
        let taken = &self.bytes[self.at..end];
        self.at = end;
        Ok(taken)
    }

    fn skip(&mut self, n: usize) -> Result<(), String> {
        self.take(n).map(|_| ())
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A name, following compression pointers (each must point back, so no loop), as
    /// dotted text; labels must be letters, digits, `-` or `_`.
    fn name(&mut self) -> Result<String, String> {
        let mut labels: Vec<String> = Vec::new();
        let mut at = self.at;
        let mut resume = None;
        let mut length = 0usize;
        loop {
            let len = *self.bytes.get(at).ok_or("a name runs past the answer")?;
            match len {
                0 => {
                    at += 1;
                    break;
                }
                l if l & 0xc0 == 0xc0 => {
                    let low = *self
                        .bytes
                        .get(at + 1)
                        .ok_or("a name runs past the answer")?;
                    let target = usize::from(u16::from_be_bytes([l & 0x3f, low]));
                    if target >= at {
                        return Err("a name points forward".into());
                    }
                    resume.get_or_insert(at + 2);
                    at = target;
                }
                l if l & 0xc0 != 0 => {
                    return Err("a name has a label type this reader does not know".into())
                }
                l => {
                    let label = self
                        .bytes
                        .get(at + 1..at + 1 + usize::from(l))
                        .ok_or("a name runs past the answer")?;
                    if !label
                        .iter()
                        .all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
                    {
                        return Err("a name holds characters a host name may not".into());
                    }
                    length += label.len() + 1;
                    if length > 255 {
                        return Err("a name is longer than 255 bytes".into());
                    }
                    labels.push(String::from_utf8_lossy(label).into_owned());
                    at += 1 + usize::from(l);
                }
            }
        }
        self.at = resume.unwrap_or(at);
        Ok(labels.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer to query 0x1234 for `_cmdchan._tcp.x`: two SRV records (the second's
    /// target compressed), and an A record for the first target.
    fn answer() -> Vec<u8> {
        let mut a = vec![0x12, 0x34, 0x81, 0x80, 0, 1, 0, 2, 0, 0, 0, 1];
        let question = a.len();
        a.extend_from_slice(b"\x08_cmdchan\x04_tcp\x01x\x00\x00\x21\x00\x01");
        // SRV 10 5 7433 web1.x
        a.extend_from_slice(&[0xc0, question as u8, 0, 33, 0, 1, 0, 0, 0, 60, 0, 13]);
        a.extend_from_slice(&[0, 10, 0, 5, 0x1d, 0x09]);
        let web1 = a.len();
        a.extend_from_slice(b"\x04web1\xc0");
        a.push((question + 14) as u8);
        // SRV 5 0 7434 web2.x
        a.extend_from_slice(&[0xc0, question as u8, 0, 33, 0, 1, 0, 0, 0, 60, 0, 13]);
        a.extend_from_slice(&[0, 5, 0, 0, 0x1d, 0x0a]);
        a.extend_from_slice(b"\x04web2\xc0");
        a.push((question + 14) as u8);
        // A web1.x 10.0.0.1
        a.extend_from_slice(&[0xc0, web1 as u8, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1]);
        a
    }

    #[test]
    fn srv_records_and_their_addresses_read_from_an_answer() {
        let records = parse(
            &answer(),
            &query("_cmdchan._tcp.x", 0x1234).expect("a name"),
        )
        .expect("parses");
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].target, "web1.x");
        assert_eq!(
            (records[0].priority, records[0].weight, records[0].port),
            (10, 5, 7433)
        );
        assert_eq!(records[0].address, Some(IpAddr::from([10, 0, 0, 1])));
        assert_eq!(
            (records[1].target.as_str(), records[1].port),
            ("web2.x", 7434)
        );
        assert_eq!(records[1].address, None);
    }

    #[test]
    fn a_cut_answer_a_forward_pointer_or_another_id_is_an_error() {
        let whole = answer();
        let asked = query("_cmdchan._tcp.x", 0x1234).expect("a name");
        for cut in 0..whole.len() {
            assert!(parse(&whole[..cut], &asked).is_err(), "cut at {cut}");
        }
        assert!(parse(&whole, &query("_cmdchan._tcp.x", 0x4321).expect("a name")).is_err());
        let other = query("_cmdchan._tcp.y", 0x1234).expect("a name");
        assert!(
            parse(&whole, &other).is_err(),
            "an answer to another question"
        );
        let mut forward = whole.clone();
        forward[12 + 21 + 1] = 0xff; // the first record's owner points past itself
        assert!(parse(&forward, &asked).is_err());
    }

    #[test]
    fn the_query_is_a_standard_srv_question() {
        let q = query("_cmdchan._tcp.x.", 7).expect("a name");
        assert_eq!(q, b"\x00\x07\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x08_cmdchan\x04_tcp\x01x\x00\x00\x21\x00\x01");
        assert!(query("a..b", 7).is_err());
    }
}
