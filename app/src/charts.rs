//! Charts drawn with plotters' SVG backend into a string: the server draws
//! the first paint, the browser redraws the same function as points arrive.

use plotters::prelude::*;

/// Reads one figure off a point (None: not known for it).
type PointValue = Box<dyn Fn(&MetricPoint) -> Option<f64>>;

use crate::metrics::{MetricPoint, Range};

/// One line of a chart; `None` values break the line (no data there).
pub struct Series {
    pub name: String,
    pub color: (u8, u8, u8),
    pub points: Vec<(i64, Option<f64>)>,
    pub bold: bool,
}

/// Colours for up to 16 partitions, told apart by people with the common
/// colour-vision deficiencies as far as 16 colours can be.
const PALETTE: [(u8, u8, u8); 16] = [
    (0, 114, 178),
    (230, 159, 0),
    (0, 158, 115),
    (204, 121, 167),
    (86, 180, 233),
    (213, 94, 0),
    (240, 228, 66),
    (120, 94, 240),
    (100, 143, 255),
    (254, 97, 0),
    (220, 38, 127),
    (77, 175, 74),
    (152, 78, 163),
    (166, 86, 40),
    (153, 153, 153),
    (55, 126, 184),
];

pub fn color(i: usize) -> (u8, u8, u8) {
    PALETTE[i % PALETTE.len()]
}

pub const INK: (u8, u8, u8) = (30, 30, 30);

/// What a chart shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Invocations,
    Duration,
    Errors,
    Throttles,
    Concurrency,
    OffsetLag,
    TimeLag,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::OffsetLag,
        Kind::Invocations,
        Kind::Duration,
        Kind::Errors,
        Kind::Throttles,
        Kind::Concurrency,
        Kind::TimeLag,
    ];

    pub fn id(self) -> &'static str {
        match self {
            Kind::Invocations => "invocations",
            Kind::Duration => "duration",
            Kind::Errors => "errors",
            Kind::Throttles => "throttles",
            Kind::Concurrency => "concurrency",
            Kind::OffsetLag => "offset-lag",
            Kind::TimeLag => "time-lag",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Kind::Invocations => "Invocations",
            Kind::Duration => "Duration",
            Kind::Errors => "Errors",
            Kind::Throttles => "Throttles",
            Kind::Concurrency => "Concurrent executions",
            Kind::OffsetLag => "Offset lag per partition",
            Kind::TimeLag => "Time lag per partition",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Kind::Invocations | Kind::Errors | Kind::Throttles => "per second",
            Kind::Duration => "milliseconds",
            Kind::Concurrency => "invocations in flight (peak)",
            Kind::OffsetLag => "records",
            Kind::TimeLag => "seconds behind",
        }
    }
}

/// Points more than this many steps apart are not joined by a line.
const GAP_STEPS: i64 = 3;

fn per_point(points: &[MetricPoint], f: impl Fn(&MetricPoint) -> Option<f64>) -> Vec<(i64, Option<f64>)> {
    points.iter().map(|p| (p.time, f(p))).collect()
}

/// The series a chart of `kind` draws from `points` (bucketed, oldest first).
pub fn series(kind: Kind, points: &[MetricPoint]) -> Vec<Series> {
    let one = |name: &str, f: &dyn Fn(&MetricPoint) -> Option<f64>| Series {
        name: name.into(),
        color: color(0),
        points: per_point(points, f),
        bold: false,
    };
    match kind {
        Kind::Invocations => vec![one("Invocations", &|p| Some(p.rate(p.invocations)))],
        Kind::Errors => vec![one("Errors", &|p| Some(p.rate(p.errors)))],
        Kind::Throttles => vec![one("Throttles", &|p| Some(p.rate(p.throttles)))],
        Kind::Concurrency => vec![one("Concurrent executions", &|p| Some(p.concurrent_executions as f64))],
        Kind::Duration => {
            let mut v = vec![
                one("Average", &|p| p.duration.average_ms()),
                one("p50", &|p| p.duration.quantile_ms(0.5)),
                one("p99", &|p| p.duration.quantile_ms(0.99)),
                one("Maximum", &|p| (p.duration.count > 0).then_some(p.duration.max_ms)),
            ];
            for (i, s) in v.iter_mut().enumerate() {
                s.color = color(i);
            }
            v
        }
        Kind::OffsetLag | Kind::TimeLag => {
            let lag = kind == Kind::OffsetLag;
            let mut parts: Vec<i32> = points.iter().flat_map(|p| p.partitions.iter().map(|x| x.partition)).collect();
            parts.sort_unstable();
            parts.dedup();
            let value = move |p: &MetricPoint, part: i32| {
                p.partitions.iter().find(|x| x.partition == part).map(|x| {
                    if lag {
                        x.offset_lag as f64
                    } else {
                        x.time_lag_s
                    }
                })
            };
            let mut v: Vec<Series> = parts
                .iter()
                .enumerate()
                .map(|(i, part)| Series {
                    name: format!("Partition {part}"),
                    color: color(i),
                    points: per_point(points, |p| value(p, *part)),
                    bold: false,
                })
                .collect();
            let (name, total): (&str, PointValue) = if lag {
                ("Total", Box::new(|p: &MetricPoint| p.total_lag().map(|l| l as f64)))
            } else {
                ("Oldest", Box::new(|p: &MetricPoint| p.max_time_lag_s()))
            };
            v.push(Series { name: name.into(), color: INK, points: per_point(points, total), bold: true });
            v
        }
    }
}

