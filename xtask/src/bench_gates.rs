//! The performance gates of `bench/gates.toml`: parse them, compare each with
//! the measured figures, decide.
//!
//! The file is a list of `[[gate]]` tables, each preceded by `#` comment
//! lines that say why the bound is what it is:
//!
//! ```toml
//! # The seed promised it; a quiet run does 40 µs.
//! [[gate]]
//! name = "100 subscriptions dispatched in under 1 ms"
//! metric = "inproc.floor.dispatch_100_distinct_us"
//! max = 1000
//! ```
//!
//! Keys: `name`, `metric` (a figure of the report), exactly one of `min` and
//! `max`, and optionally `quick = false` for gates whose figure the quick run
//! does not measure. Only this subset of TOML is read, so xtask needs no TOML
//! parser.

use std::collections::BTreeMap;
use std::fmt;

use anyhow::{Context, Result, bail};

/// Which side of the bound a figure must stay on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Bound {
    /// The figure must be at least this.
    Min(f64),
    /// The figure must be at most this.
    Max(f64),
}

impl fmt::Display for Bound {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Bound::Min(v) => write!(f, ">= {}", number(*v)),
            Bound::Max(v) => write!(f, "<= {}", number(*v)),
        }
    }
}

/// A number printed with at most three decimals and no trailing zeros.
pub(crate) fn number(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s.is_empty() || s == "-" {
        "0".to_owned()
    } else {
        s.to_owned()
    }
}

/// One gate.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Gate {
    pub(crate) name: String,
    pub(crate) metric: String,
    pub(crate) bound: Bound,
    /// The comment above the gate.
    pub(crate) why: String,
    /// Whether the quick run checks it.
    pub(crate) quick: bool,
}

/// What became of one gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Pass,
    Fail,
    /// The figure was not produced although the run should have: a failure.
    Missing,
    /// The quick run does not measure it.
    Skipped,
}

impl Outcome {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Outcome::Pass => "pass",
            Outcome::Fail => "FAIL",
            Outcome::Missing => "MISSING",
            Outcome::Skipped => "skipped",
        }
    }

    pub(crate) fn failed(self) -> bool {
        matches!(self, Outcome::Fail | Outcome::Missing)
    }
}

/// A gate with its figure and outcome.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Verdict {
    pub(crate) gate: Gate,
    pub(crate) value: Option<f64>,
    pub(crate) outcome: Outcome,
}

