//! The bench's report: one markdown table (median, min–max of the runs, and ratios),
//! the machine it ran on, and the targets met or missed.

use std::fmt::Write as _;
use std::process::Command;
use std::time::Duration;

use crate::breakdown::{Breakdown, CATEGORIES};
use crate::contenders::{Kind, DHE, ECDHE};
use crate::measure::{Measure, Results, Sample, HANDSHAKE_PARALLEL, IDLE_CONNS};

/// One row of the table: a figure of one measure.
struct Row {
    label: String,
    measure: Measure,
    metric: fn(&Sample) -> f64,
}

fn rows() -> Vec<Row> {
    let row = |label: String, measure, metric| Row {
        label,
        measure,
        metric,
    };
    let rate: fn(&Sample) -> f64 = |s| s.rate;
    let cpu: fn(&Sample) -> f64 = |s| s.cpu_us;
    let p50: fn(&Sample) -> f64 = |s| s.p50_us;
    let p99: fn(&Sample) -> f64 = |s| s.p99_us;
    let mut rows = Vec::new();
    for (suite, name) in [(ECDHE, "ECDHE-PSK"), (DHE, "DHE-PSK ffdhe3072")] {
        let m = Measure::Handshake(suite);
        rows.push(row(
            format!("{name} handshakes/s, {HANDSHAKE_PARALLEL} in parallel"),
            m,
            rate,
        ));
        rows.push(row(
            format!("↳ server CPU per {name} handshake, µs"),
            m,
            cpu,
        ));
    }
    for conns in [1, 16, 64] {
        let m = Measure::RoundTrip { conns, depth: 1 };
        rows.push(row(format!("round trips/s, {conns} conn(s)"), m, rate));
        rows.push(row(format!("↳ p50 latency, {conns} conn(s), µs"), m, p50));
        rows.push(row(format!("↳ p99 latency, {conns} conn(s), µs"), m, p99));
        rows.push(row(
            format!("↳ server CPU per round trip, {conns} conn(s), µs"),
            m,
            cpu,
        ));
    }
    let m = PIPELINED;
    rows.push(row(
        "pipelined round trips/s, 16 conns × 8 in flight".into(),
        m,
        rate,
    ));
    rows.push(row(
        "↳ server CPU per round trip, pipelined, µs".into(),
        m,
        cpu,
    ));
    rows.push(row(
        format!("server memory per idle connection, KiB ({IDLE_CONNS} conns)"),
        Measure::Idle,
        |s| s.kib_per_conn,
    ));
    rows
}

pub const PIPELINED: Measure = Measure::RoundTrip {
    conns: 16,
    depth: 8,
};
const RT64: Measure = Measure::RoundTrip {
    conns: 64,
    depth: 1,
};

/// A target, checked on the medians of one bench run.
struct Verdict {
    what: &'static str,
    value: Option<f64>,
    met: bool,
}

pub struct Report<'a> {
    results: &'a Results,
    breakdowns: &'a [(Kind, Breakdown)],
    took: Duration,
    verdicts: Vec<Verdict>,
}

impl<'a> Report<'a> {
    pub fn new(results: &'a Results, breakdowns: &'a [(Kind, Breakdown)], took: Duration) -> Self {
        let mut report = Self {
            results,
            breakdowns,
            took,
            verdicts: Vec::new(),
        };
        report.verdicts = report.check();
        report
    }

    pub fn all_met(&self) -> bool {
        self.verdicts.iter().all(|v| v.met)
    }

    fn median(&self, m: Measure, kind: Kind, metric: fn(&Sample) -> f64) -> Option<f64> {
        let samples = self.results.get(&(m, kind))?;
        Some(stats(samples, metric).0)
    }

    fn ratio(&self, m: Measure, a: Kind, b: Kind, metric: fn(&Sample) -> f64) -> Option<f64> {
        Some(self.median(m, a, metric)? / self.median(m, b, metric)?)
    }

