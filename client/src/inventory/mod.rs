//! The inventory of servers a client can reach by name, and the selectors that pick
//! from it (`selector`). It comes from a TOML file, or from a command's output (`exec:`,
//! TOML or Ansible's `--list` JSON, see `ansible`); several sources merge, and each
//! server remembers the one it came from.
//!
//! ```toml
//! [defaults]                       # for every server that does not say otherwise
//! port = 7433                      # the default
//! address = "{name}.example.net"   # default "{name}": the server's name is its host
//! zone = "web"
//! labels = { dc = "fra" }
//!
//! [groups]                         # @web in a selector
//! web = ["web[01-20]"]
//! edge = ["@web", "tier=edge"]
//!
//! [servers."web[01-20]"]           # twenty servers in one table
//! labels = { tier = "web" }
//!
//! [servers.db1]                    # the server ID
//! address = "10.0.0.5"             # HOST or HOST:PORT
//! zone = "db"
//! ```
//!
//! A name in a range table may also have a table of its own: its keys win for it.

mod ansible;
mod selector;
mod source;
pub mod srv;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use cmdchan_common::ident::Ident;

pub use selector::{fold, Selector};
pub use source::Source;

use selector::Range;

/// The port of a server whose address names none.
pub const DEFAULT_PORT: u16 = 7433;

/// One server of the inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// The server ID, which requests address.
    pub name: Ident,
    /// `HOST:PORT`.
    pub address: String,
    pub zone: Option<Ident>,
    pub labels: BTreeMap<String, String>,
    /// Where it came from: the file, or `exec:COMMAND`.
    pub source: String,
}

/// The servers a client knows, by name, and the groups that name them.
#[derive(Debug, Clone, Default)]
pub struct Inventory {
    hosts: BTreeMap<Ident, Host>,
    groups: BTreeMap<String, Vec<Selector>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryToml {
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    groups: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    servers: BTreeMap<String, HostToml>,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    port: Option<u16>,
    address: Option<String>,
    zone: Option<Ident>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct HostToml {
    address: Option<String>,
    port: Option<u16>,
    zone: Option<Ident>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

impl HostToml {
    /// `self` with `over`'s keys where it has them (a name's own table over its range's).
    fn under(&self, over: &HostToml) -> HostToml {
        let mut labels = self.labels.clone();
        labels.extend(over.labels.clone());
        HostToml {
            address: over.address.clone().or(self.address.clone()),
            port: over.port.or(self.port),
            zone: over.zone.clone().or(self.zone.clone()),
            labels,
        }
    }
}

impl Inventory {
    /// Parses an inventory in TOML; the error names the table or field at fault.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::parse_from(text, "")
    }

    /// An inventory of these servers alone; two of one name are an error.
    fn of_hosts(hosts: Vec<Host>) -> Result<Self, String> {
        let mut inventory = Self::default();
        for host in hosts {
            if inventory.hosts.contains_key(&host.name) {
                return Err(format!("two servers are named {}", host.name));
            }
            inventory.hosts.insert(host.name.clone(), host);
        }
        Ok(inventory)
    }

    /// Parses Ansible's dynamic inventory JSON (see `ansible`), its servers marked as
    /// coming from `source`.
    pub fn parse_ansible(text: &str, source: &str) -> Result<Self, String> {
        ansible::parse(text, source)
    }

    /// [`Inventory::parse`], its servers marked as coming from `source`.
    pub fn parse_from(text: &str, source: &str) -> Result<Self, String> {
        let parsed: InventoryToml = toml::from_str(text).map_err(|e| e.message().to_owned())?;
        let tables = expand(parsed.servers)?;
        let mut hosts = BTreeMap::new();
        for (name, table) in tables {
            let host = host(&name, &table, &parsed.defaults, source)?;
            hosts.insert(host.name.clone(), host);
        }
        let mut inventory = Self {
            hosts,
            groups: BTreeMap::new(),
        };
        for (group, members) in parsed.groups {
            inventory.add_group(&group, &members)?;
        }
        inventory.check_groups()?;
        Ok(inventory)
    }

    /// Adds group `name` of the selectors `members`.
    fn add_group(&mut self, name: &str, members: &[String]) -> Result<(), String> {
        if !is_label_key(name) {
            return Err(format!("groups.{name}: not a name"));
        }
        let selectors = members
            .iter()
            .map(|m| m.parse().map_err(|e| format!("groups.{name}: {e}")))
            .collect::<Result<Vec<Selector>, String>>()?;
        self.groups.insert(name.to_owned(), selectors);
        Ok(())
    }

    /// Every group names only groups there are, and none includes itself.
    fn check_groups(&self) -> Result<(), String> {
        for name in self.groups.keys() {
            let mut path = vec![name.as_str()];
            self.walk_group(name, &mut path)?;
        }
        Ok(())
    }

    fn walk_group<'a>(&'a self, name: &str, path: &mut Vec<&'a str>) -> Result<(), String> {
        for inner in self.groups[name].iter().flat_map(Selector::groups) {
            let Some((known, _)) = self.groups.get_key_value(inner) else {
                return Err(format!("groups.{name}: no group @{inner}"));
            };
            if path.contains(&inner) {
                return Err(format!(
                    "groups.{}: includes itself through @{inner}",
                    path[0]
                ));
            }
            path.push(known);
            self.walk_group(inner, path)?;
            path.pop();
        }
        Ok(())
    }

    /// Adds `other`'s servers and groups; a server or group both name is an error that
    /// names both sources.
    pub fn merge(&mut self, other: Inventory) -> Result<(), String> {
        for (name, host) in other.hosts {
            if let Some(there) = self.hosts.get(&name) {
                return Err(format!(
                    "server {name} is in {} and in {}",
                    there.source, host.source
                ));
            }
            self.hosts.insert(name, host);
        }
        for (name, group) in other.groups {
            if self.groups.contains_key(&name) {
                return Err(format!("group @{name} is defined by two sources"));
            }
            self.groups.insert(name, group);
        }
        self.check_groups()
    }

    /// The server named `name`, if the inventory has it.
    pub fn get(&self, name: &str) -> Option<&Host> {
        self.hosts.get(&Ident::new(name).ok()?)
    }

    /// The groups' names.
    pub fn group_names(&self) -> impl Iterator<Item = &str> {
        self.groups.keys().map(String::as_str)
    }

    /// Every label as `KEY=VALUE`, and every zone as `zone=NAME`, once each.
    pub fn labels(&self) -> std::collections::BTreeSet<String> {
        let labels = self
            .hosts
            .values()
            .flat_map(|h| h.labels.iter().map(|(k, v)| format!("{k}={v}")));
        let zones = self
            .hosts
            .values()
            .filter_map(|h| h.zone.as_ref())
            .map(|z| format!("zone={z}"));
        labels.chain(zones).collect()
    }

    /// Every server, in name order.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        self.hosts.values()
    }

