//! A small SVG chart: throughput (bars, left axis) and p99 latency (line, right axis) for each
//! configuration of a sweep. No plotting dependency for one picture.

use std::fmt::Write;

pub struct Point {
    pub label: String,
    pub orders_per_second: f64,
    pub p99_ms: Option<f64>,
}

pub fn svg(title: &str, points: &[Point]) -> String {
    let (width, height, left, right, top, bottom) = (760.0, 400.0, 70.0, 70.0, 40.0, 60.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let max_rate = points.iter().map(|p| p.orders_per_second).fold(1.0, f64::max) * 1.15;
    let max_p99 = points.iter().filter_map(|p| p.p99_ms).fold(1.0, f64::max) * 1.15;
    let slot = plot_w / points.len().max(1) as f64;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="22" text-anchor="middle" font-size="15">{title}</text>
<line x1="{left}" y1="{}" x2="{}" y2="{}" stroke="black"/>
<line x1="{left}" y1="{top}" x2="{left}" y2="{}" stroke="black"/>
<line x1="{}" y1="{top}" x2="{}" y2="{}" stroke="black"/>
<text transform="translate(18,{}) rotate(-90)" text-anchor="middle" fill="steelblue">orders/s</text>
<text transform="translate({},{}) rotate(90)" text-anchor="middle" fill="firebrick">p99 delivery-to-ack (ms) at half the load</text>
"#,
        width / 2.0,
        top + plot_h,
        left + plot_w,
        top + plot_h,
        top + plot_h,
        left + plot_w,
        left + plot_w,
        top + plot_h,
        top + plot_h / 2.0,
        width - 18.0,
        top + plot_h / 2.0,
    );
    for tick in 0..=4 {
        let f = tick as f64 / 4.0;
        let y = top + plot_h * (1.0 - f);
        let _ = writeln!(s, r#"<text x="{}" y="{}" text-anchor="end">{:.0}</text>"#, left - 6.0, y + 4.0, max_rate * f);
        let _ = writeln!(s, r#"<text x="{}" y="{}">{:.1}</text>"#, left + plot_w + 6.0, y + 4.0, max_p99 * f);
        let _ = writeln!(s, r##"<line x1="{left}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/>"##, left + plot_w);
    }
    let mut line = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let x = left + slot * i as f64;
        let h = plot_h * p.orders_per_second / max_rate;
        let _ = writeln!(
            s,
            r#"<rect x="{}" y="{}" width="{}" height="{h}" fill="steelblue" opacity="0.8"/><text x="{}" y="{}" text-anchor="middle">{:.0}</text><text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x + slot * 0.2,
            top + plot_h - h,
            slot * 0.6,
            x + slot / 2.0,
            top + plot_h - h - 4.0,
            p.orders_per_second,
            x + slot / 2.0,
            top + plot_h + 18.0,
            p.label
        );
        if let Some(p99) = p.p99_ms {
            line.push((x + slot / 2.0, top + plot_h * (1.0 - p99 / max_p99)));
        }
    }
    let path: Vec<String> = line.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
    let _ = writeln!(s, r#"<polyline points="{}" fill="none" stroke="firebrick" stroke-width="2"/>"#, path.join(" "));
    for (x, y) in line {
        let _ = writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="firebrick"/>"#);
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">batch size / prefetch</text></svg>"#,
        left + plot_w / 2.0,
        height - 12.0
    );
    s
}