    fn check(&self) -> Vec<Verdict> {
        use Kind::{Ceiling, Cmdchan, Stunnel};
        let rate: fn(&Sample) -> f64 = |s| s.rate;
        let at_least = |what, value: Option<f64>, bar: f64| Verdict {
            what,
            value,
            met: value.is_some_and(|v| v >= bar),
        };
        let at_most = |what, value: Option<f64>, bar: f64| Verdict {
            what,
            value,
            met: value.is_some_and(|v| v <= bar),
        };
        let ecdhe = Measure::Handshake(ECDHE);
        let dhe = Measure::Handshake(DHE);
        vec![
            at_least(
                "ECDHE-PSK handshakes/s ≥ 0.95 × ceiling",
                self.ratio(ecdhe, Cmdchan, Ceiling, rate),
                0.95,
            ),
            at_least(
                "DHE-PSK handshakes/s ≥ 0.95 × ceiling",
                self.ratio(dhe, Cmdchan, Ceiling, rate),
                0.95,
            ),
            at_most(
                "server CPU per round trip at 64 conns ≤ 1.3 × ceiling",
                self.ratio(RT64, Cmdchan, Ceiling, |s| s.cpu_us),
                1.3,
            ),
            at_least(
                "pipelined round trips/s ≥ 1.2 × stunnel4",
                self.ratio(PIPELINED, Cmdchan, Stunnel, rate),
                1.2,
            ),
            at_most(
                "memory per idle connection ≤ 20 KiB",
                self.median(Measure::Idle, Cmdchan, |s| s.kib_per_conn),
                20.0,
            ),
        ]
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "{}\n", machine());
        let runs = self.results.values().map(Vec::len).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "Median of {runs} runs (min–max); the bench took {:.0} s. Ratios are of medians.\n",
            self.took.as_secs_f64()
        );
        let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        let _ = writeln!(
            out,
            "| figure | {} | cmdchan ÷ ceiling | cmdchan ÷ stunnel4 |",
            names.join(" | ")
        );
        let _ = writeln!(out, "|---|{}--:|--:|", "--:|".repeat(names.len()));
        for row in rows() {
            let cells: Vec<String> = Kind::ALL
                .iter()
                .map(|&k| self.cell(row.measure, k, row.metric))
                .collect();
            let ratio = |a, b| {
                self.ratio(row.measure, a, b, row.metric)
                    .map_or("".into(), |r| format!("{r:.2}×"))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                row.label,
                cells.join(" | "),
                ratio(Kind::Cmdchan, Kind::Ceiling),
                ratio(Kind::Cmdchan, Kind::Stunnel),
            );
        }
        self.breakdown(&mut out);
        let _ = writeln!(out, "\nTargets:\n");
        for v in &self.verdicts {
            let value = v.value.map_or("not measured".into(), |x| format!("{x:.2}"));
            let mark = if v.met { "met" } else { "**MISSED**" };
            let _ = writeln!(out, "- {mark}: {} (measured {value})", v.what);
        }
        out
    }

    /// Server CPU per pipelined request by category, cmdchan beside the ceiling.
    fn breakdown(&self, out: &mut String) {
        let of = |kind| {
            self.breakdowns
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, b)| b)
        };
        let (Some(ours), Some(ceiling)) = (of(Kind::Cmdchan), of(Kind::Ceiling)) else {
            return;
        };
        let _ = writeln!(
            out,
            "\nServer CPU per pipelined round trip (16 conns × 8), µs, by category (perf samples \
             of one more run of each):\n\n| category | cmdchan | ceiling | cmdchan − ceiling |\n|---|--:|--:|--:|"
        );
        for (i, name) in CATEGORIES.iter().enumerate() {
            let (a, b) = (ours.us[i], ceiling.us[i]);
            let _ = writeln!(out, "| {name} | {a:.2} | {b:.2} | {:+.2} |", a - b);
        }
        let (a, b): (f64, f64) = (ours.us.iter().sum(), ceiling.us.iter().sum());
        let _ = writeln!(out, "| total | {a:.2} | {b:.2} | {:+.2} |", a - b);
    }

    fn cell(&self, m: Measure, kind: Kind, metric: fn(&Sample) -> f64) -> String {
        match self.results.get(&(m, kind)) {
            Some(samples) => {
                let (median, min, max) = stats(samples, metric);
                format!("{} ({}–{})", num(median), num(min), num(max))
            }
            None => "–".into(),
        }
    }
}

/// Median, min and max of one figure over the runs.
fn stats(samples: &[Sample], metric: fn(&Sample) -> f64) -> (f64, f64, f64) {
    let mut v: Vec<f64> = samples.iter().map(metric).collect();
    v.sort_by(f64::total_cmp);
    let median = match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    };
    let min = v.first().copied().unwrap_or(f64::NAN);
    let max = v.last().copied().unwrap_or(f64::NAN);
    (median, min, max)
}

/// 12,345 for large figures, 12.3 for small ones.
fn num(x: f64) -> String {
    if x.abs() >= 100.0 {
        let digits = format!("{:.0}", x);
        let (sign, digits) = digits.split_at(usize::from(digits.starts_with('-')));
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        format!("{sign}{grouped}")
    } else {
        format!("{x:.1}")
    }
}

/// Date, CPU, cores, kernel and library versions, for the README.
fn machine() -> String {
    let date = command_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let stunnel = command_line("stunnel4", &["-version"]);
    format!(
        "cmdchan-bench, {date}: {cpu}, {cores} cores shared by the servers and the load generator, \
         Linux {}, {}, {}",
        kernel.trim(),
        openssl::version::version(),
        stunnel
            .lines()
            .find(|l| l.starts_with("stunnel "))
            .unwrap_or("stunnel4 (version unknown)")
            .split(" on ")
            .next()
            .unwrap_or_default()
    )
}

/// First lines a command printed (stdout, else stderr), or "" if it could not run.
fn command_line(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text).trim().to_owned()
        })
        .unwrap_or_default()
}
