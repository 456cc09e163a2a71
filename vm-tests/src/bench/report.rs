//! Medians, ratios, the printed table, the JSON records and the targets.

use std::fmt::Write as _;

use serde::Serialize;

pub const UNDERLAY: &str = "underlay";
pub const IP_BATCH: &str = "ip-batch";

/// One row: a tool on a case. `status` is "ok", "unavailable: why" or
/// "failed: why"; the figures are present only when it is "ok".
#[derive(Clone, Debug, Serialize)]
pub struct Record {
    pub case: String,
    pub tool: String,
    pub median_ms: Option<f64>,
    pub peak_rss_kb: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_ip_batch: Option<f64>,
    pub runs: usize,
    pub min_ms: Option<f64>,
    pub max_ms: Option<f64>,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Record {
    pub fn measured(case: &str, tool: &str, ms: &[f64], peak_rss_kb: u64) -> Record {
        Record {
            case: case.into(),
            tool: tool.into(),
            median_ms: median(ms).map(|m| round(m, 3)),
            peak_rss_kb: Some(peak_rss_kb),
            ratio_to_ip_batch: None,
            runs: ms.len(),
            min_ms: ms.iter().copied().reduce(f64::min).map(|m| round(m, 3)),
            max_ms: ms.iter().copied().reduce(f64::max).map(|m| round(m, 3)),
            status: "ok".into(),
            note: None,
        }
    }
    pub fn not_measured(case: &str, tool: &str, status: String) -> Record {
        Record {
            case: case.into(),
            tool: tool.into(),
            median_ms: None,
            peak_rss_kb: None,
            ratio_to_ip_batch: None,
            runs: 0,
            min_ms: None,
            max_ms: None,
            status,
            note: None,
        }
    }
}

pub fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

/// Fills `ratio_to_ip_batch` of underlay's rows from the ip-batch row of
/// the same case, or of `reference[case]` when the case has none (plan).
pub fn fill_ratios(records: &mut [Record], reference: &dyn Fn(&str) -> String) {
    let base: Vec<(String, f64)> = records
        .iter()
        .filter(|r| r.tool == IP_BATCH)
        .filter_map(|r| Some((r.case.clone(), r.median_ms?)))
        .collect();
    for r in records.iter_mut().filter(|r| r.tool == UNDERLAY) {
        let want = reference(&r.case);
        let b = base.iter().find(|(c, _)| *c == want).map(|(_, m)| *m);
        r.ratio_to_ip_batch = match (r.median_ms, b) {
            (Some(m), Some(b)) if b > 0.0 => Some(round(m / b, 2)),
            _ => None,
        };
    }
}

pub fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

pub fn render_table(records: &[Record]) -> String {
    let mut s = String::new();
    let w = records
        .iter()
        .map(|r| r.case.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let _ = writeln!(
        s,
        "{:<w$}  {:<10} {:>10} {:>10} {:>12} {:>7}  status",
        "case", "tool", "median ms", "min ms", "peak RSS KB", "ratio"
    );
    let _ = writeln!(s, "{}", "-".repeat(w + 62));
    let mut last_case = "";
    for r in records {
        let case = if r.case == last_case { "" } else { &r.case };
        last_case = &r.case;
        let f = |x: Option<f64>| x.map(|x| format!("{x:.2}")).unwrap_or("-".into());
        let mut status = r.status.clone();
        if let Some(n) = &r.note {
            status = format!("{status} ({n})");
        }
        let _ = writeln!(
            s,
            "{case:<w$}  {:<10} {:>10} {:>10} {:>12} {:>7}  {status}",
            r.tool,
            f(r.median_ms),
            f(r.min_ms),
            r.peak_rss_kb.map(|k| k.to_string()).unwrap_or("-".into()),
            r.ratio_to_ip_batch
                .map(|x| format!("{x:.2}x"))
                .unwrap_or_default(),
        );
    }
    s
}

/// One target of the issue, evaluated on the figures of this run.
#[derive(Clone, Debug, Serialize)]
pub struct Target {
    pub target: String,
    /// None: not measured in this run.
    pub met: Option<bool>,
    pub evidence: String,
}

fn get<'a>(records: &'a [Record], case: &str, tool: &str) -> Option<&'a Record> {
    records.iter().find(|r| r.case == case && r.tool == tool)
}

fn ms(records: &[Record], case: &str, tool: &str) -> Option<f64> {
    get(records, case, tool)?.median_ms
}