    /// The servers every selector picks, in name order. A term that picks no server is
    /// an error that says what was likely meant: a typo never silently narrows a
    /// selection.
    pub fn select(&self, selectors: &[Selector]) -> Result<Vec<Host>, String> {
        for selector in selectors {
            for (text, term) in &selector.terms {
                let one = Selector {
                    terms: vec![(text.clone(), term.clone())],
                };
                if !self.hosts.values().any(|h| one.picks(h, self)) {
                    return Err(term.nothing(text, self));
                }
            }
        }
        Ok(self
            .hosts
            .values()
            .filter(|h| selectors.iter().all(|s| s.picks(h, self)))
            .cloned()
            .collect())
    }
}

/// The server tables by name: a range table stands for each of its names, and a name's
/// own table wins over its range's.
fn expand(servers: BTreeMap<String, HostToml>) -> Result<BTreeMap<String, HostToml>, String> {
    let mut out: BTreeMap<String, HostToml> = BTreeMap::new();
    let mut from_range: BTreeMap<String, String> = BTreeMap::new();
    for (key, table) in servers.iter().filter(|(k, _)| k.contains('[')) {
        let range = Range::parse(key).map_err(|e| format!("servers.{e}"))?;
        for name in range.names() {
            if let Some(other) = from_range.insert(name.clone(), key.clone()) {
                return Err(format!(
                    "server {name} is in two ranges: servers.\"{other}\" and servers.\"{key}\""
                ));
            }
            out.insert(name, table.clone());
        }
    }
    for (key, table) in servers.into_iter().filter(|(k, _)| !k.contains('[')) {
        let merged = match out.get(&key) {
            Some(range) => range.under(&table),
            None => table,
        };
        out.insert(key, merged);
    }
    Ok(out)
}

