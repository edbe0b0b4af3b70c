//! SVG plots of the OWD (arrival), hand-over latency and DWS distributions
//! (CDFs), one line per scheme.

use std::path::Path;

use anyhow::Context;
use jasper_core::metrics::{Collector, Histogram};
use plotters::prelude::*;

fn cdf_of_sorted(v: &[u64]) -> Vec<(f64, f64)> {
    let n = v.len().max(1) as f64;
    let step = (v.len() / 2000).max(1);
    v.iter()
        .enumerate()
        .step_by(step)
        .map(|(i, x)| (*x as f64 / 1e3, (i + 1) as f64 / n))
        .collect()
}

fn cdf_of_histogram(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    h.iter_quantiles(1)
        .map(|q| (q.value_iterated_to() as f64 / 1e3, q.quantile_iterated_to()))
        .collect()
}

/// Three panels: OWD (arrival), hand-over latency (release − send) and DWS
/// CDFs, one line per scheme.
pub fn cdf_svg(path: &Path, series: &[(&str, &Collector, u64)]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1500, 420)).into_drawing_area();
    root.fill(&WHITE).context("plot background")?;
    let panels = root.split_evenly((1, 3));
    let colors = [RED, BLUE, GREEN, MAGENTA, CYAN];
    let owd: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, c, _)| cdf_of_histogram(c.owd_histogram()))
        .collect();
    let handover: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, c, _)| cdf_of_histogram(c.handover_histogram()))
        .collect();
    let dws: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|(_, c, m)| {
            let mut v = c.dws_values(*m);
            v.sort_unstable();
            cdf_of_sorted(&v)
        })
        .collect();
    for (area, data, title) in [
        (&panels[0], &owd, "OWD at arrival (µs)"),
        (&panels[1], &handover, "hand-over latency (µs)"),
        (&panels[2], &dws, "DWS (µs)"),
    ] {
        let xmax = data
            .iter()
            .flat_map(|d| d.iter().filter(|p| p.1 <= 0.999).map(|p| p.0))
            .fold(1.0f64, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("CDF of {title}"), ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(40)
            .build_cartesian_2d(0f64..xmax, 0f64..1.0)
            .context("plot axes")?;
        chart
            .configure_mesh()
            .x_desc(title)
            .y_desc("fraction")
            .draw()
            .context("plot mesh")?;
        for (i, d) in data.iter().enumerate() {
            let color = colors[i % colors.len()];
            chart
                .draw_series(LineSeries::new(d.iter().copied(), color.stroke_width(2)))
                .context("plot series")?
                .label(series[i].0)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .context("legend")?;
    }
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// P(F) against the median per-message hand-over latency, one line of
/// points per scheme (a frontier).
pub fn frontier_svg(path: &Path, series: &[(&str, Vec<(f64, f64)>)]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (700, 480)).into_drawing_area();
    root.fill(&WHITE).context("plot background")?;
    let pts = series.iter().flat_map(|(_, v)| v.iter());
    let (mut x0, mut x1, mut y0) = (f64::MAX, f64::MIN, 100.0f64);
    for (x, y) in pts {
        x0 = x0.min(*x);
        x1 = x1.max(*x);
        y0 = y0.min(*y);
    }
    if x0 > x1 {
        (x0, x1) = (0.0, 1.0);
    }
    let pad = ((x1 - x0) * 0.05).max(1.0);
    let mut chart = ChartBuilder::on(&root)
        .caption("P(F) vs hand-over latency", ("sans-serif", 18))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(50)
        .build_cartesian_2d((x0 - pad)..(x1 + pad), (y0 - 1.0).max(0.0)..100.0)
        .context("plot axes")?;
    chart
        .configure_mesh()
        .x_desc("per-message max hand-over latency, median (µs)")
        .y_desc("P(F) at the threshold (%)")
        .draw()
        .context("plot mesh")?;
    let colors = [RED, BLUE, GREEN, MAGENTA];
    for (i, (name, v)) in series.iter().enumerate() {
        let color = colors[i % colors.len()];
        chart
            .draw_series(LineSeries::new(v.iter().copied(), color.stroke_width(2)))
            .context("plot series")?
            .label(*name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], color));
        chart
            .draw_series(v.iter().map(|p| Circle::new(*p, 3, color.filled())))
            .context("plot points")?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .context("legend")?;
    root.present()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
