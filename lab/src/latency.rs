//! Percentiles from a Prometheus histogram: the worker's own delivery-to-ack histogram, read
//! before and after a run, gives the latency of what happened in between. Used by `bench` and
//! `demo`.

/// `le` → cumulative count of a Prometheus histogram (`{name}_bucket`), for the series whose
/// labels include `selector` (e.g. `actor="processor"`; empty for a histogram without labels).
pub fn histogram(metrics: &str, name: &str, selector: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{");
    let mut buckets: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter(|rest| rest.contains(selector))
        .filter_map(|rest| {
            let (labels, count) = rest.split_once("} ")?;
            let le = labels.split("le=\"").nth(1)?.split('"').next()?;
            let le = if le == "+Inf" { f64::INFINITY } else { le.parse().ok()? };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// The `q` quantile of the observations between two scrapes of a histogram, interpolated
/// linearly within the bucket it falls in.
pub fn quantile(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let counts: Vec<(f64, f64)> =
        after.iter().map(|(le, n)| (*le, n - before.iter().find(|(b, _)| b == le).map_or(0.0, |(_, m)| *m))).collect();
    let total = counts.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut previous = (0.0, 0.0);
    for (le, cumulative) in counts {
        if cumulative >= rank {
            if le.is_infinite() {
                return Some(previous.0);
            }
            let share = (rank - previous.1) / (cumulative - previous.1).max(f64::MIN_POSITIVE);
            return Some(previous.0 + (le - previous.0) * share);
        }
        previous = (le, cumulative);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_within_buckets_of_the_difference() {
        let before = [(0.01, 10.0), (0.02, 10.0), (f64::INFINITY, 10.0)];
        let after = [(0.01, 60.0), (0.02, 110.0), (f64::INFINITY, 110.0)];
        assert_eq!(quantile(&before, &after, 0.5), Some(0.01));
        assert!((quantile(&before, &after, 0.75).unwrap() - 0.015).abs() < 1e-9);
        assert_eq!(quantile(&after, &after, 0.5), None, "no observations");
    }

    #[test]
    fn histograms_are_read_from_the_exposition() {
        let text = "x_bucket{le=\"0.5\"} 3\nx_bucket{le=\"+Inf\"} 4\nx_count 4\n\
                    y_bucket{actor=\"a\",le=\"1\"} 1\ny_bucket{actor=\"b\",le=\"1\"} 2\n";
        assert_eq!(histogram(text, "x", ""), vec![(0.5, 3.0), (f64::INFINITY, 4.0)]);
        assert_eq!(histogram(text, "y", "actor=\"b\""), vec![(1.0, 2.0)]);
    }
}