/// One server from its table and the defaults.
fn host(name: &str, t: &HostToml, defaults: &Defaults, source: &str) -> Result<Host, String> {
    let at = |e: String| format!("servers.{name}: {e}");
    let ident = Ident::new(name).map_err(|e| at(e.to_string()))?;
    let template = t
        .address
        .as_deref()
        .or(defaults.address.as_deref())
        .unwrap_or("{name}");
    let port = t.port.or(defaults.port);
    let address = address(&template.replace("{name}", name), port).map_err(at)?;
    let mut labels = defaults.labels.clone();
    labels.extend(t.labels.clone());
    if let Some(key) = labels.keys().find(|k| !is_label_key(k)) {
        return Err(at(format!("label {key:?} is not a name")));
    }
    if labels.contains_key("zone") {
        return Err(at(
            "`zone` is the server's zone, not a label: set zone = …".into()
        ));
    }
    Ok(Host {
        name: ident,
        address,
        zone: t.zone.clone().or(defaults.zone.clone()),
        labels,
        source: source.to_owned(),
    })
}

/// `HOST:PORT` from `HOST`, `HOST:PORT`, `[V6]`, `[V6]:PORT` or a bare IPv6 address, and
/// the port when the address names none ([`DEFAULT_PORT`] without either).
pub fn address(text: &str, port: Option<u16>) -> Result<String, String> {
    let bad = || format!("address {text:?} is not HOST or HOST:PORT");
    if text.is_empty() || text.contains(char::is_whitespace) {
        return Err(bad());
    }
    let port_of = |p: &str| match p.parse::<u16>() {
        Ok(n) if n > 0 && p.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(bad()),
    };
    let (host, named) = if let Some(rest) = text.strip_prefix('[') {
        let (inner, after) = rest.split_once(']').ok_or_else(bad)?;
        let host = format!("[{inner}]");
        match after.strip_prefix(':') {
            _ if inner.is_empty() => return Err(bad()),
            None if after.is_empty() => (host, None),
            Some(p) => (host, Some(port_of(p)?)),
            None => return Err(bad()),
        }
    } else if text.matches(':').count() > 1 {
        // A bare IPv6 address: several colons, no brackets, no port.
        (format!("[{text}]"), None)
    } else if let Some((host, p)) = text.split_once(':') {
        if host.is_empty() {
            return Err(bad());
        }
        (host.to_owned(), Some(port_of(p)?))
    } else {
        (text.to_owned(), None)
    };
    match (named, port) {
        (Some(_), Some(_)) => Err(format!(
            "address {text:?} has a port, and port is given too"
        )),
        (Some(p), None) => Ok(format!("{host}:{p}")),
        (None, p) => Ok(format!("{host}:{}", p.unwrap_or(DEFAULT_PORT))),
    }
}

