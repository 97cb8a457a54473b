//! Inventory files (TOML, and Ansible's JSON) and `--on` selectors: any text must parse
//! or be refused, never
//! panic; a parsed selector picks only servers of the inventory, and folding what it
//! picked gives a selector that picks the same servers back.
#![no_main]

use libfuzzer_sys::fuzz_target;

use cmdchan::inventory::{fold, Inventory, Selector};

/// Names for the selector half when the inventory half does not parse: padded and
/// unpadded numbers, several digit runs, a name with no digits.
const FIXED: &str = "[servers.web01]\naddress = \"a:1\"\nlabels = { tier = \"web\" }\n\
[servers.web02]\naddress = \"a:2\"\n[servers.web10]\naddress = \"a:3\"\n\
[servers.n9]\naddress = \"a:4\"\n[servers.n10]\naddress = \"a:5\"\n\
[servers.r1-a2]\naddress = \"a:6\"\nlabels = { dc = \"fra\" }\n\
[servers.db]\naddress = \"a:7\"\n[servers.web001]\naddress = \"a:8\"\n";

fuzz_target!(|input: (&str, &str)| {
    let (inventory, selector) = input;
    // Text that opens an object is read as Ansible's JSON, as `exec:` reads it.
    let parsed = match inventory.trim_start().starts_with('{') {
        true => Inventory::parse_ansible(inventory, "fuzz"),
        false => Inventory::parse(inventory),
    };
    let inventory =
        parsed.unwrap_or_else(|_| Inventory::parse(FIXED).expect("the fixed inventory parses"));
    let Ok(selector) = selector.parse::<Selector>() else {
        return;
    };
    let Ok(picked) = inventory.select(&[selector]) else {
        return;
    };
    let names: Vec<&str> = picked.iter().map(|h| h.name.as_str()).collect();
    if names.is_empty() {
        return;
    }
    let folded: Selector = fold(&names).parse().expect("a fold is a selector");
    let again = inventory.select(&[folded]).expect("a fold names only picked servers");
    assert_eq!(again, picked);
});
