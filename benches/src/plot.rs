//! `--plot FILE.png`: draws the latency percentiles (p50, p99, p99.9) of a
//! rate sweep against the offered rate, with plotters' bitmap backend. Text
//! needs a TrueType font, loaded at run time (`SIPLOAD_FONT`, else common
//! system paths); without one the chart is drawn without any text and the
//! caller is told so.

use std::path::Path;
use std::sync::OnceLock;

use plotters::prelude::*;

/// One rate of a sweep, latencies in microseconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SweepPoint {
    /// Offered rate, units per second.
    pub offered: f64,
    /// Median latency.
    pub p50_us: u64,
    /// 99th percentile latency.
    pub p99_us: u64,
    /// 99.9th percentile latency.
    pub p999_us: u64,
}

/// Why the chart could not be drawn.
#[derive(Debug)]
pub enum PlotError {
    /// No sweep point has a latency.
    NoData,
    /// The drawing backend failed.
    Draw(String),
}

impl std::fmt::Display for PlotError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlotError::NoData => write!(f, "no sweep point has a latency to plot"),
            PlotError::Draw(text) => write!(f, "cannot draw the chart: {text}"),
        }
    }
}

impl std::error::Error for PlotError {}

/// What was drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drawn {
    /// Axes, lines and labels.
    WithText,
    /// no font was found: axes and lines only
    WithoutText,
}

const FONT_NAME: &str = "sans-serif";

/// A line of the chart: label, colour, which percentile.
type Series = (&'static str, RGBColor, fn(&SweepPoint) -> u64);

/// Where a sans-serif TrueType font usually is.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Register a font once per process; whether one is available.
fn font_available() -> bool {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    *REGISTERED.get_or_init(|| {
        let from_env = std::env::var("SIPLOAD_FONT").ok();
        let candidates = from_env.iter().map(String::as_str).chain(FONT_PATHS.iter().copied());
        for path in candidates {
            let Ok(bytes) = std::fs::read(path) else {
                continue;
            };
            // plotters keeps the font for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font(FONT_NAME, FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        false
    })
}

fn draw_error<E: std::fmt::Debug>(err: E) -> PlotError {
    PlotError::Draw(format!("{err:?}"))
}

/// Draw `points` (sorted by offered rate or not) into a PNG at `path`.
pub fn plot_latency_vs_rate(path: &Path, title: &str, points: &[SweepPoint]) -> Result<Drawn, PlotError> {
    let mut points: Vec<SweepPoint> = points.iter().copied().filter(|p| p.p50_us > 0).collect();
    if points.is_empty() {
        return Err(PlotError::NoData);
    }
    points.sort_by(|a, b| a.offered.total_cmp(&b.offered));
    let with_text = font_available();
    let ms = |us: u64| us as f64 / 1000.0;
    let x_max = points.iter().map(|p| p.offered).fold(0.0, f64::max).max(1.0) * 1.05;
    let y_min = points
        .iter()
        .map(|p| ms(p.p50_us))
        .fold(f64::INFINITY, f64::min)
        .max(0.001)
        / 1.5;
    let y_max = points
        .iter()
        .map(|p| ms(p.p999_us.max(p.p99_us).max(p.p50_us)))
        .fold(0.0, f64::max)
        .max(y_min * 10.0)
        * 1.5;

    let root = BitMapBackend::new(path, (1000, 640)).into_drawing_area();
    root.fill(&WHITE).map_err(draw_error)?;
    let mut builder = ChartBuilder::on(&root);
    builder.margin(20);
    if with_text {
        builder
            .caption(title, (FONT_NAME, 24))
            .x_label_area_size(50)
            .y_label_area_size(70);
    } else {
        builder.x_label_area_size(10).y_label_area_size(10);
    }
    let mut chart = builder
        .build_cartesian_2d(0.0..x_max, (y_min..y_max).log_scale())
        .map_err(draw_error)?;
    let mut mesh = chart.configure_mesh();
    if with_text {
        mesh.x_desc("offered rate (per second)")
            .y_desc("latency (ms, log scale)")
            .label_style((FONT_NAME, 15))
            .x_label_formatter(&|v| format!("{v:.0}"))
            .y_label_formatter(&|v| format!("{v}"));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(draw_error)?;

    let series: [Series; 3] = [
        ("p50", BLUE, |p| p.p50_us),
        ("p99", RGBColor(230, 120, 0), |p| p.p99_us),
        ("p99.9", RED, |p| p.p999_us),
    ];
    for (label, color, pick) in series {
        let line: Vec<(f64, f64)> = points.iter().map(|p| (p.offered, ms(pick(p).max(1)))).collect();
        let drawn = chart
            .draw_series(LineSeries::new(line.clone(), color.stroke_width(2)))
            .map_err(draw_error)?;
        if with_text {
            drawn
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        }
        chart
            .draw_series(line.into_iter().map(|xy| Circle::new(xy, 4, color.filled())))
            .map_err(draw_error)?;
    }
    if with_text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT_NAME, 16))
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(draw_error)?;
    }
    root.present().map_err(draw_error)?;
    Ok(if with_text { Drawn::WithText } else { Drawn::WithoutText })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_chart_is_a_png() {
        let dir = std::env::temp_dir().join(format!("sipload-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sweep.png");
        let points: Vec<SweepPoint> = (1..=5u32)
            .map(|i| SweepPoint {
                offered: f64::from(i) * 1000.0,
                p50_us: 100 * u64::from(i),
                p99_us: 1000 * u64::from(i * i),
                p999_us: 3000 * u64::from(i * i),
            })
            .collect();
        let drawn = plot_latency_vs_rate(&path, "test sweep", &points).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.len() > 2000, "{} bytes", bytes.len());
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        if std::path::Path::new(FONT_PATHS[0]).exists() {
            assert_eq!(drawn, Drawn::WithText);
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn nothing_to_plot_is_an_error() {
        let path = std::env::temp_dir().join("sipload-never-written.png");
        let empty = [SweepPoint {
            offered: 10.0,
            p50_us: 0,
            p99_us: 0,
            p999_us: 0,
        }];
        assert!(matches!(
            plot_latency_vs_rate(&path, "x", &empty),
            Err(PlotError::NoData)
        ));
        assert!(!path.exists());
    }
}
