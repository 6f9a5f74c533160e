//! `vmm bench --plot`: every group of `vmm bench` rows in one SVG, drawn
//! with `plotters`' SVG backend.
//!
//! Rows are grouped by `op`, so a kind of row added to the bench later gets
//! its own panel with no change here. Each panel holds two charts: time
//! (ns per operation) and exits per operation (to the VMM, and KVM's own
//! count where the row has it). A group whose rows vary in batch size (PTE
//! updates) is drawn as lines against the batch on log axes, one line per
//! mode; any other group as bars, one per row, labelled with its mode.
//!
//! Text is written as SVG `<text>` elements: plotters' `ttf` feature is off,
//! so no font file is read and layout uses its built-in size estimate.

use crate::bench::Record;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// Size of one group's panel (both charts).
const PANEL: (u32, u32) = (1200, 320);

/// Width of the key beside each chart.
const KEY_W: u32 = 140;

/// Series colours (ColorBrewer Dark2: tell apart in print and for most
/// colour-blind readers).
const COLOURS: [RGBColor; 6] = [
    RGBColor(0x1b, 0x9e, 0x77),
    RGBColor(0xd9, 0x5f, 0x02),
    RGBColor(0x75, 0x70, 0xb3),
    RGBColor(0xe7, 0x29, 0x8a),
    RGBColor(0x66, 0xa6, 0x1e),
    RGBColor(0xa6, 0x76, 0x1d),
];

