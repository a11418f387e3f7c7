//! What the soak saw, its checks, and the Markdown report.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::answer::{Fault, Outcome, Transport};

/// Outcomes counted by transport and fault.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub counts: BTreeMap<(Transport, Fault), BTreeMap<Outcome, u64>>,
}

impl Tally {
    pub fn add(&mut self, transport: Transport, fault: Fault, outcome: Outcome) {
        *self
            .counts
            .entry((transport, fault))
            .or_default()
            .entry(outcome)
            .or_default() += 1;
    }

    pub fn merge(&mut self, other: Tally) {
        for (k, outcomes) in other.counts {
            let mine = self.counts.entry(k).or_default();
            for (o, n) in outcomes {
                *mine.entry(o).or_default() += n;
            }
        }
    }

    /// Outcomes of the answers `keep` selects, summed.
    pub fn sum(&self, keep: impl Fn(Transport, Fault) -> bool) -> Sum {
        let mut s = Sum::default();
        for ((t, f), outcomes) in &self.counts {
            if !keep(*t, *f) {
                continue;
            }
            for (o, n) in outcomes {
                s.answers += n;
                match o {
                    Outcome::Done => s.done += n,
                    Outcome::Error(code) => {
                        s.error += n;
                        *s.codes.entry(code.clone()).or_default() += n;
                    }
                    Outcome::Left => s.left += n,
                    Outcome::Closed => s.closed += n,
                    Outcome::TimedOut => s.timed_out += n,
                }
            }
        }
        s
    }

    pub fn answers(&self) -> u64 {
        self.sum(|_, _| true).answers
    }
}

#[derive(Debug, Default, Clone)]
pub struct Sum {
    pub answers: u64,
    pub done: u64,
    pub error: u64,
    pub codes: BTreeMap<String, u64>,
    pub left: u64,
    pub closed: u64,
    pub timed_out: u64,
}

impl Sum {
    fn codes(&self) -> String {
        let mut codes: Vec<_> = self.codes.iter().collect();
        codes.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
        codes
            .iter()
            .take(3)
            .map(|(c, n)| format!("{c} {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Resident memory of the hub, KiB.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    pub fresh: u64,
    pub warm: u64,
    pub peak: u64,
    pub after: u64,
}

#[derive(Debug, Clone)]
pub struct SoakReport {
    pub mode: String,
    pub hub_bin: String,
    pub answers: u64,
    pub concurrency: usize,
    pub fault_percent: f64,
    pub seconds: f64,
    pub settle_seconds: f64,
    pub tally: Tally,
    pub rss: Rss,
    /// Stored assistant messages by status.
    pub rows: BTreeMap<String, u64>,
    pub checks: Vec<Check>,
}

impl SoakReport {
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let faults = self.tally.sum(|_, f| f != Fault::None).answers;
        let _ = writeln!(
            md,
            "### Soak ({}): {} answers, {} with faults ({:.1} %), {} clients, {:.0} s\n",
            self.mode,
            self.answers,
            faults,
            100.0 * faults as f64 / self.answers.max(1) as f64,
            self.concurrency,
            self.seconds
        );
        md.push_str(
            "| transport | answers | done | error | client left | closed by hub | no end in time |\n",
        );
        md.push_str("|---|--:|--:|--:|--:|--:|--:|\n");
        for t in Transport::ALL {
            let s = self.tally.sum(|tt, _| tt == t);
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                t.name(),
                s.answers,
                s.done,
                s.error,
                s.left,
                s.closed,
                s.timed_out
            );
        }
        md.push_str("\n| fault | answers | done | error (codes) | client left | closed by hub | no end in time |\n");
        md.push_str("|---|--:|--:|---|--:|--:|--:|\n");
        for f in std::iter::once(Fault::None).chain(Fault::INJECTED) {
            let s = self.tally.sum(|_, ff| ff == f);
            let codes = if s.codes.is_empty() {
                String::new()
            } else {
                format!(" ({})", s.codes())
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {}{} | {} | {} | {} |",
                f.name(),
                s.answers,
                s.done,
                s.error,
                codes,
                s.left,
                s.closed,
                s.timed_out
            );
        }
        md.push_str("\n| check | result | detail |\n|---|---|---|\n");
        for c in &self.checks {
            let _ = writeln!(
                md,
                "| {} | {} | {} |",
                c.name,
                if c.ok { "ok" } else { "**FAILED**" },
                c.detail
            );
        }
        let _ = writeln!(
            md,
            "\nHub: `{}`; settled {:.1} s after the last answer.",
            self.hub_bin, self.settle_seconds
        );
        md
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}
