//! Typed parameters: what a value may be, checked before it becomes one argv element.
//!
//! Every value is refused if it holds NUL; a string also if it starts with `-` or holds a
//! newline, unless the policy allows it; integers are re-written in canonical decimal, so
//! what reaches the program is exactly what was validated.

use regex::Regex;
use serde::Deserialize;

use cmdchan_common::protocol::{ParamInfo, ParamKind};

/// Longest string value when the policy sets no `max_len`, in bytes.
const DEFAULT_MAX_LEN: usize = 256;

/// A parameter as the policy file writes it (`[[commands.NAME.params]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ParamToml {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    required: bool,
    default: Option<toml::Value>,
    #[serde(default)]
    secret: bool,
    regex: Option<String>,
    max_len: Option<usize>,
    #[serde(default)]
    allow_dash: bool,
    #[serde(default)]
    allow_newline: bool,
    min: Option<i64>,
    max: Option<i64>,
    values: Option<Vec<String>>,
    arg: Option<String>,
}

/// A checked parameter definition.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: String,
    pub description: String,
    pub required: bool,
    pub default: Option<String>,
    pub secret: bool,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    String {
        regex: Option<(String, Regex)>,
        max_len: usize,
        allow_dash: bool,
        allow_newline: bool,
    },
    Integer {
        min: i64,
        max: i64,
    },
    OneOf(Vec<String>),
    /// The argument passed when the flag is true.
    Flag(String),
}

