//! The throughput figure as an SVG: for every path at every concurrency, tokens per second
//! and µs of CPU per token, each bar beside the relay's (the floor), drawn from the same
//! figures as the report's table. Self-contained (no script, no font, no stylesheet), so it
//! shows as a Markdown image on any forge, light or dark.
//!
//! A run writes it next to its report; `ragstream-bench render --from results/full.json`
//! draws it again from a saved report without running anything.

use std::fmt::Write;

use serde_json::Value;

use crate::run::RunResult;

/// One path at one concurrency: what the chart needs of a [`RunResult`].
#[derive(Debug, Clone, PartialEq)]
pub struct Figure {
    pub label: String,
    pub streams: usize,
    pub tokens_per_s: f64,
    /// None for the direct path (no process of its own to measure).
    pub cpu_us_per_token: Option<f64>,
}

impl From<&RunResult> for Figure {
    fn from(r: &RunResult) -> Figure {
        Figure {
            label: r.label.clone(),
            streams: r.streams,
            tokens_per_s: r.tokens_per_s,
            cpu_us_per_token: r.cpu_us_per_token,
        }
    }
}

/// The figures of a saved report (`target/bench/full.json`, `bench/results/full.json`).
pub fn figures_from_json(report: &Value) -> Result<Vec<Figure>, String> {
    let runs = report["runs"]
        .as_array()
        .ok_or("the report has no `runs` array")?;
    runs.iter()
        .map(|r| {
            let label = r["label"].as_str().ok_or("a run without a label")?;
            Ok(Figure {
                label: label.to_owned(),
                streams: r["streams"]
                    .as_u64()
                    .ok_or_else(|| format!("{label}: no streams"))?
                    as usize,
                tokens_per_s: r["tokens_per_s"]
                    .as_f64()
                    .ok_or_else(|| format!("{label}: no tokens_per_s"))?,
                cpu_us_per_token: r["cpu_us_per_token"].as_f64(),
            })
        })
        .collect()
}

/// The line under the title: which run, on how many cores.
pub fn caption(mode: &str, cores: usize) -> String {
    format!(
        "ragstream-bench --{mode}, {cores} cores, the same mock upstream and load for every path"
    )
}

/// Draws the chart of a saved report (`render --from FILE [--out FILE]`).
pub fn render(from: &std::path::Path, out: &std::path::Path) -> Result<(), String> {
    let text = std::fs::read_to_string(from).map_err(|e| format!("{}: {e}", from.display()))?;
    let report: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", from.display()))?;
    let figures = figures_from_json(&report)?;
    let mode = report["settings"]["mode"].as_str().unwrap_or("full");
    let cores = report["machine"]["cores"].as_u64().unwrap_or(0) as usize;
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(out, throughput_svg(&figures, &caption(mode, cores)))
        .map_err(|e| format!("{}: {e}", out.display()))
}

const WIDTH: f64 = 760.0;
const LABEL_W: f64 = 130.0;
const PANEL_GAP: f64 = 24.0;
const PANEL_W: f64 = (WIDTH - LABEL_W - PANEL_GAP - 16.0) / 2.0;
const ROW: f64 = 20.0;
const BAR: f64 = 13.0;
const HEAD: f64 = 62.0;
const GROUP_HEAD: f64 = 24.0;
const FOOT: f64 = 30.0;

const RELAY: &str = "#8b93a7";
const HUB: &str = "#4f46e5";
const INK: &str = "#161a26";
const MUTED: &str = "#5b6478";
const RULE: &str = "#dfe3ee";

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The figures grouped by concurrency (ascending), each group the relay first and then the
/// other paths in the report's order; the direct path has no CPU figure and is left out.
fn groups(figures: &[Figure]) -> Vec<(usize, Vec<&Figure>)> {
    let mut levels: Vec<usize> = figures.iter().map(|f| f.streams).collect();
    levels.sort_unstable();
    levels.dedup();
    levels
        .into_iter()
        .map(|level| {
            let mut rows: Vec<&Figure> = figures
                .iter()
                .filter(|f| f.streams == level && f.label != "direct")
                .collect();
            rows.sort_by_key(|f| f.label != "relay");
            (level, rows)
        })
        .filter(|(_, rows)| !rows.is_empty())
        .collect()
}