fn colour(i: usize) -> RGBAColor {
    COLOURS[i % COLOURS.len()].to_rgba()
}

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Drawing failed (plotters' error, as text).
#[derive(Debug, thiserror::Error)]
#[error("cannot draw the bench plot: {0}")]
pub struct PlotError(String);

fn err(e: impl std::fmt::Display) -> PlotError {
    PlotError(e.to_string())
}

/// One quantity read from a record.
struct Metric {
    name: &'static str,
    get: fn(&Record) -> Option<f64>,
}

/// One chart of a panel: its metrics, y-axis title and value format.
struct Chart {
    desc: &'static str,
    metrics: &'static [Metric],
    fmt: fn(f64) -> String,
}

const TIME: Chart = Chart {
    desc: "ns per op",
    // A time of zero (differencing clamps at zero) has no place on a log axis.
    metrics: &[Metric { name: "ns", get: |r| Some(r.ns_per_op).filter(|ns| *ns > 0.0) }],
    fmt: fmt_ns,
};

const EXITS: Chart = Chart {
    desc: "exits per op",
    metrics: &[
        Metric { name: "to VMM", get: |r| Some(r.exits_per_op) },
        Metric { name: "KVM", get: |r| r.kvm_exits_per_op },
    ],
    fmt: fmt_count,
};

/// The rows of `records` grouped by `op`, in order of first appearance.
pub fn groups(records: &[Record]) -> Vec<(&str, Vec<&Record>)> {
    let mut out: Vec<(&str, Vec<&Record>)> = Vec::new();
    for r in records {
        match out.iter_mut().find(|(op, _)| *op == r.op) {
            Some((_, rows)) => rows.push(r),
            None => out.push((&r.op, vec![r])),
        }
    }
    out
}

/// Whether some mode of the group was measured at several batch sizes.
fn has_batch_axis(rows: &[&Record]) -> bool {
    rows.iter().any(|a| rows.iter().any(|b| a.mode == b.mode && a.batch != b.batch))
}

/// The SVG document: one panel per group of `records`.
pub fn svg(records: &[Record]) -> Result<String, PlotError> {
    let groups = groups(records);
    let mut out = String::new();
    {
        let size = (PANEL.0, PANEL.1 * groups.len().max(1) as u32);
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        if groups.is_empty() {
            root.titled("no bench records", ("sans-serif", 20)).map_err(err)?;
        }
        for ((op, rows), area) in groups.iter().zip(root.split_evenly((groups.len(), 1))) {
            draw_group(&area, op, rows)?;
        }
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// One group's panel: its title, then time and exits side by side.
fn draw_group(area: &Area, op: &str, rows: &[&Record]) -> Result<(), PlotError> {
    let area = area.titled(op, ("sans-serif", 20)).map_err(err)?;
    let (left, right) = area.split_horizontally(PANEL.0 / 2);
    if has_batch_axis(rows) {
        let (lo, hi) = log_bounds(rows.iter().map(|r| r.ns_per_op));
        lines(&left, rows, &TIME, (lo..hi).log_scale(), log_label)?;
        let top = max_value(rows, &EXITS) * 1.1;
        lines(&right, rows, &EXITS, 0.0..top, fmt_count)
    } else {
        bars(&left, rows, &TIME)?;
        bars(&right, rows, &EXITS)
    }
}

/// Bars: one cluster per row (labelled with its mode), one bar per metric
/// the rows have, each with its value written above it.
fn bars(area: &Area, rows: &[&Record], chart: &Chart) -> Result<(), PlotError> {
    let metrics = present(rows, chart);
    let n = rows.len();
    let (area, key) = area.split_horizontally(area.dim_in_pixel().0 - KEY_W);
    let mut c = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(-0.5..n as f64 - 0.5, 0.0..max_value(rows, chart) * 1.2)
        .map_err(err)?;
    // At most `n` labels on a width of `n` puts them on the integers: the
    // rows' indices.
    let label = |x: &f64| match rows.get(x.round() as usize) {
        Some(r) if (x - x.round()).abs() < 1e-6 => r.mode.clone(),
        _ => String::new(),
    };
    c.configure_mesh()
        .disable_x_mesh()
        .light_line_style(TRANSPARENT)
        .x_labels(n)
        .x_label_formatter(&label)
        .y_label_formatter(&|v| (chart.fmt)(*v))
        .y_desc(chart.desc)
        .draw()
        .map_err(err)?;
    for (j, m) in metrics.iter().enumerate() {
        draw_bars(&mut c, rows, m, (j, metrics.len()), chart.fmt)?;
    }
    let entries: Vec<Entry> = metrics
        .iter()
        .enumerate()
        .map(|(j, m)| Entry { label: m.name.into(), colour: colour(j), style: Swatch::Bar })
        .collect();
    draw_key(&key, if entries.len() > 1 { &entries } else { &[] })
}

type BarChart<'a, 'b> = ChartContext<
    'a,
    SVGBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The `j`-th of `of` bars of each row, for metric `m`, with value labels.
fn draw_bars(
    c: &mut BarChart,
    rows: &[&Record],
    m: &Metric,
    (j, of): (usize, usize),
    fmt: fn(f64) -> String,
) -> Result<(), PlotError> {
    let colour = colour(j);
    let w = 0.8 / of as f64;
    let vals: Vec<(f64, f64)> =
        rows.iter().enumerate().filter_map(|(i, r)| Some((i as f64 - 0.4 + w * j as f64, (m.get)(r)?))).collect();
    let rects = vals.iter().map(|&(x, v)| Rectangle::new([(x, 0.0), (x + w * 0.9, v)], colour.filled()));
    c.draw_series(rects).map_err(err)?;
    let style = ("sans-serif", 12).into_text_style(c.plotting_area()).pos(Pos::new(HPos::Center, VPos::Bottom));
    let texts = vals.iter().map(|&(x, v)| Text::new(fmt(v), (x + w * 0.45, v), style.clone()));
    c.draw_series(texts).map_err(err)?;
    Ok(())
}

/// Lines against the batch size (log x), one per mode and metric: the
/// first metric solid, the others dashed; `y_fmt` labels the y ticks.
fn lines<Y>(area: &Area, rows: &[&Record], chart: &Chart, y: Y, y_fmt: fn(f64) -> String) -> Result<(), PlotError>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let metrics = present(rows, chart);
    let batches = distinct(rows.iter().map(|r| r.batch as f64));
    let x = (batches[0]..batches[batches.len() - 1]).log_scale().base(2.0);
    let (area, key) = area.split_horizontally(area.dim_in_pixel().0 - KEY_W);
    let mut c = ChartBuilder::on(&area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(x, y)
        .map_err(err)?;
    c.configure_mesh()
        .light_line_style(TRANSPARENT)
        .x_desc("operations per batch (log)")
        .x_label_formatter(&|b| format!("{b:.0}"))
        .y_desc(chart.desc)
        .y_label_formatter(&|v| y_fmt(*v))
        .draw()
        .map_err(err)?;
    let mut entries = Vec::new();
    for (i, mode) in modes(rows).into_iter().enumerate() {
        for (j, m) in metrics.iter().enumerate() {
            let label = if metrics.len() > 1 { format!("{mode} ({})", m.name) } else { mode.to_string() };
            let style = if j > 0 { Swatch::Dashed } else { Swatch::Line };
            draw_line(&mut c, points(rows, mode, m), colour(i), style)?;
            entries.push(Entry { label, colour: colour(i), style });
        }
    }
    draw_key(&key, &entries)
}

/// One line with its points.
fn draw_line<X, Y>(
    c: &mut ChartContext<SVGBackend, Cartesian2d<X, Y>>,
    pts: Vec<(f64, f64)>,
    colour: RGBAColor,
    swatch: Swatch,
) -> Result<(), PlotError>
where
    X: Ranged<ValueType = f64>,
    Y: Ranged<ValueType = f64>,
{
    let style = colour.stroke_width(2);
    if swatch == Swatch::Dashed {
        c.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style)).map_err(err)?;
    } else {
        c.draw_series(LineSeries::new(pts.clone(), style)).map_err(err)?;
    }
    c.draw_series(pts.into_iter().map(|p| Circle::new(p, 3, colour.filled()))).map_err(err)?;
    Ok(())
}

/// How a series looks in the key.
#[derive(Clone, Copy, PartialEq)]
enum Swatch {
    Bar,
    Line,
    Dashed,
}

/// One line of a chart's key.
struct Entry {
    label: String,
    colour: RGBAColor,
    style: Swatch,
}

/// The key, in its own strip beside the chart (so it never hides data).
fn draw_key(area: &Area, entries: &[Entry]) -> Result<(), PlotError> {
    for (i, e) in entries.iter().enumerate() {
        let y = 24 + 18 * i as i32;
        let line = e.colour.stroke_width(2);
        match e.style {
            Swatch::Bar => area.draw(&Rectangle::new([(4, y - 5), (14, y + 5)], e.colour.filled())),
            Swatch::Line => area.draw(&PathElement::new([(0, y), (18, y)], line)),
            Swatch::Dashed => area
                .draw(&PathElement::new([(0, y), (6, y)], line))
                .and_then(|()| area.draw(&PathElement::new([(12, y), (18, y)], line))),
        }
        .map_err(err)?;
        let style = ("sans-serif", 12).into_text_style(area).pos(Pos::new(HPos::Left, VPos::Center));
        area.draw(&Text::new(e.label.as_str(), (24, y), style)).map_err(err)?;
    }
    Ok(())
}

/// The chart's metrics that at least one row has.
fn present<'c>(rows: &[&Record], chart: &'c Chart) -> Vec<&'c Metric> {
    chart.metrics.iter().filter(|m| rows.iter().any(|r| (m.get)(r).is_some())).collect()
}

