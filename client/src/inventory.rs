//! The inventory of servers a fan-out can reach, and the selectors that pick from it.
//!
//! ```toml
//! [servers.web01]                  # the server ID
//! address = "web01.example:7433"
//! zone = "web"                     # optional: the credential must have this zone
//! labels = { tier = "web", dc = "fra" }
//! ```
//!
//! A selector (`--on`) is a comma-separated union of terms: a server name, a glob
//! (`web*`, `db?`), a numeric range (`web[01-40]`, `web[01-03,07]`) or a label
//! (`tier=web`, its value may be a glob). Several selectors intersect. A plain name that
//! is not in the inventory is an error, so a typo never silently selects nothing.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use cmdchan_common::ident::Ident;

/// Most names a range may stand for: `web[0-99999999]` is a mistake, not a fleet.
const MAX_RANGE: u64 = 100_000;

/// One server of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The server ID, which requests address.
    pub name: Ident,
    pub address: String,
    pub zone: Option<Ident>,
    pub labels: BTreeMap<String, String>,
}

/// The servers a client knows, by name.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    hosts: BTreeMap<Ident, Host>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryToml {
    #[serde(default)]
    servers: BTreeMap<Ident, HostToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HostToml {
    address: String,
    zone: Option<Ident>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl Inventory {
    /// Parses an inventory; the error names the table or field at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        let parsed: InventoryToml = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let mut hosts = BTreeMap::new();
        for (name, h) in parsed.servers {
            if !is_host_port(&h.address) {
                return Err(format!(
                    "servers.{name}: address {:?} is not HOST:PORT",
                    h.address
                ));
            }
            if let Some(key) = h.labels.keys().find(|k| !is_label_key(k)) {
                return Err(format!("servers.{name}: label {key:?} is not a name"));
            }
            let host = Host {
                name: name.clone(),
                address: h.address,
                zone: h.zone,
                labels: h.labels,
            };
            hosts.insert(name, host);
        }
        Ok(Self { hosts })
    }

    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the inventory {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("inventory {}: {e}", path.display()))
    }

    /// The servers every selector picks, in name order. A term that picks no server is
    /// an error: a typo never silently narrows a selection.
    pub fn select(&self, selectors: &[Selector]) -> Result<Vec<Host>, String> {
        for selector in selectors {
            for (text, term) in &selector.terms {
                if !self.hosts.values().any(|h| term.picks(h)) {
                    return Err(match term {
                        Term::Name(name) => format!("no server named {name:?} in the inventory"),
                        _ => format!("{text:?} picks no server of the inventory"),
                    });
                }
            }
        }
        Ok(self
            .hosts
            .values()
            .filter(|h| selectors.iter().all(|s| s.picks(h)))
            .cloned()
            .collect())
    }
}

/// `host:port` or `[v6]:port`, a port from 1 to 65535, no spaces.
fn is_host_port(address: &str) -> bool {
    let Some((host, port)) = address.rsplit_once(':') else {
        return false;
    };
    !host.is_empty()
        && !address.contains(char::is_whitespace)
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u16>().is_ok_and(|p| p > 0)
}

fn is_label_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// One `--on` value: a union of terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Each term as written, and what it means.
    terms: Vec<(String, Term)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    Name(String),
    Glob(String),
    /// `prefix[ranges]suffix`; each range is (low, high, digits), digits > 1 when the
    /// low bound has leading zeros and every number is written that wide.
    Range {
        prefix: String,
        ranges: Vec<(u64, u64, usize)>,
        suffix: String,
    },
    Label(String, String),
}

impl std::str::FromStr for Selector {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let terms = split_terms(text)?
            .into_iter()
            .map(|t| Ok((t.to_owned(), Term::parse(t)?)))
            .collect::<Result<Vec<_>, String>>()?;
        if terms.is_empty() {
            return Err("an empty selector".into());
        }
        Ok(Self { terms })
    }
}

impl Selector {
    fn picks(&self, host: &Host) -> bool {
        self.terms.iter().any(|(_, t)| t.picks(host))
    }
}