fn is_label_key(key: &str) -> bool {
    !key.is_empty()
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// The inventory the sources `--inventory` (or the environment) names, merged, else
/// the user's.
pub fn load(sources: &[Source]) -> Result<Inventory, String> {
    if sources.is_empty() {
        return Source::File(default_path()?).load();
    }
    let mut merged = Inventory::default();
    for source in sources {
        merged.merge(source.load()?)?;
    }
    Ok(merged)
}

/// `~/.config/cmdchan/inventory.toml` (or under `$XDG_CONFIG_HOME`).
pub fn default_path() -> Result<PathBuf, String> {
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .ok_or("no inventory: pass --inventory FILE or set CMDCHAN_INVENTORY")?;
    Ok(config.join("cmdchan/inventory.toml"))
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
            "no server named \"web0l\" in the inventory (did you mean web01 or web02 or web03?)"
        );
        assert_eq!(
            pick(&["web[1-3]"]).expect_err("an error"),
            "\"web[1-3]\" picks no server of the inventory (did you mean web[01-03]?)"
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
            ("[servers.a]\naddress = \"x y\"\n", "servers.a: address"),
            (
                "[servers.a]\naddress = \"host:0\"\n",
                "is not HOST or HOST:PORT",
            ),
            (
                "[servers.a]\naddress = \"a:1\"\nport = 1\n",
                "has a port, and port is given too",
            ),
            ("[servers.a]\nhost = \"a\"\n", "unknown field `host`"),
            (
                "[servers.a]\nlabels = { zone = \"x\" }\n",
                "`zone` is the server's zone",
            ),
            (
                "[servers.\"w[1-3]\"]\n[servers.\"w[3-4]\"]\n",
                "server w3 is in two ranges",
            ),
            ("[groups]\na = [\"@b\"]\nb = [\"@a\"]\n", "includes itself"),
            ("[groups]\na = [\"@nope\"]\n", "no group @nope"),
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

    #[test]
    fn defaults_ranges_and_a_names_own_table_make_short_inventories() {
        let text = "[defaults]\naddress = \"{name}.example.net\"\nzone = \"web\"\nlabels = { dc = \"fra\" }\n\
            [groups]\nfront = [\"web[01-02]\"]\nall-web = [\"@front\", \"web03\"]\n\
            [servers.\"web[01-03]\"]\nlabels = { tier = \"web\" }\n\
            [servers.web02]\naddress = \"10.0.0.2:8000\"\n\
            [servers.db1]\naddress = \"[::1]\"\nzone = \"db\"\n\
            [servers.db2]\naddress = \"fe80::1\"\nport = 9000\n";
        let inventory = Inventory::parse_from(text, "inv.toml").expect("parses");
        let web01 = inventory.get("web01").expect("web01");
        assert_eq!(web01.address, "web01.example.net:7433");
        assert_eq!(
            (
                web01.zone.as_ref().map(Ident::as_str),
                web01.source.as_str()
            ),
            (Some("web"), "inv.toml")
        );
        assert_eq!(web01.labels.get("tier").map(String::as_str), Some("web"));
        assert_eq!(web01.labels.get("dc").map(String::as_str), Some("fra"));
        let web02 = inventory.get("web02").expect("web02");
        assert_eq!(web02.address, "10.0.0.2:8000", "its own table wins");
        assert_eq!(
            web02.labels.get("tier").map(String::as_str),
            Some("web"),
            "over its range's"
        );
        assert_eq!(inventory.get("db1").expect("db1").address, "[::1]:7433");
        assert_eq!(inventory.get("db2").expect("db2").address, "[fe80::1]:9000");
        let names = |on: &[&str]| -> String {
            let selectors: Vec<Selector> =
                on.iter().map(|s| s.parse().expect("a selector")).collect();
            let picked = inventory.select(&selectors).expect("picks");
            picked
                .iter()
                .map(|h| h.name.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(names(&["@front"]), "web01 web02");
        assert_eq!(names(&["@all-web"]), "web01 web02 web03");
        assert_eq!(names(&["zone=db"]), "db1");
        assert_eq!(names(&["zone=w*", "@front"]), "web01 web02");
        let err = inventory
            .select(&["@nope".parse().expect("a selector")])
            .expect_err("no group");
        assert_eq!(err, "no group @nope (the groups: @all-web, @front)");
    }

    #[test]
    fn ansible_list_json_gives_servers_groups_and_their_vars() {
        let json = r#"{
            "web": {"hosts": ["web01", "web02"], "vars": {"cmdchan_zone": "web"}},
            "db": ["db1"],
            "prod": {"children": ["web", "db"]},
            "_meta": {"hostvars": {
                "web01": {"ansible_host": "10.0.0.1", "ansible_port": 22},
                "db1": {"cmdchan_address": "db1.internal", "cmdchan_port": 7000, "cmdchan_zone": "db",
                        "cmdchan_labels": {"role": "primary"}}
            }}
        }"#;
        let inventory = Inventory::parse_ansible(json, "exec:./ec2.py --list").expect("parses");
        let web01 = inventory.get("web01").expect("web01");
        assert_eq!(
            web01.address, "10.0.0.1:7433",
            "ansible_host, and not ansible_port (ssh's)"
        );
        assert_eq!(
            web01.zone.as_ref().map(Ident::as_str),
            Some("web"),
            "the group's vars"
        );
        assert_eq!(inventory.get("web02").expect("web02").address, "web02:7433");
        let db1 = inventory.get("db1").expect("db1");
        assert_eq!(
            (db1.address.as_str(), db1.zone.as_ref().map(Ident::as_str)),
            ("db1.internal:7000", Some("db"))
        );
        assert_eq!(db1.labels.get("role").map(String::as_str), Some("primary"));
        let prod = inventory
            .select(&["@prod".parse().expect("a selector")])
            .expect("picks");
        assert_eq!(prod.len(), 3, "a group of groups");
        for bad in [
            r#"{"web": 3}"#,
            r#"{"web": {"hosts": [1]}}"#,
            r#"{"web": ["a b"]}"#,
            "{",
        ] {
            assert!(
                Inventory::parse_ansible(bad, "x").is_err(),
                "{bad} was accepted"
            );
        }
    }
}