/// The largest value of the chart's metrics (1 if all are zero).
fn max_value(rows: &[&Record], chart: &Chart) -> f64 {
    let vals = rows.iter().flat_map(|r| chart.metrics.iter().filter_map(|m| (m.get)(r)));
    let max = vals.fold(0.0, f64::max);
    if max > 0.0 {
        max
    } else {
        1.0
    }
}

/// A log axis's bounds around the positive values: from the power of ten
/// below (plotters puts log ticks at the powers of ten in range and steps
/// between them) to some room above.
fn log_bounds(vals: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = vals.filter(|v| *v > 0.0).fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if hi == 0.0 {
        (1.0, 10.0)
    } else {
        (10f64.powf(lo.log10().floor()), hi * 1.5)
    }
}

/// Sorted distinct values.
fn distinct(vals: impl Iterator<Item = f64>) -> Vec<f64> {
    let mut v: Vec<f64> = vals.collect();
    v.sort_by(f64::total_cmp);
    v.dedup();
    v
}

/// The group's modes, in order of first appearance.
fn modes<'r>(rows: &[&'r Record]) -> Vec<&'r str> {
    let mut out: Vec<&str> = Vec::new();
    for r in rows {
        if !out.contains(&r.mode.as_str()) {
            out.push(&r.mode);
        }
    }
    out
}

/// `(batch, value)` of one mode's rows for metric `m`, by batch (rows with
/// batch 0 have no place on the log batch axis and are left out).
fn points(rows: &[&Record], mode: &str, m: &Metric) -> Vec<(f64, f64)> {
    let mut pts: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| r.mode == mode && r.batch > 0)
        .filter_map(|r| Some((r.batch as f64, (m.get)(r)?)))
        .collect();
    pts.sort_by(|a, b| a.0.total_cmp(&b.0));
    pts
}

/// Nanoseconds in the unit that keeps the number short: `900 ns`,
/// `1.25 µs`, `30 µs`, `2.5 ms`.
fn fmt_ns(ns: f64) -> String {
    let (v, unit) = match ns {
        n if n >= 1e6 => (n / 1e6, "ms"),
        n if n >= 1e3 => (n / 1e3, "µs"),
        n => (n, "ns"),
    };
    format!("{} {unit}", fmt_count(v))
}

/// A log time axis's tick label: only at 1, 2 and 5 times a power of ten,
/// so the ticks between stay unlabelled.
fn log_label(ns: f64) -> String {
    let mantissa = ns / 10f64.powf(ns.log10().floor());
    if [1.0, 2.0, 5.0, 10.0].iter().any(|m| (mantissa - m).abs() < 1e-6) {
        fmt_ns(ns)
    } else {
        String::new()
    }
}

