//! `--on` selectors: a comma-separated union of terms — a server name, a glob (`web*`,
//! `db?`), a numeric range (`web[01-40]`, `web[01-03,07]`), a label (`tier=web`, its
//! value may be a glob), the zone (`zone=db`) or a group of the inventory (`@web`).
//! Several selectors intersect. And the way back: [`fold`] writes names as the shortest
//! selector that picks exactly them.

use std::collections::BTreeMap;

use super::{Host, Inventory};

/// Most names a range may stand for: `web[0-99999999]` is a mistake, not a fleet.
pub(super) const MAX_RANGE: u64 = 100_000;

/// One `--on` value: a union of terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    /// Each term as written, and what it means.
    pub(super) terms: Vec<(String, Term)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Term {
    Name(String),
    Glob(String),
    /// `prefix[ranges]suffix`; each range is (low, high, digits), digits > 1 when the
    /// low bound has leading zeros and every number is written that wide.
    Range(Range),
    /// `KEY=VALUE`; the key `zone` is the server's zone.
    Label(String, String),
    /// `@NAME`: a group of the inventory.
    Group(String),
}

/// `prefix[ranges]suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Range {
    prefix: String,
    ranges: Vec<(u64, u64, usize)>,
    suffix: String,
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
    pub(super) fn picks(&self, host: &Host, inventory: &Inventory) -> bool {
        self.terms.iter().any(|(_, t)| t.picks(host, inventory, 0))
    }

    /// The groups it names.
    pub(super) fn groups(&self) -> impl Iterator<Item = &str> {
        self.terms.iter().filter_map(|(_, t)| match t {
            Term::Group(g) => Some(g.as_str()),
            _ => None,
        })
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

/// Groups may name groups; past this depth a group names itself.
const GROUP_DEPTH: usize = 8;

impl Term {
    fn parse(text: &str) -> Result<Self, String> {
        if let Some(group) = text.strip_prefix('@') {
            if !super::is_label_key(group) {
                return Err(format!("{text:?}: a group is @NAME"));
            }
            return Ok(Term::Group(group.to_owned()));
        }
        if let Some((key, value)) = text.split_once('=') {
            if !super::is_label_key(key) || value.is_empty() {
                return Err(format!("{text:?}: a label is KEY=VALUE"));
            }
            return Ok(Term::Label(key.to_owned(), value.to_owned()));
        }
        if text.contains('[') {
            return Range::parse(text).map(Term::Range);
        }
        if text.contains(['*', '?']) {
            return Ok(Term::Glob(text.to_owned()));
        }
        Ok(Term::Name(text.to_owned()))
    }

    fn picks(&self, host: &Host, inventory: &Inventory, depth: usize) -> bool {
        let name = host.name.as_str();
        match self {
            Term::Name(n) => n == name,
            Term::Glob(g) => glob(g.as_bytes(), name.as_bytes()),
            Term::Range(range) => range.picks(name),
            Term::Label(key, value) if key == "zone" => host
                .zone
                .as_ref()
                .is_some_and(|z| glob(value.as_bytes(), z.as_str().as_bytes())),
            Term::Label(key, value) => host
                .labels
                .get(key)
                .is_some_and(|v| glob(value.as_bytes(), v.as_bytes())),
            Term::Group(group) => {
                depth < GROUP_DEPTH
                    && inventory.groups.get(group).is_some_and(|members| {
                        members
                            .iter()
                            .flat_map(|s| &s.terms)
                            .any(|(_, t)| t.picks(host, inventory, depth + 1))
                    })
            }
        }
    }

    /// Why a term that picks nothing picks nothing, with what was likely meant.
    pub(super) fn nothing(&self, text: &str, inventory: &Inventory) -> String {
        let names: Vec<&str> = inventory.hosts.keys().map(|n| n.as_str()).collect();
        let hint = |likely: Option<String>| {
            likely.map_or(String::new(), |l| format!(" (did you mean {l}?)"))
        };
        match self {
            Term::Name(name) => format!(
                "no server named {name:?} in the inventory{}",
                hint(closest(name, &names))
            ),
            Term::Range(range) => format!(
                "{text:?} picks no server of the inventory{}",
                hint(range.padded_as(&names))
            ),
            Term::Group(group) => {
                let known: Vec<&str> = inventory.groups.keys().map(String::as_str).collect();
                match inventory.groups.contains_key(group) {
                    true => format!("group @{group} picks no server of the inventory"),
                    false if known.is_empty() => {
                        format!("no group @{group}: the inventory has no groups")
                    }
                    false => format!("no group @{group} (the groups: @{})", known.join(", @")),
                }
            }
            _ => format!("{text:?} picks no server of the inventory"),
        }
    }
}

impl Range {
    /// `prefix[ranges]suffix`, one range per term.
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let open = text.find('[').unwrap_or(text.len());
        let close = text.find(']').unwrap_or(text.len());
        if close < open || text[(close + 1).min(text.len())..].contains('[') {
            return Err(format!("{text:?}: one range per term"));
        }
        let ranges = parse_ranges(&text[(open + 1).min(close)..close])
            .map_err(|e| format!("{text:?}: {e}"))?;
        Ok(Range {
            prefix: text[..open].to_owned(),
            ranges,
            suffix: text[(close + 1).min(text.len())..].to_owned(),
        })
    }

    fn picks(&self, name: &str) -> bool {
        name.strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_suffix(self.suffix.as_str()))
            .is_some_and(|digits| in_ranges(digits, &self.ranges))
    }

    /// Every name it stands for, in order.
    pub(super) fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        for &(low, high, width) in &self.ranges {
            for n in low..=high {
                names.push(format!("{}{n:0width$}{}", self.prefix, self.suffix));
            }
        }
        names
    }

    /// The same range written with the digit width the inventory's names have, if that
    /// picks some: `web[1-3]` for web01…web03 is `web[01-03]`.
    fn padded_as(&self, names: &[&str]) -> Option<String> {
        let widths: std::collections::BTreeSet<usize> = names
            .iter()
            .filter_map(|n| {
                let digits = n
                    .strip_prefix(self.prefix.as_str())?
                    .strip_suffix(self.suffix.as_str())?;
                (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()))
                    .then_some(digits.len())
            })
            .collect();
        widths.into_iter().find_map(|width| {
            let ranges: Vec<(u64, u64, usize)> = self
                .ranges
                .iter()
                .map(|&(lo, hi, _)| (lo, hi, width))
                .collect();
            let padded = Range {
                ranges,
                ..self.clone()
            };
            names
                .iter()
                .any(|n| padded.picks(n))
                .then(|| padded.to_string())
        })
    }
}

impl std::fmt::Display for Range {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .ranges
            .iter()
            .map(|&(lo, hi, w)| match lo == hi {
                true => format!("{lo:0w$}"),
                false => format!("{lo:0w$}-{hi:0w$}"),
            })
            .collect();
        write!(f, "{}[{}]{}", self.prefix, parts.join(","), self.suffix)
    }
}

/// The inventory names closest to `name` (an edit or two away), for a typo's hint.
fn closest(name: &str, names: &[&str]) -> Option<String> {
    let mut near: Vec<(usize, &str)> = names
        .iter()
        .map(|n| (edits(name, n), *n))
        .filter(|(d, _)| *d <= 2)
        .collect();
    near.sort();
    let best: Vec<&str> = near.iter().take(3).map(|(_, n)| *n).collect();
    (!best.is_empty()).then(|| best.join(" or "))
}

/// The edit distance of two short names (insertions, deletions, substitutions).
fn edits(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > 2 || a.len() > 128 || b.len() > 128 {
        return usize::MAX;
    }
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, &x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(x != y));
            diagonal = above;
        }
    }
    row[b.len()]
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