/// The chart; `caption` goes under the title (the run it comes from).
pub fn throughput_svg(figures: &[Figure], caption: &str) -> String {
    let groups = groups(figures);
    let rows: usize = groups.iter().map(|(_, r)| r.len()).sum();
    let height = HEAD + groups.len() as f64 * GROUP_HEAD + rows as f64 * ROW + FOOT;
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="system-ui, -apple-system, 'Segoe UI', sans-serif" font-size="11" role="img" aria-labelledby="title">"#
    );
    let _ = write!(
        svg,
        r##"<title id="title">Tokens per second and µs of CPU per token, every path beside the relay</title><rect width="100%" height="100%" fill="#ffffff"/>"##
    );
    let _ = write!(
        svg,
        r#"<text x="8" y="20" font-size="14" font-weight="700" fill="{INK}">Every path beside the bare relay</text><text x="8" y="36" fill="{MUTED}">{}</text>"#,
        escape(caption)
    );
    let left = LABEL_W;
    let right = LABEL_W + PANEL_W + PANEL_GAP;
    for (x, title) in [
        (left, "tokens per second (higher is better)"),
        (right, "µs CPU per token (lower is better)"),
    ] {
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{}" font-weight="700" fill="{INK}">{title}</text>"#,
            HEAD - 8.0
        );
    }
    let mut y = HEAD;
    for (level, rows) in &groups {
        let _ = write!(
            svg,
            r#"<text x="8" y="{}" font-weight="700" fill="{MUTED}">{} streams</text><line x1="8" x2="{}" y1="{}" y2="{}" stroke="{RULE}"/>"#,
            y + 16.0,
            thousands(*level as f64),
            WIDTH - 8.0,
            y + GROUP_HEAD - 2.0,
            y + GROUP_HEAD - 2.0
        );
        y += GROUP_HEAD;
        let relay = rows.iter().find(|f| f.label == "relay");
        let max_rate = rows.iter().map(|f| f.tokens_per_s).fold(0.0, f64::max);
        let max_cpu = rows
            .iter()
            .filter_map(|f| f.cpu_us_per_token)
            .fold(0.0, f64::max);
        let top = y;
        for figure in rows {
            let colour = if figure.label == "relay" { RELAY } else { HUB };
            let _ = write!(
                svg,
                r#"<text x="8" y="{}" fill="{INK}">{}</text>"#,
                y + BAR - 2.0,
                escape(&figure.label)
            );
            let ratio = |v: f64, of: Option<f64>| match of {
                Some(r) if figure.label != "relay" && r > 0.0 => format!(" · {:.2}×", v / r),
                _ => String::new(),
            };
            let rate_text = format!(
                "{}{}",
                thousands(figure.tokens_per_s),
                ratio(figure.tokens_per_s, relay.map(|r| r.tokens_per_s))
            );
            bar(
                &mut svg,
                Bar {
                    x: left,
                    y,
                    value: figure.tokens_per_s,
                    max: max_rate,
                    colour,
                    text: &rate_text,
                    series: "tokens_per_s",
                    label: &figure.label,
                    streams: *level,
                },
            );
            if let Some(cpu) = figure.cpu_us_per_token {
                let cpu_text = format!(
                    "{cpu:.1} µs{}",
                    ratio(cpu, relay.and_then(|r| r.cpu_us_per_token))
                );
                bar(
                    &mut svg,
                    Bar {
                        x: right,
                        y,
                        value: cpu,
                        max: max_cpu,
                        colour,
                        text: &cpu_text,
                        series: "cpu_us_per_token",
                        label: &figure.label,
                        streams: *level,
                    },
                );
            }
            y += ROW;
        }
        // The relay's figure as a line through the group: how far each path is from the floor.
        if let Some(relay) = relay {
            let mut floor = |x: f64, value: f64, max: f64| {
                if max > 0.0 {
                    let at = x + value / max * bar_room();
                    let _ = write!(
                        svg,
                        r#"<line class="floor" x1="{at:.1}" x2="{at:.1}" y1="{:.1}" y2="{:.1}" stroke="{RELAY}" stroke-dasharray="3 3"/>"#,
                        top - 2.0,
                        y - ROW + BAR + 2.0
                    );
                }
            };
            floor(left, relay.tokens_per_s, max_rate);
            if let Some(cpu) = relay.cpu_us_per_token {
                floor(right, cpu, max_cpu);
            }
        }
    }
    let _ = write!(
        svg,
        r#"<rect x="8" y="{}" width="10" height="10" fill="{RELAY}"/><text x="22" y="{}" fill="{MUTED}">the bare relay (the floor; dashed: its figure)</text><rect x="290" y="{}" width="10" height="10" fill="{HUB}"/><text x="304" y="{}" fill="{MUTED}">another path, with its ratio to the relay · each group on its own scale</text>"#,
        y + 10.0,
        y + 19.0,
        y + 10.0,
        y + 19.0
    );
    svg.push_str("</svg>\n");
    svg
}

/// The room a bar has, its value's text after it.
fn bar_room() -> f64 {
    PANEL_W - 92.0
}

struct Bar<'a> {
    x: f64,
    y: f64,
    value: f64,
    max: f64,
    colour: &'a str,
    text: &'a str,
    series: &'a str,
    label: &'a str,
    streams: usize,
}