impl ParamSpec {
    /// Checks a definition; the error names what is wrong with it.
    pub fn from_toml(p: ParamToml) -> Result<Self, String> {
        let kind = match p.kind.as_str() {
            "string" => string_kind(&p)?,
            "integer" => Kind::Integer {
                min: p.min.unwrap_or(i64::MIN),
                max: p.max.unwrap_or(i64::MAX),
            },
            "one-of" => Kind::OneOf(
                p.values
                    .clone()
                    .filter(|v| !v.is_empty())
                    .ok_or("a one-of parameter needs `values`")?,
            ),
            "flag" => Kind::Flag(
                p.arg
                    .clone()
                    .ok_or("a flag parameter needs `arg`, the argument it passes when true")?,
            ),
            other => {
                return Err(format!(
                    "unknown type {other:?} (string, integer, one-of, flag)"
                ))
            }
        };
        let mut spec = Self {
            name: p.name,
            description: p.description,
            required: p.required,
            default: None,
            secret: p.secret,
            kind,
        };
        if let Some(default) = p.default {
            let text = match default {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            let checked = spec
                .check(&text)
                .map_err(|e| format!("default {text:?}: {e}"))?;
            spec.default = Some(checked);
        }
        Ok(spec)
    }

    /// Validates `value`; `Ok` is the exact argv text for it.
    pub fn check(&self, value: &str) -> Result<String, String> {
        if value.contains('\0') {
            return Err("contains a NUL byte".into());
        }
        match &self.kind {
            Kind::String {
                regex,
                max_len,
                allow_dash,
                allow_newline,
            } => {
                if value.len() > *max_len {
                    return Err(format!("is {} bytes long (at most {max_len})", value.len()));
                }
                if !allow_dash && value.starts_with('-') {
                    return Err("starts with '-'".into());
                }
                if !allow_newline && value.contains(['\n', '\r']) {
                    return Err("contains a line break".into());
                }
                match regex {
                    Some((source, re)) if !re.is_match(value) => {
                        Err(format!("does not match {source}"))
                    }
                    _ => Ok(value.to_owned()),
                }
            }
            Kind::Integer { min, max } => match parse_integer(value) {
                Some(n) if (*min..=*max).contains(&n) => Ok(n.to_string()),
                Some(_) => Err(format!("is outside {min}..={max}")),
                None => Err("is not a decimal integer".into()),
            },
            Kind::OneOf(values) if values.iter().any(|v| v == value) => Ok(value.to_owned()),
            Kind::OneOf(values) => Err(format!("is not one of {}", values.join(", "))),
            Kind::Flag(_) => match value {
                "true" | "false" => Ok(value.to_owned()),
                _ => Err("is neither true nor false".into()),
            },
        }
    }

    /// The value an absent parameter takes without a default: `false` for a flag.
    pub fn absent(&self) -> Option<String> {
        matches!(self.kind, Kind::Flag(_)).then(|| "false".to_owned())
    }

    /// A value as refusals may show it: quoted, or `(secret)` for a secret parameter.
    pub fn shown(&self, value: &str) -> String {
        match self.secret {
            true => "(secret)".to_owned(),
            false => format!("{value:?}"),
        }
    }

    /// The values a role is limited to, as refusals may show them.
    pub fn shown_list(&self, values: &[String]) -> String {
        match self.secret {
            true => "values the policy keeps secret".to_owned(),
            false => values.join(", "),
        }
    }

    /// The argv element a checked value becomes; `None`: no element (a false flag).
    pub fn argument(&self, checked: &str) -> Option<String> {
        match &self.kind {
            Kind::Flag(arg) => (checked == "true").then(|| arg.clone()),
            _ => Some(checked.to_owned()),
        }
    }

    /// The parameter as the wire describes it, for a role restricted to `allowed`.
    pub fn info(&self, allowed: &[String]) -> ParamInfo {
        let kind = match &self.kind {
            Kind::String {
                regex,
                max_len,
                allow_dash,
                allow_newline,
            } => ParamKind::String {
                regex: regex.as_ref().map(|(s, _)| s.clone()),
                max_len: *max_len as u64,
                allow_dash: *allow_dash,
                allow_newline: *allow_newline,
            },
            Kind::Integer { min, max } => ParamKind::Integer {
                min: *min,
                max: *max,
            },
            Kind::OneOf(values) => ParamKind::OneOf(values.clone()),
            Kind::Flag(_) => ParamKind::Flag,
        };
        // A secret's default and allowed values are as secret as the values sent.
        let (default, allowed) = match self.secret {
            true => (None, Vec::new()),
            false => (self.default.clone(), allowed.to_vec()),
        };
        ParamInfo {
            name: self.name.clone(),
            kind,
            required: self.required,
            default,
            allowed,
            secret: self.secret,
            description: self.description.clone(),
        }
    }
}

fn string_kind(p: &ParamToml) -> Result<Kind, String> {
    let regex = match &p.regex {
        // The pattern must match the whole value, not a part of it.
        Some(source) => Some((
            source.clone(),
            Regex::new(&format!("^(?:{source})$")).map_err(|e| format!("bad regex: {e}"))?,
        )),
        None => None,
    };
    let max_len = p.max_len.unwrap_or(DEFAULT_MAX_LEN);
    Ok(Kind::String {
        regex,
        max_len,
        allow_dash: p.allow_dash,
        allow_newline: p.allow_newline,
    })
}

/// Strict decimal: an optional `-`, then digits; no `+`, spaces, or other bases.
fn parse_integer(text: &str) -> Option<i64> {
    let digits = text.strip_prefix('-').unwrap_or(text);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(toml_text: &str) -> ParamSpec {
        ParamSpec::from_toml(toml::from_str(toml_text).expect("toml")).expect("spec")
    }

    #[test]
    fn strings_refuse_dashes_newlines_nul_length_and_regex_misses() {
        let s = spec("name = \"svc\"\ntype = \"string\"\nregex = \"[a-z-]+\"\nmax_len = 8");
        assert_eq!(s.check("nginx"), Ok("nginx".into()));
        assert!(s.check("-rf").is_err());
        assert!(s.check("a\nb").is_err());
        assert!(s.check("a\0").is_err());
        assert!(s.check("abcdefghi").is_err());
        assert!(
            s.check("x; rm").is_err(),
            "the regex must match the whole value"
        );
        assert!(s.check("$(id)").is_err());
    }

    #[test]
    fn integers_are_strict_and_canonical() {
        let n = spec("name = \"n\"\ntype = \"integer\"\nmin = -5\nmax = 100");
        assert_eq!(n.check("007"), Ok("7".into()));
        assert_eq!(n.check("-5"), Ok("-5".into()));
        for bad in ["+1", " 1", "1e2", "0x10", "101", "-6", "", "-"] {
            assert!(n.check(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn one_of_and_flags() {
        let m = spec("name = \"m\"\ntype = \"one-of\"\nvalues = [\"fast\", \"slow\"]");
        assert!(m.check("fast").is_ok() && m.check("Fast").is_err());
        let f = spec("name = \"v\"\ntype = \"flag\"\narg = \"--verbose\"");
        assert_eq!(
            f.argument(&f.check("true").expect("ok")),
            Some("--verbose".into())
        );
        assert_eq!(f.argument(&f.check("false").expect("ok")), None);
        assert!(f.check("yes").is_err());
    }

    #[test]
    fn defaults_are_validated_at_load() {
        let bad =
            toml::from_str("name = \"n\"\ntype = \"integer\"\nmax = 5\ndefault = 9").expect("toml");
        assert!(ParamSpec::from_toml(bad).is_err());
        assert_eq!(
            spec("name = \"n\"\ntype = \"integer\"\ndefault = 9")
                .default
                .as_deref(),
            Some("9")
        );
    }
}
