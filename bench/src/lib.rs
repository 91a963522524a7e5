//! What the benchmark binaries share: the telemetry-overhead comparison (the same workload on a
//! node with telemetry off and one with it on, in alternating rounds) and its table.

/// Per-round costs of one workload with telemetry off and on, in the same unit.
#[derive(Debug, Clone, Default)]
pub struct TelemetryOverhead {
    /// What one cost is, for the table's header ("node CPU s", "node CPU µs per packet out").
    pub unit: String,
    pub off: Vec<f64>,
    pub on: Vec<f64>,
    /// Spans the OTLP collector received from the node with telemetry on.
    pub spans: u64,
    /// `GET /metrics` scrapes of that node.
    pub scrapes: u64,
}

/// The goal: telemetry on costs at most this much more CPU.
pub const OVERHEAD_GOAL: f64 = 1.05;

/// The median (the upper one of an even count); NaN for none.
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// How much rounds of one kind differ among themselves: max / min.
pub fn spread(v: &[f64]) -> f64 {
    let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &c| (lo.min(c), hi.max(c)));
    if v.is_empty() || lo <= 0.0 { f64::NAN } else { hi / lo }
}

impl TelemetryOverhead {
    /// Median on / median off.
    pub fn ratio(&self) -> f64 {
        median(&self.on) / median(&self.off)
    }

    /// The Markdown table, then a line on the noise and one on what the collector got.
    pub fn table(&self, on_means: &str) -> String {
        let list = |v: &[f64]| v.iter().map(|c| format!("{c:.2}")).collect::<Vec<_>>().join(", ");
        let ratio = self.ratio();
        let verdict = if ratio <= OVERHEAD_GOAL { "met" } else { "NOT met" };
        [
            format!("| telemetry | {}, median of {} rounds | rounds | ratio |", self.unit, self.off.len()),
            "|---|---|---|---|".to_owned(),
            format!("| off (no OTLP endpoint, not scraped) | {:.2} | {} | 1× |", median(&self.off), list(&self.off)),
            format!(
                "| on ({on_means}) | {:.2} | {} | {ratio:.3}× (goal ≤ {OVERHEAD_GOAL}×: {verdict}) |",
                median(&self.on),
                list(&self.on)
            ),
            format!(
                "round-to-round spread (max / min): off {:.3}×, on {:.3}× — a ratio nearer 1 than that is within the noise",
                spread(&self.off),
                spread(&self.on)
            ),
            format!("spans the collector received: {}; scrapes: {}", self.spans, self.scrapes),
        ]
        .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_is_of_medians_and_the_spread_of_extremes() {
        let o = TelemetryOverhead {
            unit: "s".into(),
            off: vec![2.0, 1.0, 3.0],
            on: vec![2.2, 9.0, 2.1],
            ..Default::default()
        };
        assert!((o.ratio() - 1.1).abs() < 1e-9);
        assert!((spread(&o.off) - 3.0).abs() < 1e-9);
        assert!(o.table("x").contains("1.100× (goal ≤ 1.05×: NOT met)"));
        assert!(median(&[]).is_nan() && spread(&[]).is_nan());
        assert_eq!(median(&[4.0, 1.0]), 4.0);
    }
}