fn time_label(ms: i64, range: Range) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)) else { return String::new() };
    match range {
        Range::M15 => format!("{:02}:{:02}:{:02}", t.hour(), t.minute(), t.second()),
        Range::H1 | Range::H24 => format!("{:02}:{:02}", t.hour(), t.minute()),
        Range::D7 => format!("{} {:02}h", &t.weekday().to_string()[..3], t.hour()),
    }
}

fn value_label(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 220;

/// Draws a line chart over `[end - range, end]`. Times are shown in UTC
/// (the server and every browser then draw the same labels).
pub fn draw(kind: Kind, series: &[Series], range: Range, end: i64, step_ms: i64) -> String {
    let mut svg = String::new();
    let start = end - range.millis();
    let ymax = series.iter().flat_map(|s| s.points.iter().filter_map(|(_, v)| *v)).fold(0.0f64, f64::max);
    // Headroom, and a visible axis when everything is zero.
    let ymax = if ymax <= 0.0 { 1.0 } else { ymax * 1.1 };
    let result = (|| -> Result<(), Box<dyn std::error::Error + '_>> {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let mut chart = ChartBuilder::on(&root)
            .margin(10)
            .x_label_area_size(26)
            .y_label_area_size(52)
            .build_cartesian_2d(start..end, 0f64..ymax)?;
        chart
            .configure_mesh()
            .x_labels(6)
            .y_labels(5)
            .light_line_style(TRANSPARENT)
            .bold_line_style(RGBColor(236, 238, 242))
            .axis_style(RGBColor(150, 150, 150))
            .label_style(("sans-serif", 14).into_font().color(&RGBColor(90, 90, 90)))
            .x_label_formatter(&|x| time_label(*x, range))
            .y_label_formatter(&|y| value_label(*y))
            .y_desc(kind.unit())
            .draw()?;
        for s in series {
            let (r, g, b) = s.color;
            let style = ShapeStyle {
                color: RGBColor(r, g, b).to_rgba(),
                filled: false,
                stroke_width: if s.bold { 3 } else { 2 },
            };
            for segment in segments(&s.points, step_ms * GAP_STEPS) {
                chart.draw_series(LineSeries::new(segment, style))?;
            }
        }
        root.present()?;
        Ok(())
    })();
    if let Err(e) = result {
        return format!("<p class=\"chart-error\">cannot draw the chart: {e}</p>");
    }
    svg
}

/// Runs of points with values, split where values are missing or far apart.
fn segments(points: &[(i64, Option<f64>)], gap: i64) -> Vec<Vec<(i64, f64)>> {
    let mut out: Vec<Vec<(i64, f64)>> = Vec::new();
    let mut cur: Vec<(i64, f64)> = Vec::new();
    for (t, v) in points {
        match v {
            Some(v) if v.is_finite() => {
                if cur.last().is_some_and(|(lt, _)| t - lt > gap) {
                    out.push(std::mem::take(&mut cur));
                }
                cur.push((*t, *v));
            }
            _ => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// A small line with no axes, for the overview's table.
pub fn sparkline(values: &[(i64, f64)], start: i64, end: i64) -> String {
    const W: f64 = 120.0;
    const H: f64 = 28.0;
    let max = values.iter().map(|(_, v)| *v).fold(0.0f64, f64::max).max(1.0);
    let span = (end - start).max(1) as f64;
    let pts: Vec<String> = values
        .iter()
        .map(|(t, v)| format!("{:.1},{:.1}", (t - start) as f64 / span * W, H - 1.0 - v / max * (H - 2.0)))
        .collect();
    format!(
        "<svg class=\"spark\" viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"offset lag, peak {}\"><polyline fill=\"none\" stroke=\"currentColor\" stroke-width=\"1.5\" points=\"{}\"/></svg>",
        max as i64,
        pts.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::PartitionPoint;

    #[test]
    fn lag_chart_draws_a_line_per_partition_and_the_total() {
        let end = 1_800_000_000_000;
        let pts: Vec<MetricPoint> = (0..100)
            .map(|i| MetricPoint {
                time: end - 100_000 + i * 1000,
                period_ms: 1000,
                partitions: (0..3)
                    .map(|p| PartitionPoint { partition: p, offset_lag: i * (p as i64 + 1), ..Default::default() })
                    .collect(),
                ..Default::default()
            })
            .collect();
        let s = series(Kind::OffsetLag, &pts);
        assert_eq!(
            s.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            ["Partition 0", "Partition 1", "Partition 2", "Total"]
        );
        let svg = draw(Kind::OffsetLag, &s, Range::M15, end, 2000);
        assert!(svg.starts_with("<svg"), "{svg}");
        let svg_lc = svg.to_lowercase();
        for line in &s {
            let (r, g, b) = line.color;
            assert!(svg_lc.contains(&format!("#{r:02x}{g:02x}{b:02x}")), "{} is drawn", line.name);
        }
        assert!(svg.contains("records"), "the axis names its unit");
    }

    #[test]
    fn missing_data_breaks_the_line() {
        let s =
            segments(&[(0, Some(1.0)), (1000, Some(2.0)), (2000, None), (3000, Some(1.0)), (60_000, Some(3.0))], 3000);
        assert_eq!(s.len(), 3);
    }
}
