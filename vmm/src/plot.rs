//! `vmm bench --plot`: every group of rows as one SVG drawn with
//! `plotters`' SVG backend: the cost per PTE update against batch size
//! (one line per paging mode, both axes logarithmic), and one bar panel
//! each for the null hypercall, the console byte, the event round trip and
//! the block request over both transports (nanoseconds per operation on a
//! log scale: the rows differ by orders of magnitude).

use crate::bench::Record;
use plotters::coord::ranged1d::SegmentValue;
use plotters::prelude::*;

const W: u32 = 1100;
const H: u32 = 760;

/// Paging modes drawn, with their colours.
const SERIES: [(&str, RGBColor); 3] = [
    ("native", RGBColor(0x1b, 0x9e, 0x77)),
    ("trapped", RGBColor(0xd9, 0x5f, 0x02)),
    ("pv", RGBColor(0x75, 0x70, 0xb3)),
];

/// The bar panels: title and which rows (by `op` prefix) they show.
const GROUPS: [(&str, &str); 4] = [
    ("null hypercall (and the raw exit)", "null hypercall|port-io exit"),
    ("console byte", "console byte"),
    ("event round trip", "event round trip"),
    ("4 KiB random block request, Xen ring vs virtio", "blk 4k"),
];

type Err = Box<dyn std::error::Error>;

/// The SVG document for `records`.
pub fn bench_svg(records: &[Record]) -> String {
    let mut svg = String::new();
    if let Err(e) = draw(&mut svg, records) {
        tracing::warn!("plot: {e}");
    }
    svg
}

