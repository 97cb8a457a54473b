//! `admin audit-verify`: walks an audit file's hash chain and names the first record
//! that does not follow from the one before it.

use std::io::{self, BufRead, BufReader};
use std::path::Path;

use serde_json::Value;
use sha2::{Digest, Sha256};

/// What a walk over the chain found.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every record follows from the one before. `first_prev` is what the first record
    /// chains from (zeros: a new chain; else the last hash of the file before rotation).
    Intact {
        records: u64,
        first_prev: String,
        last: String,
    },
    /// Record `record` (1-based line number) breaks the chain.
    Broken { record: u64, why: String },
}

/// Checks the file at `path`; with `expected_prev`, the first record must chain from it.
pub fn verify(path: &Path, expected_prev: Option<&str>) -> io::Result<Verdict> {
    let reader = BufReader::new(std::fs::File::open(path)?);
    let mut last: Option<String> = None;
    let mut first_prev = String::new();
    let mut records = 0;
    for line in reader.split(b'\n') {
        let line = line?;
        records += 1;
        let broken = |why: String| {
            Ok(Verdict::Broken {
                record: records,
                why,
            })
        };
        let Some(prev) = serde_json::from_slice::<Value>(&line)
            .ok()
            .and_then(|v| v.get("prev")?.as_str().map(str::to_owned))
        else {
            return broken("is not a JSON record with a \"prev\" field (torn or edited)".into());
        };
        match (&last, expected_prev) {
            (Some(hash), _) if *hash != prev => {
                let before = records - 1;
                return broken(format!(
                    "does not follow record {before}: record {before} was edited, or records were deleted or reordered here"
                ));
            }
            (None, Some(want)) if want != prev => {
                return broken(format!("chains from {prev}, not from the expected {want}"));
            }
            (None, _) => first_prev = prev,
            _ => {}
        }
        last = Some(hex::encode(Sha256::digest(&line)));
    }
    Ok(Verdict::Intact {
        records,
        first_prev,
        last: last.unwrap_or_default(),
    })
}
