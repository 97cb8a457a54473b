//! The figures the bench measures and what one run of each gave.

use std::collections::BTreeMap;

use crate::contenders::{Kind, DHE, ECDHE};

/// One figure the bench measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Measure {
    /// Full handshakes with one suite, 16 in parallel.
    Handshake(&'static str),
    /// Round trips on `conns` connections with `depth` requests in flight on each.
    RoundTrip { conns: usize, depth: usize },
    /// Memory per idle connection, 1,000 of them.
    Idle,
}

pub const HANDSHAKE_PARALLEL: usize = 16;
pub const IDLE_CONNS: usize = 1000;

impl Measure {
    pub const ALL: [Measure; 7] = [
        Measure::Idle,
        Measure::Handshake(ECDHE),
        Measure::Handshake(DHE),
        Measure::RoundTrip { conns: 1, depth: 1 },
        Measure::RoundTrip {
            conns: 16,
            depth: 1,
        },
        Measure::RoundTrip {
            conns: 64,
            depth: 1,
        },
        Measure::RoundTrip {
            conns: 16,
            depth: 8,
        },
    ];

    pub fn applies_to(self, kind: Kind) -> bool {
        match self {
            Measure::Handshake(_) => true,
            Measure::RoundTrip { .. } | Measure::Idle => !kind.handshakes_only(),
        }
    }
}

/// What one run of one measure gave.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub rate: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    /// Server CPU time per operation, µs (all of the contender's processes).
    pub cpu_us: f64,
    pub kib_per_conn: f64,
}

pub type Results = BTreeMap<(Measure, Kind), Vec<Sample>>;
