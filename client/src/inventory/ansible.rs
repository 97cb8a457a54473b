//! Ansible's dynamic inventory JSON (what `SCRIPT --list` prints), so the scripts a
//! fleet already has give cmdchan its servers: each group's hosts, its `children` and
//! `vars`, and `_meta.hostvars`. A host's address is `cmdchan_address`, else
//! `ansible_host`, else its name; its port `cmdchan_port` (not `ansible_port`, which is
//! ssh's); its zone `cmdchan_zone`; its labels `cmdchan_labels`. Host variables win over
//! group variables. Every group becomes a group of the inventory (`@web`).

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::{host, Defaults, HostToml, Inventory};

pub fn parse(text: &str, source: &str) -> Result<Inventory, String> {
    let top: Map<String, Value> = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let hostvars = top
        .get("_meta")
        .and_then(|m| m.get("hostvars"))
        .and_then(Value::as_object);
    let mut vars: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (group, body) in top.iter().filter(|(g, _)| *g != "_meta") {
        let (hosts, children, group_vars) = group_parts(group, body)?;
        for h in &hosts {
            let merged = vars.entry(h.clone()).or_default();
            for (k, v) in group_vars.iter() {
                merged.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        let members = hosts
            .into_iter()
            .chain(children.into_iter().map(|c| format!("@{c}")));
        groups.insert(group.clone(), members.collect());
    }
    for (name, own) in hostvars.into_iter().flatten() {
        let own = own
            .as_object()
            .ok_or_else(|| format!("_meta.hostvars.{name} is not an object"))?;
        let merged = vars.entry(name.clone()).or_default();
        for (k, v) in own {
            merged.insert(k.clone(), v.clone());
        }
    }
    let mut inventory = Inventory::default();
    for (name, v) in &vars {
        let table = table(name, v)?;
        let h = host(name, &table, &Defaults::default(), source)?;
        inventory.hosts.insert(h.name.clone(), h);
    }
    for (group, members) in groups {
        // A group with no hosts (a parent of children only, or empty) still names them.
        let members: Vec<String> = members
            .into_iter()
            .filter(|m| m.starts_with('@') || vars.contains_key(m))
            .collect();
        if !members.is_empty() {
            inventory.add_group(&group, &members)?;
        }
    }
    let empty: Vec<String> = inventory
        .groups
        .values()
        .flat_map(|s| s.iter().flat_map(|s| s.groups()))
        .filter(|g| !inventory.groups.contains_key(*g))
        .map(str::to_owned)
        .collect();
    for group in empty {
        inventory.groups.insert(group, Vec::new());
    }
    inventory.check_groups()?;
    Ok(inventory)
}

/// A group's hosts, children and vars.
type Parts = (Vec<String>, Vec<String>, Map<String, Value>);

/// A group's hosts, children and vars: `["h1", "h2"]`, or `{"hosts": […], "children":
/// […], "vars": {…}}`.
fn group_parts(group: &str, body: &Value) -> Result<Parts, String> {
    let names = |v: Option<&Value>, what: &str| -> Result<Vec<String>, String> {
        match v {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{group}.{what}: not a list of names"))
                })
                .collect(),
            Some(_) => Err(format!("{group}.{what}: not a list of names")),
        }
    };
    match body {
        Value::Array(_) => Ok((names(Some(body), "hosts")?, Vec::new(), Map::new())),
        Value::Object(o) => {
            let vars = match o.get("vars") {
                None => Map::new(),
                Some(Value::Object(v)) => v.clone(),
                Some(_) => return Err(format!("{group}.vars: not an object")),
            };
            Ok((
                names(o.get("hosts"), "hosts")?,
                names(o.get("children"), "children")?,
                vars,
            ))
        }
        _ => Err(format!(
            "group {group}: neither a list of hosts nor an object"
        )),
    }
}

/// A host's variables as the inventory's server table.
fn table(name: &str, v: &Map<String, Value>) -> Result<HostToml, String> {
    let text = |key: &str| -> Result<Option<String>, String> {
        match v.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(format!("{name}: {key} is not a string")),
        }
    };
    let port = match v.get("cmdchan_port") {
        None | Some(Value::Null) => None,
        Some(p) => Some(
            p.as_u64()
                .or_else(|| p.as_str().and_then(|s| s.parse().ok()))
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("{name}: cmdchan_port is not a port"))?,
        ),
    };
    let zone = text("cmdchan_zone")?
        .map(|z| {
            cmdchan_common::ident::Ident::new(z).map_err(|e| format!("{name}: cmdchan_zone: {e}"))
        })
        .transpose()?;
    let labels = match v.get("cmdchan_labels") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(o)) => o
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => Ok((k.clone(), s.clone())),
                _ => Err(format!("{name}: cmdchan_labels.{k} is not a string")),
            })
            .collect::<Result<_, String>>()?,
        Some(_) => return Err(format!("{name}: cmdchan_labels is not an object")),
    };
    Ok(HostToml {
        address: text("cmdchan_address")?.or(text("ansible_host")?),
        port,
        zone,
        labels,
    })
}