fn draw(svg: &mut String, records: &[Record]) -> Result<(), Err> {
    let root = SVGBackend::with_string(svg, (W, H)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(H / 2);
    let top = top.split_evenly((1, 2));
    let bottom = bottom.split_evenly((1, 3));
    pte_panel(&top[0], records)?;
    bar_panel(&top[1], GROUPS[0], records)?;
    for (area, group) in bottom.iter().zip(&GROUPS[1..]) {
        bar_panel(area, *group, records)?;
    }
    root.present()?;
    Ok(())
}

/// Decade bounds around every value.
fn log_range(values: impl Iterator<Item = f64>) -> Option<std::ops::Range<f64>> {
    let (lo, hi) = values.filter(|v| *v > 0.0).fold((f64::MAX, f64::MIN), |(l, h), v| (l.min(v), h.max(v)));
    if lo > hi {
        return None;
    }
    let lo = 10f64.powf(lo.log10().floor());
    let hi = 10f64.powf(hi.log10().ceil()).max(lo * 10.0);
    Some(lo..hi)
}

fn empty(area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, title: &str) -> Result<(), Err> {
    area.titled(title, ("sans-serif", 16))?.draw_text(
        "no records",
        &("sans-serif", 14).into_text_style(area),
        (20, 40),
    )?;
    Ok(())
}

/// Cost per PTE update against batch size, one line per paging mode.
fn pte_panel(area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>, records: &[Record]) -> Result<(), Err> {
    let title = "pte update: ns per update against batch size";
    let pts: Vec<&Record> =
        records.iter().filter(|r| r.op == "pte update" && r.batch > 0 && r.ns_per_op > 0.0).collect();
    let Some(y) = log_range(pts.iter().map(|r| r.ns_per_op)) else { return empty(area, title) };
    let max_batch = pts.iter().map(|r| r.batch).max().unwrap_or(1).max(2) as f64;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((1f64..max_batch).log_scale(), y.log_scale())?;
    chart.configure_mesh().x_desc("updates per batch").y_desc("ns per update").draw()?;
    for (mode, colour) in SERIES {
        let mut line: Vec<(f64, f64)> =
            pts.iter().filter(|r| r.mode == mode).map(|r| (r.batch as f64, r.ns_per_op)).collect();
        if line.is_empty() {
            continue;
        }
        line.sort_by(|a, b| a.0.total_cmp(&b.0));
        chart
            .draw_series(LineSeries::new(line.clone(), colour.stroke_width(2)))?
            .label(mode)
            .legend(move |(x, y)| Rectangle::new([(x, y - 4), (x + 16, y + 4)], colour.filled()));
        chart.draw_series(line.into_iter().map(|p| Circle::new(p, 3, colour.filled())))?;
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    Ok(())
}

/// One bar per row whose `op` starts with one of `group`'s `|`-separated
/// prefixes, labelled by mode (and op where the group has several).
fn bar_panel(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    (title, ops): (&str, &str),
    records: &[Record],
) -> Result<(), Err> {
    let rows: Vec<&Record> =
        records.iter().filter(|r| ops.split('|').any(|p| r.op.starts_with(p)) && r.ns_per_op > 0.0).collect();
    let Some(y) = log_range(rows.iter().map(|r| r.ns_per_op)) else { return empty(area, title) };
    let labels: Vec<String> = rows
        .iter()
        .map(|r| {
            let op = r.op.trim_start_matches("blk 4k ").trim_start_matches("null hypercall");
            if op.is_empty() || r.op.starts_with("console") || r.op.starts_with("event") {
                r.mode.clone()
            } else {
                format!("{} {}", op.trim(), r.mode)
            }
        })
        .collect();
    let lo = y.start;
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d((0..rows.len() as u32).into_segmented(), y.log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("ns per operation")
        .x_labels(rows.len())
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) => labels.get(*i as usize).cloned().unwrap_or_default(),
            _ => String::new(),
        })
        .draw()?;
    chart.draw_series(rows.iter().enumerate().map(|(i, r)| {
        let colour = Palette99::pick(i).mix(0.8);
        Rectangle::new(
            [(SegmentValue::Exact(i as u32), lo), (SegmentValue::Exact(i as u32 + 1), r.ns_per_op)],
            colour.filled(),
        )
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(op: &str, mode: &str, batch: u64, ns: f64) -> Record {
        Record {
            op: op.into(),
            mode: mode.into(),
            batch,
            exits_per_op: 0.0,
            instructions_per_op: None,
            ns_per_op: ns,
            kvm_exits_per_op: None,
            backend_notifies_per_op: None,
            backend_kicks_per_op: None,
        }
    }

    #[test]
    fn draws_every_group() {
        let mut recs = Vec::new();
        for b in [1, 8, 64, 512] {
            recs.push(rec("pte update", "native", b, 20_000.0));
            recs.push(rec("pte update", "trapped", b, 40_000.0));
            recs.push(rec("pte update", "pv", b, 40_000.0 / b as f64 + 25_000.0));
        }
        recs.push(rec("null hypercall", "pv", 1, 16_000.0));
        recs.push(rec("console byte", "uart", 1, 19_000.0));
        recs.push(rec("console byte", "ring", 1, 6_000.0));
        recs.push(rec("event round trip", "doorbell", 1, 400_000.0));
        for t in ["ring+doorbell", "virtio-mmio"] {
            recs.push(rec("blk 4k randread", t, 8, 700_000.0));
            recs.push(rec("blk 4k randwrite", t, 8, 800_000.0));
        }
        let svg = bench_svg(&recs);
        if let Ok(p) = std::env::var("PLOT_OUT") {
            std::fs::write(p, &svg).unwrap();
        }
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "{svg}");
        for (title, _) in GROUPS {
            assert!(svg.contains(&title.replace('&', "&amp;")), "{title}");
        }
        assert!(svg.contains("pte update: ns per update"));
        assert!(svg.contains("randread virtio-mmio") && svg.contains("randwrite ring+doorbell"));
        assert_eq!(svg.matches("<circle").count(), 12, "one point per PTE row");
        let empty = bench_svg(&[]);
        assert!(empty.matches("no records").count() == 5, "{empty}");
    }
}
