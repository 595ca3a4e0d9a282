//! The overview's chart of tokens issued per minute, drawn on the server as inline SVG: one
//! line per grant type over the last hour. Only presentation attributes are used (no `style`),
//! since the pages' Content-Security-Policy allows no inline styles.

use std::fmt::Write;

use crate::metrics::{TokensPerMinute, HISTORY_MINUTES};

/// Line colours, one per grant type in order (distinguishable, and readable on white).
const COLOURS: [&str; 6] = ["#0b5fff", "#d9480f", "#2b8a3e", "#862e9c", "#e67700", "#495057"];

const WIDTH: usize = 640;
const HEIGHT: usize = 200;
const LEFT: usize = 40;
const BOTTOM: usize = 24;
const TOP: usize = 10;

/// The colour each grant type is drawn in, for the legend.
pub fn legend(history: &TokensPerMinute) -> Vec<(&'static str, &'static str, u64)> {
    history
        .series
        .iter()
        .enumerate()
        .map(|(i, (grant, counts))| (*grant, COLOURS[i % COLOURS.len()], counts.iter().sum()))
        .collect()
}

/// The chart as an `<svg>` element.
pub fn svg(history: &TokensPerMinute) -> String {
    let max = history
        .series
        .iter()
        .flat_map(|(_, counts)| counts.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let plot_w = (WIDTH - LEFT - 10) as f64;
    let plot_h = (HEIGHT - TOP - BOTTOM) as f64;
    let x = |minute: usize| LEFT as f64 + plot_w * minute as f64 / (HISTORY_MINUTES - 1) as f64;
    let y = |count: u64| TOP as f64 + plot_h * (1.0 - count as f64 / max as f64);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = write!(
        out,
        r##"<svg xmlns="http://www.w3.org/2000/svg" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-labelledby="chart-title"><title id="chart-title">Tokens issued per minute over the last hour, by grant type</title>"##
    );
    let (x0, x1, y0, y1) = (x(0), x(HISTORY_MINUTES - 1), y(0), y(max));
    let _ = write!(
        out,
        r##"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="#ffffff"/><line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y0}" stroke="#999"/><line x1="{x0}" y1="{y0}" x2="{x0}" y2="{y1}" stroke="#999"/><line x1="{x0}" y1="{y1}" x2="{x1}" y2="{y1}" stroke="#eee"/>"##
    );
    let _ = write!(
        out,
        r##"<text x="{}" y="{}" font-size="11" text-anchor="end" fill="#555">{max}</text><text x="{}" y="{}" font-size="11" text-anchor="end" fill="#555">0</text>"##,
        LEFT - 4,
        y1 + 4.0,
        LEFT - 4,
        y0 + 4.0
    );
    let _ = write!(
        out,
        r##"<text x="{x0}" y="{}" font-size="11" fill="#555">60 min ago</text><text x="{x1}" y="{}" font-size="11" text-anchor="end" fill="#555">now</text>"##,
        HEIGHT - 6,
        HEIGHT - 6
    );
    for (i, (grant, counts)) in history.series.iter().enumerate() {
        let points: Vec<String> = counts
            .iter()
            .enumerate()
            .map(|(m, c)| format!("{:.1},{:.1}", x(m), y(*c)))
            .collect();
        let _ = write!(
            out,
            r##"<polyline class="series" data-grant-type="{grant}" fill="none" stroke="{}" stroke-width="2" points="{}"/>"##,
            COLOURS[i % COLOURS.len()],
            points.join(" ")
        );
    }
    if history.series.is_empty() {
        let _ = write!(
            out,
            r##"<text x="{}" y="{}" font-size="13" text-anchor="middle" fill="#777">No tokens issued in the last hour</text>"##,
            WIDTH / 2,
            HEIGHT / 2
        );
    }
    out.push_str("</svg>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_draws_one_line_per_grant_type_without_inline_styles() {
        let mut counts = vec![0; HISTORY_MINUTES];
        counts[HISTORY_MINUTES - 1] = 4;
        let history = TokensPerMinute {
            last_minute: 100,
            series: vec![("client_credentials", counts.clone()), ("refresh_token", counts)],
        };
        let svg = svg(&history);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(r#"data-grant-type="refresh_token""#));
        assert!(!svg.contains("style="), "the CSP forbids inline styles");
        assert_eq!(legend(&history)[0], ("client_credentials", COLOURS[0], 4));
        assert!(super::svg(&TokensPerMinute::default()).contains("No tokens issued"));
    }
}
