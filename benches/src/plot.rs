//! Latency against payload size, as a PNG (plotters' bitmap backend; text
//! through ab_glyph with a font embedded in a crate, so no system font
//! libraries are needed).

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};

use crate::report::{Kind, Report};
use crate::stats::fmt_size;

/// `100 ns`, `1 us`, `20 us`, `5 ms`: axis labels without false precision.
fn round_ns(v: f64) -> String {
    let (x, unit) = if v >= 1e6 {
        (v / 1e6, "ms")
    } else if v >= 1e3 {
        (v / 1e3, "us")
    } else {
        (v, "ns")
    };
    if (x - x.round()).abs() < 1e-6 * x.max(1.0) {
        format!("{x:.0} {unit}")
    } else {
        format!("{x:.1} {unit}")
    }
}

type BoxError = Box<dyn std::error::Error>;

static FONT: Once = Once::new();

/// One line of the plot: legend, colour, dashed, points (bytes, ns).
type Line = (String, RGBColor, bool, Vec<(f64, f64)>);

/// The series drawn: (system, wait, fan-out: 0 = the largest measured > 1),
/// legend, colour, dashed.
const SERIES: [(&str, &str, u32, &str, RGBColor, bool); 8] = [
    (
        "raw atomic",
        "spin",
        1,
        "raw atomic ping-pong (spin floor)",
        RGBColor(120, 120, 120),
        true,
    ),
    (
        "bips",
        "spin",
        1,
        "bips, busy-spin",
        RGBColor(0, 90, 200),
        false,
    ),
    (
        "iceoryx2",
        "spin",
        1,
        "iceoryx2 0.10, busy-poll",
        RGBColor(230, 120, 0),
        false,
    ),
    (
        "raw futex",
        "park",
        1,
        "raw futex ping-pong (blocking floor)",
        RGBColor(60, 60, 60),
        true,
    ),
    (
        "bips",
        "park",
        1,
        "bips, blocking (futex)",
        RGBColor(0, 160, 80),
        false,
    ),
    (
        "bips",
        "park",
        0,
        "bips, blocking, 1->N consumers",
        RGBColor(140, 60, 170),
        false,
    ),
    (
        "uds copy",
        "park",
        1,
        "Unix socket, payload copied",
        RGBColor(200, 30, 30),
        false,
    ),
    (
        "memcpy",
        "copy",
        1,
        "one memcpy of the payload (what zero copy saves)",
        RGBColor(200, 30, 30),
        true,
    ),
];

/// Draws median one-way latency against payload size, log-log, one line per
/// system, to `path` (PNG).
pub fn draw(r: &Report, path: &Path) -> Result<(), BoxError> {
    FONT.call_once(|| {
        let _ = register_font(
            "sans-serif",
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
    let sizes = r.sizes();
    let (Some(&lo), Some(&hi)) = (sizes.first(), sizes.last()) else {
        return Err("nothing to plot".into());
    };
    let fan = r
        .rows
        .iter()
        .filter(|x| x.kind == Kind::Latency && x.fanout > 1)
        .map(|x| x.fanout)
        .max()
        .unwrap_or(0);
    let series: Vec<Line> = SERIES
        .iter()
        .filter_map(|&(sys, wait, f, label, colour, dashed)| {
            let f = if f == 0 { fan } else { f };
            if f == 0 {
                return None;
            }
            let pts: Vec<(f64, f64)> = sizes
                .iter()
                .filter_map(|&s| r.find(sys, wait, f, s))
                .map(|x| (x.size as f64, x.lat.median.max(1) as f64))
                .collect();
            let label = label.replace("1->N", &format!("1->{f}"));
            (!pts.is_empty()).then_some((label, colour, dashed, pts))
        })
        .collect();
    let ymin = series
        .iter()
        .flat_map(|s| s.3.iter().map(|p| p.1))
        .fold(f64::INFINITY, f64::min);
    let ymax = series
        .iter()
        .flat_map(|s| s.3.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let (ymin, ymax) = ((ymin / 2.0).max(1.0), ymax * 3.0);

    let root = BitMapBackend::new(path, (1200, 760)).into_drawing_area();
    root.fill(&WHITE)?;
    let title = format!(
        "One-way latency (median of ping-pong / 2) vs payload size — {}, {} CPUs, Linux {}",
        r.machine.cpu_model, r.machine.cpus, r.machine.kernel
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(20)
        .x_label_area_size(60)
        .y_label_area_size(90)
        .build_cartesian_2d(
            ((lo as f64) / 1.5..(hi as f64) * 1.5)
                .log_scale()
                .with_key_points(sizes.iter().map(|&s| s as f64).collect::<Vec<_>>()),
            (ymin..ymax).log_scale(),
        )?;
    chart
        .configure_mesh()
        .x_desc("payload size (bytes handed over; bips and iceoryx2 copy none of them)")
        .y_desc("one-way latency")
        .x_label_formatter(&|v| fmt_size(v.round() as u64))
        .y_label_formatter(&|v| round_ns(*v))
        .label_style(("sans-serif", 16))
        .axis_desc_style(("sans-serif", 18))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (label, colour, dashed, pts) in series {
        let style = ShapeStyle::from(&colour).stroke_width(if dashed { 2 } else { 3 });
        if dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 8, 6, style))?;
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style))?;
        }
        chart
            .draw_series(
                pts.iter()
                    .map(|&p| Circle::new(p, 5, ShapeStyle::from(&colour).filled())),
            )?
            .label(label)
            .legend(move |(x, y)| {
                Rectangle::new(
                    [(x, y - 4), (x + 22, y + 4)],
                    ShapeStyle::from(&colour).filled(),
                )
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.9))
        .border_style(RGBColor(180, 180, 180))
        .label_font(("sans-serif", 16))
        .draw()?;
    root.present()?;
    Ok(())
}
