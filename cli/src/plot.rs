//! The latency/throughput plot of a `mosaic bench --sweep`, as SVG.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use serde_json::Value;

/// One measured point of a sweep.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Offered transactions per second.
    pub offered: f64,
    /// Committed transactions per second.
    pub committed: f64,
    /// Latency percentiles in milliseconds.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// The points of a sweep report (`{"sweep": [report, ...]}`), skipping runs that
/// committed nothing in the measured window (no latency to draw).
pub fn points(sweep: &Value) -> Vec<Point> {
    sweep["sweep"]
        .as_array()
        .map(|runs| {
            runs.iter()
                .filter_map(|r| {
                    let p = Point {
                        offered: r["offered_rate"].as_f64()?,
                        committed: r["committed_per_second"].as_f64()?,
                        p50: r["latency_ms"]["p50"].as_f64()?,
                        p90: r["latency_ms"]["p90"].as_f64()?,
                        p99: r["latency_ms"]["p99"].as_f64()?,
                    };
                    (p.committed > 0.0 && p.p50.is_finite()).then_some(p)
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Draws submit-to-commit latency (p50, p90, p99; log scale) against committed
/// throughput, each point labelled with its offered rate, into an SVG file.
pub fn latency_throughput_svg(points: &[Point], title: &str, path: &Path) -> Result<()> {
    if points.is_empty() {
        return Err(anyhow!(
            "nothing to plot: no run of the sweep committed transactions"
        ));
    }
    let x_max = points.iter().map(|p| p.committed).fold(0.0, f64::max) * 1.15;
    let y_max = points.iter().map(|p| p.p99).fold(1.0, f64::max) * 2.0;
    let y_min = points
        .iter()
        .map(|p| p.p50)
        .fold(f64::INFINITY, f64::min)
        .clamp(1.0, 100.0)
        / 2.0;
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(16)
            .x_label_area_size(44)
            .y_label_area_size(64)
            .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("committed transfers per second")
            .y_desc("submit-to-commit latency (ms, log scale)")
            .draw()?;
        let series = [("p50", BLUE, 0usize), ("p90", GREEN, 1), ("p99", RED, 2)];
        for (name, color, which) in series {
            let value = |p: &Point| [p.p50, p.p90, p.p99][which];
            let mut sorted: Vec<Point> = points.to_vec();
            sorted.sort_by(|a, b| a.offered.total_cmp(&b.offered));
            chart
                .draw_series(LineSeries::new(
                    sorted.iter().map(|p| (p.committed, value(p))),
                    color.stroke_width(2),
                ))?
                .label(name)
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
            chart.draw_series(
                sorted
                    .iter()
                    .map(|p| Circle::new((p.committed, value(p)), 4, color.filled())),
            )?;
        }
        chart.draw_series(points.iter().map(|p| {
            Text::new(
                format!("{:.0}/s offered", p.offered),
                (p.committed, p.p99 * 1.25),
                ("sans-serif", 12),
            )
        }))?;
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw()
        .map_err(|e| anyhow!("{e}"))
        .with_context(|| format!("cannot draw the plot into {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn report(offered: u64, committed: f64, p50: f64) -> Value {
        json!({
            "offered_rate": offered,
            "committed_per_second": committed,
            "latency_ms": { "p50": p50, "p90": p50 * 2.0, "p99": p50 * 3.0 },
        })
    }

    #[test]
    fn a_sweep_becomes_an_svg_with_every_series_and_point() -> Result<()> {
        let sweep = json!({ "sweep": [
            report(1000, 1000.0, 80.0),
            report(2000, 1990.0, 95.0),
            report(4000, 0.0, f64::NAN),
        ]});
        let pts = points(&sweep);
        assert_eq!(pts.len(), 2, "the run that committed nothing is skipped");
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("sweep.svg");
        latency_throughput_svg(&pts, "test sweep", &path)?;
        let svg = std::fs::read_to_string(&path)?;
        assert!(svg.starts_with("<svg"));
        for text in [
            "p50",
            "p90",
            "p99",
            "1000/s offered",
            "2000/s offered",
            "test sweep",
        ] {
            assert!(svg.contains(text), "missing {text}");
        }
        assert!(latency_throughput_svg(&[], "empty", &path).is_err());
        Ok(())
    }
}