/// Splits on commas outside brackets: `web[01-03,07],db1` is two terms.
fn split_terms(text: &str) -> Result<Vec<&str>, String> {
    let (mut terms, mut depth, mut start) = (Vec::new(), 0u32, 0);
    for (i, c) in text.char_indices() {
        match c {
            '[' if depth == 0 => depth = 1,
            '[' => return Err(format!("{text:?}: brackets inside brackets")),
            ']' if depth == 1 => depth = 0,
            ']' => return Err(format!("{text:?}: a ] without its [")),
            ',' if depth == 0 => {
                terms.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        return Err(format!("{text:?}: a [ without its ]"));
    }
    terms.push(&text[start..]);
    if terms.iter().any(|t| t.is_empty()) {
        return Err(format!("{text:?}: an empty term"));
    }
    Ok(terms)
}

impl Term {
    fn parse(text: &str) -> Result<Self, String> {
        if let Some((key, value)) = text.split_once('=') {
            if !is_label_key(key) || value.is_empty() {
                return Err(format!("{text:?}: a label is KEY=VALUE"));
            }
            return Ok(Term::Label(key.to_owned(), value.to_owned()));
        }
        if let Some(open) = text.find('[') {
            let close = text.find(']').unwrap_or(text.len());
            if text[(close + 1).min(text.len())..].contains('[') {
                return Err(format!("{text:?}: one range per term"));
            }
            let ranges =
                parse_ranges(&text[open + 1..close]).map_err(|e| format!("{text:?}: {e}"))?;
            return Ok(Term::Range {
                prefix: text[..open].to_owned(),
                ranges,
                suffix: text[(close + 1).min(text.len())..].to_owned(),
            });
        }
        if text.contains(['*', '?']) {
            return Ok(Term::Glob(text.to_owned()));
        }
        Ok(Term::Name(text.to_owned()))
    }

    fn picks(&self, host: &Host) -> bool {
        let name = host.name.as_str();
        match self {
            Term::Name(n) => n == name,
            Term::Glob(g) => glob(g.as_bytes(), name.as_bytes()),
            Term::Range {
                prefix,
                ranges,
                suffix,
            } => name
                .strip_prefix(prefix.as_str())
                .and_then(|rest| rest.strip_suffix(suffix.as_str()))
                .is_some_and(|digits| in_ranges(digits, ranges)),
            Term::Label(key, value) => host
                .labels
                .get(key)
                .is_some_and(|v| glob(value.as_bytes(), v.as_bytes())),
        }
    }
}

fn parse_ranges(text: &str) -> Result<Vec<(u64, u64, usize)>, String> {
    let mut ranges = Vec::new();
    let mut count = 0u64;
    for part in text.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        let number = |s: &str| {
            if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || s.len() > 18 {
                Err(format!("{part:?} is not a number or a range of numbers"))
            } else {
                s.parse::<u64>().map_err(|e| e.to_string())
            }
        };
        let (low, high) = (number(lo)?, number(hi)?);
        if low > high {
            return Err(format!("{part:?} runs backwards"));
        }
        count = count.saturating_add(high - low + 1);
        if count > MAX_RANGE {
            return Err(format!("more than {MAX_RANGE} names"));
        }
        let width = if lo.len() > 1 && lo.starts_with('0') {
            lo.len()
        } else {
            0
        };
        ranges.push((low, high, width));
    }
    Ok(ranges)
}

fn in_ranges(digits: &str, ranges: &[(u64, u64, usize)]) -> bool {
    if digits.is_empty() || digits.len() > 18 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let Ok(n) = digits.parse::<u64>() else {
        return false;
    };
    // Written as the range writes its numbers: `web[08-100]` picks web09 and web100.
    ranges
        .iter()
        .any(|&(low, high, width)| (low..=high).contains(&n) && digits == format!("{n:0width$}"))
}

/// `*` is any run of bytes, `?` any one byte; the rest matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Folds names into ranges where they share a prefix, a digit width and a suffix:
/// `web01 web02 web03 web07 db1` → `db1, web[01-03,07]`. The result is a selector
/// that picks exactly these names.
pub fn fold(names: &[&str]) -> String {
    let split: Vec<_> = names.iter().map(|n| (*n, split_number(n))).collect();
    // Widths written with leading zeros, per (prefix, suffix): `web10` joins `web01`'s
    // group, since `{:02}` writes it back as it is.
    let padded: std::collections::BTreeSet<(&str, usize, &str)> = split
        .iter()
        .filter_map(|(_, s)| *s)
        .filter(|(_, digits, _)| digits.len() > 1 && digits.starts_with('0'))
        .map(|(prefix, digits, suffix)| (prefix, digits.len(), suffix))
        .collect();
    let mut groups: BTreeMap<(&str, usize, &str), Vec<u64>> = BTreeMap::new();
    let mut alone = Vec::new();
    for (name, parts) in split {
        let Some((prefix, digits, suffix)) = parts else {
            alone.push(name.to_owned());
            continue;
        };
        let Ok(n) = digits.parse::<u64>() else {
            alone.push(name.to_owned());
            continue;
        };
        // Every padded name's width is in `padded`; other names are written as is.
        let width = if padded.contains(&(prefix, digits.len(), suffix)) {
            digits.len()
        } else {
            0
        };
        groups.entry((prefix, width, suffix)).or_default().push(n);
    }
    let mut out = alone;
    for ((prefix, width, suffix), mut numbers) in groups {
        numbers.sort_unstable();
        numbers.dedup();
        let show = |n: u64| format!("{n:0width$}");
        if numbers.len() == 1 {
            out.push(format!("{prefix}{}{suffix}", show(numbers[0])));
            continue;
        }
        let mut parts = Vec::new();
        let mut i = 0;
        while i < numbers.len() {
            let mut j = i;
            while j + 1 < numbers.len() && numbers[j + 1] == numbers[j] + 1 {
                j += 1;
            }
            parts.push(if i == j {
                show(numbers[i])
            } else {
                format!("{}-{}", show(numbers[i]), show(numbers[j]))
            });
            i = j + 1;
        }
        out.push(format!("{prefix}[{}]{suffix}", parts.join(",")));
    }
    out.sort();
    out.join(",")
}

/// The last run of digits in a name, with what is before and after it.
fn split_number(name: &str) -> Option<(&str, &str, &str)> {
    let end = name.rfind(|c: char| c.is_ascii_digit())? + 1;
    let start = name[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    if end - start > 18 {
        return None;
    }
    Some((&name[..start], &name[start..end], &name[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> Inventory {
        let mut text = String::new();
        for n in 1..=12 {
            let tier = if n <= 8 { "web" } else { "db" };
            text.push_str(&format!(
                "[servers.web{n:02}]\naddress = \"10.0.0.{n}:7433\"\nlabels = {{ tier = \"{tier}\", dc = \"{}\" }}\n",
                if n % 2 == 0 { "fra" } else { "ams" }
            ));
        }
        text.push_str("[servers.db1]\naddress = \"db1:7433\"\nzone = \"db\"\n");
        Inventory::parse(&text).expect("picks")
    }

    fn pick(on: &[&str]) -> Result<String, String> {
        let selectors = on
            .iter()
            .map(|s| s.parse())
            .collect::<Result<Vec<Selector>, _>>()?;
        let hosts = inventory().select(&selectors)?;
        Ok(hosts
            .iter()
            .map(|h| h.name.as_str())
            .collect::<Vec<_>>()
            .join(" "))
    }

    #[test]
    fn names_globs_ranges_labels_unions_and_intersections_pick_exactly() {
        assert_eq!(pick(&["db1"]).expect("picks"), "db1");
        assert_eq!(pick(&["web1*"]).expect("picks"), "web10 web11 web12");
        assert_eq!(pick(&["web0?"]).expect("picks").split(' ').count(), 9);
        assert_eq!(
            pick(&["web[01-03,07]"]).expect("picks"),
            "web01 web02 web03 web07"
        );
        assert!(
            pick(&["web[1-3]"]).is_err(),
            "an unpadded range misses padded names, and says so"
        );
        assert_eq!(
            pick(&["web[09-100]"]).expect("picks"),
            "web09 web10 web11 web12"
        );
        assert_eq!(
            pick(&["tier=db"]).expect("picks"),
            "web09 web10 web11 web12"
        );
        assert_eq!(
            pick(&["tier=db,db1"]).expect("picks"),
            "db1 web09 web10 web11 web12"
        );
        assert_eq!(
            pick(&["tier=web", "dc=fra"]).expect("picks"),
            "web02 web04 web06 web08"
        );
        assert_eq!(pick(&["dc=f*"]).expect("picks").split(' ').count(), 6);
    }

    #[test]
    fn a_missing_name_or_a_bad_selector_is_an_error_not_an_empty_pick() {
        assert_eq!(
            pick(&["web0l"]).expect_err("an error"),
            "no server named \"web0l\" in the inventory"
        );
        assert_eq!(
            pick(&["db1,web[20-30]"]).expect_err("an error"),
            "\"web[20-30]\" picks no server of the inventory"
        );
        for bad in [
            "",
            "a,,b",
            "web[01-",
            "web[3-1]",
            "web[x]",
            "web[[1]]",
            "=web",
            "web]",
            "w[1]-n[2]",
        ] {
            assert!(pick(&[bad]).is_err(), "{bad:?} was accepted");
        }
        assert!(pick(&["web[0-999999]"])
            .expect_err("an error")
            .contains("more than"));
    }

    #[test]
    fn folding_names_gives_a_selector_that_picks_them_back() {
        let names = ["web01", "web02", "web03", "web07", "db1", "web10"];
        let folded = fold(&names);
        assert_eq!(folded, "db1,web[01-03,07,10]");
        let mut back: Vec<String> = pick(&[&folded])
            .expect("picks")
            .split(' ')
            .map(str::to_owned)
            .collect();
        back.sort();
        let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(back, want);
        assert_eq!(fold(&["a", "b"]), "a,b");
        assert_eq!(fold(&["n9", "n10", "n11"]), "n[9-11]");
    }

    #[test]
    fn inventory_errors_name_the_server() {
        for (text, want) in [
            ("[servers.a]\n", "missing field `address`"),
            ("[servers.a]\naddress = \"x y\"\n", "servers.a: address"),
            ("[servers.a]\naddress = \"host\"\n", "is not HOST:PORT"),
            ("[servers.a]\naddress = \"host:0\"\n", "is not HOST:PORT"),
            (
                "[servers.a]\naddress = \"a:1\"\nport = 1\n",
                "unknown field `port`",
            ),
            (
                "[servers.a]\naddress = \"a:1\"\nlabels = { \"a b\" = \"c\" }\n",
                "label \"a b\"",
            ),
            ("[servers.\"a b\"]\naddress = \"a:1\"\n", ""),
        ] {
            let err = Inventory::parse(text).expect_err("an error");
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