/// Parses the gates file.
pub(crate) fn parse(text: &str) -> Result<Vec<Gate>> {
    #[derive(Default)]
    struct Partial {
        name: Option<String>,
        metric: Option<String>,
        min: Option<f64>,
        max: Option<f64>,
        quick: Option<bool>,
        why: String,
        line: usize,
    }
    fn finish(p: Partial) -> Result<Gate> {
        let at = p.line;
        let name = p
            .name
            .with_context(|| format!("gate at line {at} has no name"))?;
        let metric = p
            .metric
            .with_context(|| format!("gate {name:?} has no metric"))?;
        let bound = match (p.min, p.max) {
            (Some(min), None) => Bound::Min(min),
            (None, Some(max)) => Bound::Max(max),
            (Some(_), Some(_)) => bail!("gate {name:?} has both min and max"),
            (None, None) => bail!("gate {name:?} has neither min nor max"),
        };
        if p.why.trim().is_empty() {
            bail!("gate {name:?} has no `#` comment saying why");
        }
        Ok(Gate {
            name,
            metric,
            bound,
            why: p.why.trim().to_owned(),
            quick: p.quick.unwrap_or(true),
        })
    }

    let mut gates = Vec::new();
    let mut current: Option<Partial> = None;
    let mut comment = String::new();
    for (index, raw) in text.lines().enumerate() {
        let line_number = index + 1;
        let line = raw.trim();
        if let Some(text) = line.strip_prefix('#') {
            if !comment.is_empty() {
                comment.push(' ');
            }
            comment.push_str(text.trim());
            continue;
        }
        if line.is_empty() {
            continue;
        }
        if line == "[[gate]]" {
            if let Some(done) = current.take() {
                gates.push(finish(done)?);
            }
            current = Some(Partial {
                why: std::mem::take(&mut comment),
                line: line_number,
                ..Partial::default()
            });
            continue;
        }
        let gate = current
            .as_mut()
            .with_context(|| format!("line {line_number}: {line:?} outside a [[gate]]"))?;
        let (key, value) = line
            .split_once('=')
            .with_context(|| format!("line {line_number}: expected key = value"))?;
        let value = strip_trailing_comment(value.trim());
        let key = key.trim();
        let duplicate = || anyhow::anyhow!("line {line_number}: {key} given twice");
        match key {
            "name" | "metric" => {
                let text = value
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .with_context(|| format!("line {line_number}: {key} must be a quoted string"))?
                    .to_owned();
                let slot = if key == "name" {
                    &mut gate.name
                } else {
                    &mut gate.metric
                };
                if slot.replace(text).is_some() {
                    return Err(duplicate());
                }
            }
            "min" | "max" => {
                let parsed: f64 = value.replace('_', "").parse().with_context(|| {
                    format!("line {line_number}: {key} must be a number, not {value:?}")
                })?;
                if !parsed.is_finite() {
                    bail!("line {line_number}: {key} must be finite");
                }
                let slot = if key == "min" {
                    &mut gate.min
                } else {
                    &mut gate.max
                };
                if slot.replace(parsed).is_some() {
                    return Err(duplicate());
                }
            }
            "quick" => {
                let flag = match value {
                    "true" => true,
                    "false" => false,
                    _ => bail!("line {line_number}: quick must be true or false"),
                };
                if gate.quick.replace(flag).is_some() {
                    return Err(duplicate());
                }
            }
            other => bail!("line {line_number}: unknown key {other:?}"),
        }
        comment.clear();
    }
    if let Some(done) = current.take() {
        gates.push(finish(done)?);
    }
    let mut names = std::collections::HashSet::new();
    for gate in &gates {
        if !names.insert(gate.name.as_str()) {
            bail!("two gates are named {:?}", gate.name);
        }
    }
    Ok(gates)
}

fn strip_trailing_comment(value: &str) -> &str {
    if let Some(inner) = value.strip_prefix('"') {
        // A quoted string may contain '#': cut after its closing quote.
        match inner.find('"') {
            Some(end) => &value[..end + 2],
            None => value,
        }
    } else {
        value.split('#').next().unwrap_or("").trim()
    }
}

/// Compares every gate with the figures. A gate whose figure is missing
/// fails, unless it is skipped in a quick run; a figure that is not a number
/// (NaN) fails.
pub(crate) fn evaluate(
    gates: &[Gate],
    figures: &BTreeMap<String, f64>,
    quick: bool,
) -> Vec<Verdict> {
    gates
        .iter()
        .map(|gate| {
            let value = figures.get(&gate.metric).copied();
            let outcome = if quick && !gate.quick {
                Outcome::Skipped
            } else {
                match value {
                    None => Outcome::Missing,
                    Some(v) if v.is_nan() => Outcome::Fail,
                    Some(v) => match gate.bound {
                        Bound::Min(min) if v >= min => Outcome::Pass,
                        Bound::Max(max) if v <= max => Outcome::Pass,
                        _ => Outcome::Fail,
                    },
                }
            };
            Verdict {
                gate: gate.clone(),
                value,
                outcome,
            }
        })
        .collect()
}