pub fn targets(records: &[Record], ks: &[usize], heavy: &str, none: &str) -> Vec<Target> {
    let mut t = vec![];
    for &k in ks {
        let cold = super::case_cold(k);
        let (u, b) = (ms(records, &cold, UNDERLAY), ms(records, &cold, IP_BATCH));
        t.push(match (u, b) {
            (Some(u), Some(b)) => Target {
                target: format!("{cold}: underlay <= 1.5 x ip-batch"),
                met: Some(u <= 1.5 * b),
                evidence: format!("{u:.2} ms vs {b:.2} ms ({:.2}x)", u / b),
            },
            _ => missing(format!("{cold}: underlay <= 1.5 x ip-batch")),
        });
        let noop = super::case_noop(k, &super::fixtures::Load::None);
        let name = format!("{noop}: underlay <= 10 ms and < ip-batch cold");
        t.push(match (ms(records, &noop, UNDERLAY), b) {
            (Some(n), Some(b)) => Target {
                target: name,
                met: Some(n <= 10.0 && n < b),
                evidence: format!("{n:.2} ms; ip-batch cold {b:.2} ms"),
            },
            _ => missing(name),
        });
    }
    let name = format!("{heavy}: underlay <= 2 x {none}");
    t.push(
        match (ms(records, heavy, UNDERLAY), ms(records, none, UNDERLAY)) {
            (Some(h), Some(n)) => Target {
                target: name,
                met: Some(h <= 2.0 * n),
                evidence: format!("{h:.2} ms vs {n:.2} ms ({:.2}x)", h / n),
            },
            _ => missing(name),
        },
    );
    let applies: Vec<&Record> = records
        .iter()
        .filter(|r| r.tool == UNDERLAY && !r.case.starts_with("plan"))
        .filter(|r| r.peak_rss_kb.is_some())
        .collect();
    if let Some(worst) = applies.iter().max_by_key(|r| r.peak_rss_kb) {
        let kb = worst.peak_rss_kb.unwrap();
        t.push(Target {
            target: "underlay apply peak RSS <= 20 MB".into(),
            met: Some(kb <= 20 * 1024),
            evidence: format!("largest {kb} KB ({})", worst.case),
        });
    }
    t
}

fn missing(target: String) -> Target {
    Target {
        target,
        met: None,
        evidence: "not measured in this run".into(),
    }
}

pub fn render_targets(ts: &[Target]) -> String {
    ts.iter()
        .map(|t| {
            let m = match t.met {
                Some(true) => "met   ",
                Some(false) => "MISSED",
                None => "n/a   ",
            };
            format!("{m} {}: {}\n", t.target, t.evidence)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn ratios_only_on_underlay_rows() {
        let mut rs = vec![
            Record::measured("cold K=2", IP_BATCH, &[2.0, 4.0, 3.0], 3000),
            Record::measured("cold K=2", UNDERLAY, &[6.0, 6.0, 6.0], 7000),
            Record::measured("cold K=2", "ip-script", &[9.0], 3000),
            Record::measured("plan K=2", UNDERLAY, &[1.5], 6000),
        ];
        fill_ratios(&mut rs, &|c: &str| c.replace("plan", "cold"));
        assert_eq!(rs[1].ratio_to_ip_batch, Some(2.0));
        assert_eq!(rs[3].ratio_to_ip_batch, Some(0.5));
        assert_eq!(rs[0].ratio_to_ip_batch, None);
        assert_eq!(rs[2].ratio_to_ip_batch, None);
        let json = serde_json::to_value(&rs[1]).unwrap();
        for f in [
            "case",
            "tool",
            "median_ms",
            "peak_rss_kb",
            "ratio_to_ip_batch",
        ] {
            assert!(json.get(f).is_some(), "{f} missing in {json}");
        }
        assert!(serde_json::to_value(&rs[0])
            .unwrap()
            .get("ratio_to_ip_batch")
            .is_none());
        let table = render_table(&rs);
        assert!(table.contains("2.00x"), "{table}");
        assert_eq!(table.matches("cold K=2").count(), 1, "{table}");
    }

    #[test]
    fn unavailable_tool_has_no_figures() {
        let r = Record::not_measured("cold K=2", "nmstate", "unavailable: not installed".into());
        let t = render_table(&[r]);
        assert!(t.contains("unavailable: not installed"), "{t}");
    }
}
