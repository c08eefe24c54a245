//! Small, dependency-free SVG charts for reports and trackers: per-epoch
//! curves of a run and metric-versus-parameter plots of a sweep. SVG because
//! GitHub, MLflow's artifact viewer and browsers all show it as is.

use std::fmt::Write;

/// One named series of (x, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A chart: lines through each series' points (or markers only).
#[derive(Debug, Clone)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// Draw markers only (a sweep's scattered trials), no connecting lines.
    pub scatter: bool,
    /// A dashed vertical line, e.g. at the best epoch, with its label.
    pub marker: Option<(f64, String)>,
    /// Logarithmic x axis (learning rates and the like).
    pub log_x: bool,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 360.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 150.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 48.0;
/// Colour-blind-safe palette (Okabe and Ito).
const COLOURS: [&str; 8] = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"];

/// About five round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(1e-12);
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| span / s <= 6.0).unwrap_or(raw);
    let first = (lo / step).ceil() as i64;
    let last = (hi / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

fn label(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(1e-3..1e5).contains(&a) {
        format!("{v:.0e}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

impl Chart {
    pub fn svg(&self) -> String {
        let fx = |x: f64| if self.log_x { x.max(f64::MIN_POSITIVE).log10() } else { x };
        let points: Vec<(f64, f64)> = self
            .series
            .iter()
            .flat_map(|s| s.points.iter().copied())
            .filter(|(x, y)| x.is_finite() && y.is_finite())
            .collect();
        let (mut x0, mut x1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(fx(p.0)), b.max(fx(p.0))));
        let (mut y0, mut y1) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
        if points.is_empty() {
            (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
        }
        if x1 - x0 < 1e-12 {
            (x0, x1) = (x0 - 0.5, x1 + 0.5);
        }
        let pad = ((y1 - y0) * 0.08).max(y1.abs() * 0.02).max(1e-9);
        (y0, y1) = (y0 - pad, y1 + pad);
        let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
        let px = |x: f64| LEFT + (fx(x) - x0) / (x1 - x0) * plot_w;
        let py = |y: f64| TOP + (y1 - y) / (y1 - y0) * plot_h;

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" font-size="14" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            escape(&self.title)
        );
        for t in ticks(y0, y1) {
            let y = py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" x2="{:.1}" y1="{y:.1}" y2="{y:.1}" stroke="#e5e5e5"/>"##,
                LEFT + plot_w
            );
            let _ =
                writeln!(s, r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#, LEFT - 6.0, y + 4.0, label(t));
        }
        let x_ticks: Vec<f64> = if self.log_x {
            ticks(x0, x1).into_iter().filter(|t| t.fract() == 0.0).map(|t| 10f64.powf(t)).collect()
        } else {
            ticks(x0, x1)
        };
        for t in x_ticks {
            let x = px(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="#f0f0f0"/>"##,
                TOP + plot_h
            );
            let _ = writeln!(
                s,
                r#"<text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
                TOP + plot_h + 16.0,
                label(t)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w:.1}" height="{plot_h:.1}" fill="none" stroke="#333"/>"##
        );
        let _ = writeln!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            LEFT + plot_w / 2.0,
            HEIGHT - 8.0,
            escape(&self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text transform="translate(16 {:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
        if let Some((x, text)) = &self.marker {
            let x = px(*x);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" x2="{x:.1}" y1="{TOP}" y2="{:.1}" stroke="#777" stroke-dasharray="4 3"/>"##,
                TOP + plot_h
            );
            let _ =
                writeln!(s, r##"<text x="{:.1}" y="{:.1}" fill="#555">{}</text>"##, x + 4.0, TOP + 12.0, escape(text));
        }
        for (i, series) in self.series.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<(f64, f64)> = series
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| (px(x), py(y)))
                .collect();
            if !self.scatter && pts.len() > 1 {
                let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
                let _ = writeln!(
                    s,
                    r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"#,
                    path.join(" ")
                );
            }
            for (x, y) in &pts {
                let _ = writeln!(s, r#"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{colour}"/>"#);
            }
            let ly = TOP + 8.0 + i as f64 * 18.0;
            let lx = WIDTH - RIGHT + 12.0;
            let _ = writeln!(s, r#"<rect x="{lx:.1}" y="{:.1}" width="12" height="4" fill="{colour}"/>"#, ly - 2.0);
            let _ = writeln!(s, r#"<text x="{:.1}" y="{:.1}">{}</text>"#, lx + 18.0, ly + 4.0, escape(&series.name));
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_inside_the_range() {
        assert_eq!(ticks(0.0, 1.0), vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]);
        assert_eq!(ticks(3.2, 9.9), vec![4.0, 6.0, 8.0]);
        assert!(ticks(0.11, 0.13).iter().all(|t| (0.11..=0.13).contains(t)));
        assert_eq!(label(0.25), "0.25");
        assert_eq!(label(2.0), "2");
        assert_eq!(label(0.0001), "1e-4");
    }

    #[test]
    fn a_chart_draws_each_series_inside_the_frame() {
        let chart = Chart {
            title: "loss <train>".into(),
            x_label: "epoch".into(),
            y_label: "loss".into(),
            series: vec![
                Series { name: "train".into(), points: vec![(1.0, 3.0), (2.0, 2.0), (3.0, 1.5)] },
                Series { name: "flat".into(), points: vec![(1.0, 2.0), (3.0, f64::NAN)] },
            ],
            scatter: false,
            marker: Some((3.0, "best".into())),
            log_x: false,
        };
        let svg = chart.svg();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("loss &lt;train&gt;"));
        assert_eq!(svg.matches("<polyline").count(), 1, "a one-point series has no line");
        assert_eq!(svg.matches("<circle").count(), 4, "NaN points are dropped");
        for c in svg.split("<circle ").skip(1) {
            let attr = |name: &str| -> f64 {
                let rest = &c[c.find(&format!("{name}=\"")).unwrap() + name.len() + 2..];
                rest[..rest.find('"').unwrap()].parse().unwrap()
            };
            assert!((LEFT..=WIDTH - RIGHT).contains(&attr("cx")));
            assert!((TOP..=HEIGHT - BOTTOM).contains(&attr("cy")));
        }
        // The lowest loss is drawn lowest (largest y).
        assert!(svg.contains("stroke-dasharray"));
    }

    #[test]
    fn empty_and_log_charts_do_not_break() {
        let mut chart = Chart {
            title: "t".into(),
            x_label: "lr".into(),
            y_label: "recall".into(),
            series: vec![],
            scatter: true,
            marker: None,
            log_x: true,
        };
        assert!(chart.svg().contains("</svg>"));
        chart.series.push(Series { name: "trials".into(), points: vec![(1e-4, 0.1), (1e-2, 0.2), (1e-3, 0.15)] });
        let svg = chart.svg();
        assert!(!svg.contains("<polyline"));
        assert!(svg.contains(">0.001<") && svg.contains(">0.01<"), "{svg}");
    }
}