/// Whether the run passes: no gate failed or went missing.
pub(crate) fn passed(verdicts: &[Verdict]) -> bool {
    !verdicts.iter().any(|v| v.outcome.failed())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
# Throughput: a quiet run reaches 10 million.
# Half of it is the gate.
[[gate]]
name = "fan-out"
metric = "inproc.fanout.deliveries_per_sec"
min = 5_000_000   # the issue's target

# Latency must stay low.
[[gate]]
name = "p99 # not a comment"
metric = "loopback.subs.paced20_c100.p99_ms"
max = 10
quick = false
"#;

    fn figures(pairs: &[(&str, f64)]) -> BTreeMap<String, f64> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
    }

    #[test]
    fn parses_gates_with_their_reasons() {
        let gates = parse(SAMPLE).unwrap();
        assert_eq!(gates.len(), 2);
        assert_eq!(gates[0].bound, Bound::Min(5_000_000.0));
        assert_eq!(
            gates[0].why,
            "Throughput: a quiet run reaches 10 million. Half of it is the gate."
        );
        assert!(gates[0].quick);
        assert_eq!(gates[1].name, "p99 # not a comment");
        assert_eq!(gates[1].bound, Bound::Max(10.0));
        assert!(!gates[1].quick);
    }

    #[test]
    fn figures_within_their_bounds_pass() {
        let gates = parse(SAMPLE).unwrap();
        let verdicts = evaluate(
            &gates,
            &figures(&[
                ("inproc.fanout.deliveries_per_sec", 9e6),
                ("loopback.subs.paced20_c100.p99_ms", 3.5),
            ]),
            false,
        );
        assert!(verdicts.iter().all(|v| v.outcome == Outcome::Pass));
        assert!(passed(&verdicts));
    }

    #[test]
    fn a_deliberately_broken_gate_fails_the_run() {
        // The same figures, but a gate set above what was measured: the run must fail.
        let broken = SAMPLE.replace("min = 5_000_000", "min = 50_000_000");
        let gates = parse(&broken).unwrap();
        let verdicts = evaluate(
            &gates,
            &figures(&[
                ("inproc.fanout.deliveries_per_sec", 9e6),
                ("loopback.subs.paced20_c100.p99_ms", 3.5),
            ]),
            false,
        );
        assert_eq!(verdicts[0].outcome, Outcome::Fail);
        assert_eq!(verdicts[1].outcome, Outcome::Pass);
        assert!(!passed(&verdicts));
    }

    #[test]
    fn a_max_gate_fails_above_its_bound() {
        let gates = parse(SAMPLE).unwrap();
        let verdicts = evaluate(
            &gates,
            &figures(&[
                ("inproc.fanout.deliveries_per_sec", 9e6),
                ("loopback.subs.paced20_c100.p99_ms", 10.5),
            ]),
            false,
        );
        assert_eq!(verdicts[1].outcome, Outcome::Fail);
        assert!(!passed(&verdicts));
    }

    #[test]
    fn a_missing_or_nan_figure_fails_and_quick_skips_what_it_does_not_measure() {
        let gates = parse(SAMPLE).unwrap();
        let verdicts = evaluate(
            &gates,
            &figures(&[("inproc.fanout.deliveries_per_sec", f64::NAN)]),
            false,
        );
        assert_eq!(verdicts[0].outcome, Outcome::Fail);
        assert_eq!(verdicts[1].outcome, Outcome::Missing);
        assert!(!passed(&verdicts));

        let quick = evaluate(
            &gates,
            &figures(&[("inproc.fanout.deliveries_per_sec", 6e6)]),
            true,
        );
        assert_eq!(quick[0].outcome, Outcome::Pass);
        assert_eq!(quick[1].outcome, Outcome::Skipped);
        assert!(passed(&quick));
    }

    #[test]
    fn refuses_malformed_gates() {
        let both = "# why\n[[gate]]\nname = \"a\"\nmetric = \"m\"\nmin = 1\nmax = 2\n";
        assert!(parse(both).unwrap_err().to_string().contains("both"));
        let neither = "# why\n[[gate]]\nname = \"a\"\nmetric = \"m\"\n";
        assert!(parse(neither).unwrap_err().to_string().contains("neither"));
        let no_reason = "[[gate]]\nname = \"a\"\nmetric = \"m\"\nmin = 1\n";
        assert!(parse(no_reason).unwrap_err().to_string().contains("why"));
        let unknown = "# why\n[[gate]]\nname = \"a\"\nmetric = \"m\"\nmin = 1\nmaximum = 3\n";
        assert!(parse(unknown).is_err());
        let not_a_number = "# why\n[[gate]]\nname = \"a\"\nmetric = \"m\"\nmin = fast\n";
        assert!(parse(not_a_number).is_err());
        let twice = "# why\n[[gate]]\nname = \"a\"\nmetric = \"m\"\nmin = 1\n# why\n[[gate]]\nname = \"a\"\nmetric = \"n\"\nmin = 1\n";
        assert!(parse(twice).unwrap_err().to_string().contains("two gates"));
    }

    #[test]
    fn the_checked_in_gates_parse_and_each_says_why() {
        let gates = parse(include_str!("../../bench/gates.toml")).unwrap();
        assert!(gates.len() >= 10);
        assert!(gates.iter().all(|g| !g.why.is_empty()));
    }
}