/// Three significant digits at most, trailing zeros dropped.
fn fmt_count(v: f64) -> String {
    let decimals = match v.abs() {
        a if a >= 100.0 => 0,
        a if a >= 10.0 => 1,
        _ => 2,
    };
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(op: &str, mode: &str, batch: u64, ns: f64, exits: f64, kvm: Option<f64>) -> Record {
        Record {
            op: op.into(),
            mode: mode.into(),
            batch,
            exits_per_op: exits,
            instructions_per_op: None,
            ns_per_op: ns,
            kvm_exits_per_op: kvm,
            backend_notifies_per_op: None,
            backend_kicks_per_op: None,
            below_noise: false,
        }
    }

    /// Rows like `vmm bench`'s, plus a group no plot code knows about.
    fn records() -> Vec<Record> {
        let mut v = vec![
            rec("console byte", "uart", 1, 30_000.0, 1.0, Some(1.0)),
            rec("console byte", "ring", 1, 900.0, 0.02, Some(0.02)),
            rec("event round trip", "doorbell", 1, 60_000.0, 0.0, Some(1.0)),
            rec("event round trip", "hypercall", 1, 80_000.0, 1.0, Some(1.0)),
            rec("blk 4k randread", "ring+doorbell", 8, 200_000.0, 0.1, None),
            rec("frobnicate", "xen", 1, 5_000.0, 2.0, None),
            rec("frobnicate", "virtio", 1, 4_000.0, 1.5, None),
        ];
        for b in [1, 8, 64, 512] {
            v.push(rec("pte update", "native", b, 20_000.0, 0.0, Some(0.0)));
            v.push(rec("pte update", "trapped", b, 40_000.0, 1.0, Some(1.0)));
            v.push(rec("pte update", "pv", b, 40_000.0 / b as f64 + 25_000.0, 1.0 / b as f64, Some(1.0 / b as f64)));
        }
        v
    }

    /// All text of the document, as parsed XML.
    fn texts(svg: &str) -> Vec<String> {
        let doc = roxmltree::Document::parse(svg).expect("well-formed XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        doc.descendants().filter(|n| n.is_text()).filter_map(|n| n.text()).map(|t| t.trim().to_string()).collect()
    }

    #[test]
    fn groups_rows_by_op_in_order_of_first_appearance() {
        let recs = records();
        let g = groups(&recs);
        let ops: Vec<&str> = g.iter().map(|(op, _)| *op).collect();
        assert_eq!(ops, ["console byte", "event round trip", "blk 4k randread", "frobnicate", "pte update"]);
        assert_eq!(g[4].1.len(), 12);
        assert!(has_batch_axis(&g[4].1));
        assert!(!g[..4].iter().any(|(_, rows)| has_batch_axis(rows)));
    }

    #[test]
    fn draws_every_group_and_series_as_well_formed_svg() {
        let t = texts(&svg(&records()).unwrap());
        let has = |s: &str| t.iter().any(|x| x == s);
        for op in ["console byte", "event round trip", "blk 4k randread", "frobnicate", "pte update"] {
            assert!(has(op), "no panel titled {op:?}");
        }
        // Bar groups: one label per mode on the category axis.
        for mode in ["uart", "ring", "doorbell", "hypercall", "ring+doorbell", "xen", "virtio"] {
            assert!(has(mode), "no bar labelled {mode:?}");
        }
        // Line group: one legend entry per mode (time), and per mode and
        // exit count where KVM's count is present too.
        for mode in ["native", "trapped", "pv"] {
            assert!(has(mode), "no line for {mode:?}");
            assert!(has(&format!("{mode} (to VMM)")) && has(&format!("{mode} (KVM)")), "{mode}");
        }
        for axis in ["ns per op", "exits per op", "operations per batch (log)"] {
            assert!(has(axis), "no axis titled {axis:?}");
        }
        // Bar value labels, in the chart's units.
        assert!(has("30 µs") && has("900 ns") && has("1.5") && has("0.02"), "{t:?}");
    }

    #[test]
    fn draws_an_empty_bench_as_a_titled_document() {
        let t = texts(&svg(&[]).unwrap());
        assert!(t.iter().any(|x| x == "no bench records"));
    }

    #[test]
    fn formats_values_short_in_their_unit() {
        assert_eq!(fmt_ns(900.0), "900 ns");
        assert_eq!(fmt_ns(1250.0), "1.25 µs");
        assert_eq!(fmt_ns(30_000.0), "30 µs");
        assert_eq!(fmt_ns(2_500_000.0), "2.5 ms");
        assert_eq!(fmt_count(0.0), "0");
        assert_eq!(fmt_count(0.126), "0.13");
        assert_eq!(fmt_count(12.34), "12.3");
        assert_eq!(log_label(20_000.0), "20 µs");
        assert_eq!(log_label(30_000.0), "");
    }

    #[test]
    fn log_bounds_start_at_a_power_of_ten_and_enclose_the_values() {
        let (lo, hi) = log_bounds([0.0, 250.0, 42_000.0].into_iter());
        assert_eq!(lo, 100.0);
        assert!(hi > 42_000.0, "{hi}");
        assert_eq!(log_bounds([0.0].into_iter()), (1.0, 10.0));
    }
}