fn bar(svg: &mut String, b: Bar<'_>) {
    let width = if b.max > 0.0 {
        (b.value / b.max * bar_room()).max(1.0)
    } else {
        1.0
    };
    let _ = write!(
        svg,
        r#"<rect class="bar" data-series="{}" data-path="{}" data-streams="{}" data-value="{}" x="{:.1}" y="{:.1}" width="{width:.1}" height="{BAR}" rx="2" fill="{}"/><text x="{:.1}" y="{:.1}" fill="{INK}">{}</text>"#,
        b.series,
        escape(b.label),
        b.streams,
        b.value,
        b.x,
        b.y,
        b.colour,
        b.x + width + 4.0,
        b.y + BAR - 2.0,
        escape(b.text)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn figure(label: &str, streams: usize, rate: f64, cpu: Option<f64>) -> Figure {
        Figure {
            label: label.into(),
            streams,
            tokens_per_s: rate,
            cpu_us_per_token: cpu,
        }
    }

    fn sample() -> Vec<Figure> {
        vec![
            figure("direct", 100, 9400.0, None),
            figure("relay", 100, 9390.0, Some(10.0)),
            figure("hub-sse", 100, 9380.0, Some(30.0)),
            figure("hub-ws", 100, 9370.0, Some(40.0)),
            figure("direct", 1000, 94000.0, None),
            figure("hub-sse", 1000, 47000.0, Some(20.0)),
            figure("relay", 1000, 94000.0, Some(8.0)),
            figure("hub<x>&", 1000, 1000.0, Some(80.0)),
        ]
    }

    /// (series, path, streams, width) of every bar.
    fn bars(svg: &str) -> Vec<(String, String, usize, f64)> {
        svg.split("<rect class=\"bar\" ")
            .skip(1)
            .map(|rest| {
                let rest = format!(" {rest}");
                let attr = |name: &str| {
                    let key = format!(" {name}=\"");
                    let start = rest.find(&key).expect("the attribute") + key.len();
                    let end = rest[start..].find('"').unwrap() + start;
                    rest[start..end].to_owned()
                };
                (
                    attr("data-series"),
                    attr("data-path"),
                    attr("data-streams").parse().unwrap(),
                    attr("width").parse().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn every_path_but_direct_has_both_bars_beside_the_relay() {
        let svg = throughput_svg(&sample(), "a test run");
        assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
        assert!(svg.trim_end().ends_with("</svg>"));
        let bars = bars(&svg);
        // 3 paths at 100 streams and 3 at 1000, two bars each; direct has none.
        assert_eq!(bars.len(), 12);
        assert!(bars.iter().all(|b| b.1 != "direct"));
        // The relay leads each group, whatever the report's order.
        let order: Vec<(&str, usize)> = bars
            .iter()
            .filter(|b| b.0 == "tokens_per_s")
            .map(|b| (b.1.as_str(), b.2))
            .collect();
        assert_eq!(
            order,
            [
                ("relay", 100),
                ("hub-sse", 100),
                ("hub-ws", 100),
                ("relay", 1000),
                ("hub-sse", 1000),
                ("hub&lt;x&gt;&amp;", 1000),
            ]
        );
        // Two dashed floor lines per group.
        assert_eq!(svg.matches("class=\"floor\"").count(), 4);
    }

    #[test]
    fn bars_are_to_scale_within_their_group_and_carry_the_ratio_to_the_relay() {
        let svg = throughput_svg(&sample(), "a test run");
        let width = |series: &str, path: &str, streams: usize| {
            bars(&svg)
                .into_iter()
                .find(|b| b.0 == series && b.1 == path && b.2 == streams)
                .map(|b| b.3)
                .unwrap()
        };
        let full = bar_room();
        assert!((width("cpu_us_per_token", "hub-ws", 100) - full).abs() < 0.1);
        assert!((width("cpu_us_per_token", "relay", 100) - full / 4.0).abs() < 0.1);
        assert!((width("tokens_per_s", "hub-sse", 1000) - full / 2.0).abs() < 0.1);
        assert!(svg.contains(">30.0 µs · 3.00×</text>"), "{svg}");
        assert!(svg.contains(">47,000 · 0.50×</text>"));
        assert!(svg.contains(">9,390</text>"), "the relay has no ratio");
        assert!(svg.contains("a test run"));
        assert!(!svg.contains("<x>"), "labels are escaped");
    }

    #[test]
    fn a_saved_report_gives_the_same_figures() {
        let report = serde_json::json!({"runs": [
            {"label": "relay", "streams": 100, "tokens_per_s": 9390.0, "cpu_us_per_token": 10.0},
            {"label": "direct", "streams": 100, "tokens_per_s": 9400.0, "cpu_us_per_token": null},
        ]});
        let figures = figures_from_json(&report).unwrap();
        assert_eq!(figures[0], figure("relay", 100, 9390.0, Some(10.0)));
        assert_eq!(figures[1], figure("direct", 100, 9400.0, None));
        assert!(figures_from_json(&serde_json::json!({})).is_err());
    }
}
