//! `vmm bench --plot`: cost per PTE update against batch size for the three
//! paging modes, as a small hand-written SVG (no plotting dependency).
//! Both axes are logarithmic: batch sizes are powers of two and the modes
//! differ by orders of magnitude.

use crate::bench::Record;
use std::fmt::Write;

const W: f64 = 640.0;
const H: f64 = 420.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 60.0;

/// Modes drawn, with their colours.
const SERIES: [(&str, &str); 3] = [("native", "#1b9e77"), ("trapped", "#d95f02"), ("pv", "#7570b3")];

/// The plot area's scales: log2 of the batch on x, log10 of ns on y.
struct Axes {
    max_batch: f64,
    lo: f64,
    hi: f64,
}

impl Axes {
    const PW: f64 = W - LEFT - RIGHT;
    const PH: f64 = H - TOP - BOTTOM;

    fn new(pts: &[&Record]) -> Axes {
        let max_batch = pts.iter().map(|r| r.batch).max().unwrap_or(1).max(2) as f64;
        let (mut lo, mut hi) =
            pts.iter().fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(r.ns_per_op), hi.max(r.ns_per_op)));
        lo = 10f64.powf(lo.log10().floor());
        hi = 10f64.powf(hi.log10().ceil());
        if hi <= lo {
            hi = lo * 10.0;
        }
        Axes { max_batch, lo, hi }
    }

    fn x(&self, b: f64) -> f64 {
        LEFT + Self::PW * b.log2() / self.max_batch.log2()
    }

    fn y(&self, ns: f64) -> f64 {
        TOP + Self::PH * (1.0 - (ns / self.lo).log10() / (self.hi / self.lo).log10())
    }
}

/// The SVG document for the `pte update` records in `records`.
pub fn pte_svg(records: &[Record]) -> String {
    let pts: Vec<&Record> =
        records.iter().filter(|r| r.op == "pte update" && r.batch > 0 && r.ns_per_op > 0.0).collect();
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">Cost of one PTE update against batch size</text>"#,
        LEFT + (W - LEFT - RIGHT) / 2.0
    );
    if pts.is_empty() {
        let _ = writeln!(svg, r#"<text x="{LEFT}" y="{}">no pte update records</text></svg>"#, H / 2.0);
        return svg;
    }
    let axes = Axes::new(&pts);
    draw_axes(&mut svg, &axes);
    for (i, (mode, colour)) in SERIES.iter().enumerate() {
        draw_series(&mut svg, &axes, &pts, i, mode, colour);
    }
    svg.push_str("</svg>\n");
    svg
}

/// Axes, grid lines with their labels, and the axis titles.
fn draw_axes(svg: &mut String, axes: &Axes) {
    let (pw, ph) = (Axes::PW, Axes::PH);
    let _ = writeln!(svg, r#"<path d="M{LEFT} {TOP} V{} H{}" stroke="black" fill="none"/>"#, TOP + ph, LEFT + pw);
    let mut b = 1.0;
    while b <= axes.max_batch {
        let _ = writeln!(
            svg,
            r##"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{1}" stroke="#ddd"/><text x="{0:.1}" y="{2}" text-anchor="middle">{3}</text>"##,
            axes.x(b),
            TOP + ph,
            TOP + ph + 16.0,
            b
        );
        b *= 8.0;
    }
    let mut t = axes.lo;
    while t <= axes.hi * 1.001 {
        let _ = writeln!(
            svg,
            r##"<line x1="{LEFT}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="#ddd"/><text x="{2}" y="{3:.1}" text-anchor="end">{4}</text>"##,
            axes.y(t),
            LEFT + pw,
            LEFT - 6.0,
            axes.y(t) + 4.0,
            fmt_ns(t)
        );
        t *= 10.0;
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">updates per batch (log scale)</text>"#,
        LEFT + pw / 2.0,
        H - 18.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="18" y="{0}" text-anchor="middle" transform="rotate(-90 18 {0})">ns per PTE update (log scale)</text>"#,
        TOP + ph / 2.0
    );
}

/// One mode's polyline and points, and its legend entry (the `i`-th).
fn draw_series(svg: &mut String, axes: &Axes, pts: &[&Record], i: usize, mode: &str, colour: &str) {
    let mut line: Vec<(f64, f64)> =
        pts.iter().filter(|r| r.mode == mode).map(|r| (axes.x(r.batch as f64), axes.y(r.ns_per_op))).collect();
    line.sort_by(|a, b| a.0.total_cmp(&b.0));
    if line.is_empty() {
        return;
    }
    let points: Vec<String> = line.iter().map(|(a, b)| format!("{a:.1},{b:.1}")).collect();
    let _ =
        writeln!(svg, r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#, points.join(" "));
    for (a, b) in &line {
        let _ = writeln!(svg, r#"<circle cx="{a:.1}" cy="{b:.1}" r="3" fill="{colour}"/>"#);
    }
    let ly = TOP + 10.0 + 20.0 * i as f64;
    let lx = LEFT + Axes::PW + 16.0;
    let _ = writeln!(
        svg,
        r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{colour}" stroke-width="2"/><text x="{}" y="{}">{mode}</text>"#,
        lx + 20.0,
        lx + 26.0,
        ly + 4.0
    );
}

fn fmt_ns(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{} µs", ns / 1e3)
    } else {
        format!("{ns} ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(mode: &str, batch: u64, ns: f64) -> Record {
        Record {
            op: "pte update".into(),
            mode: mode.into(),
            batch,
            exits_per_op: 0.0,
            instructions_per_op: None,
            ns_per_op: ns,
            kvm_exits_per_op: None,
            backend_notifies_per_op: None,
        }
    }

    #[test]
    fn draws_one_line_per_mode_inside_the_canvas() {
        let mut recs = Vec::new();
        for b in [1, 8, 64, 512] {
            recs.push(rec("native", b, 20_000.0));
            recs.push(rec("trapped", b, 40_000.0));
            recs.push(rec("pv", b, 40_000.0 / b as f64 + 25_000.0));
        }
        let svg = pte_svg(&recs);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert_eq!(svg.matches("<circle").count(), 12);
        for cap in svg.split("cy=\"").skip(1) {
            let v: f64 = cap.split('"').next().unwrap().parse().unwrap();
            assert!((TOP..=H - BOTTOM).contains(&v), "{v}");
        }
        assert!(pte_svg(&[]).contains("no pte update records"));
    }
}
