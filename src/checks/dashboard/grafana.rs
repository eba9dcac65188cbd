//! Reading a Grafana dashboard's Prometheus queries: every panel's targets (the panels of
//! rows too, collapsed or in the old `rows` layout), each `expr` with the dashboard's
//! template variables substituted as Grafana would, then parsed as PromQL (`promql-parser`)
//! for the metric names it selects.
//!
//! Pure: text in, queries out. It reads no file and asks no server; the `dashboard` check
//! does both and judges.

use std::collections::{BTreeMap, BTreeSet};

use promql_parser::label::{METRIC_NAME, MatchOp};
use promql_parser::parser::{Expr, VectorSelector};
use promql_parser::util::{ExprVisitor, walk_expr};
use serde_json::Value;

/// A dashboard that cannot be read at all, with where the JSON parser stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    pub message: String,
    /// 1-based line and column, when the JSON parser gave one.
    pub at: Option<(usize, usize)>,
}

/// The Prometheus queries of a dashboard.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Dashboard {
    pub title: String,
    /// Every Prometheus query, in the dashboard's order.
    pub queries: Vec<Query>,
    /// Panels whose queries go to another kind of data source (not checked), by title.
    pub other_sources: Vec<String>,
    /// The variable values substituted: the dashboard's current values, Grafana's built-in
    /// intervals, and the policy's `variables`, which win.
    pub variables: BTreeMap<String, String>,
}

/// One target (`refId`) of one panel.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// The panel's title (or `panel <id>` when it has none).
    pub panel: String,
    pub ref_id: String,
    /// JSON Pointer of the `expr` (or of the target when it has none).
    pub pointer: String,
    /// 1-based line and column of the `expr` in the file, when known.
    pub at: Option<(usize, usize)>,
    /// As written in the dashboard (`""` when the target has none).
    pub expr: String,
    /// With the variables substituted; `Err` names the variables nothing defines.
    pub resolved: Result<String, Vec<String>>,
    /// The metric names its selectors name, or the parser's error; `None` when it was not
    /// parsed (no expr, or a variable nothing defines).
    pub parsed: Option<Result<BTreeSet<String>, String>>,
}

/// Grafana's built-in variables, at the values a dashboard usually gets: a `rate` window
/// over at least four scrapes of a 15 s interval, and a one-hour range. The policy's
/// `variables` override them.
pub const BUILTINS: &[(&str, &str)] = &[
    ("__interval", "1m"),
    ("__interval_ms", "60000"),
    ("__rate_interval", "1m"),
    ("__rate_interval_ms", "60000"),
    ("__range", "1h"),
    ("__range_s", "3600"),
    ("__range_ms", "3600000"),
];

/// Reads the dashboard `text`, substituting `overrides` over its own variable values.
pub fn read(text: &str, overrides: &BTreeMap<String, String>) -> Result<Dashboard, Unreadable> {
    let value: Value = serde_json::from_str(text).map_err(|e| Unreadable {
        message: format!("not JSON: {e}"),
        at: (e.line() > 0).then(|| (e.line(), e.column())),
    })?;
    if !value.is_object() {
        return Err(Unreadable {
            message: "not a Grafana dashboard: the JSON is not an object".into(),
            at: None,
        });
    }
    // A dashboard exported for sharing wraps it: `{"dashboard": {...}, "meta": ...}`.
    let (root, prefix) = match value.get("dashboard") {
        Some(d) if d.is_object() && value.get("panels").is_none() => (d, "/dashboard"),
        _ => (&value, ""),
    };
    let has_panels = root.get("panels").is_some_and(Value::is_array)
        || root.get("rows").is_some_and(Value::is_array);
    if !has_panels {
        return Err(Unreadable {
            message: "not a Grafana dashboard: no `panels` (or `rows`) list".into(),
            at: None,
        });
    }
    // Positions: JSON is YAML's flow style, so the crate's YAML reader gives every node's
    // line and column. A file it cannot read keeps its queries, without positions.
    let spans = crate::yaml::parse(text).map(|d| d.spans).unwrap_or_default();
    let at = |pointer: &str| spans.get(pointer).map(|s| (s.value.line, s.value.col));

    let mut variables: BTreeMap<String, String> = BUILTINS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    variables.extend(template_values(root));
    variables.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));

    let mut out = Dashboard {
        title: root["title"].as_str().unwrap_or_default().to_string(),
        variables,
        ..Dashboard::default()
    };
    let mut panels = Vec::new();
    collect_panels(root, prefix, &mut panels);
    for (pointer, panel) in panels {
        let Some(targets) = panel.get("targets").and_then(Value::as_array) else {
            continue;
        };
        let title = panel_title(panel, &pointer);
        let mut elsewhere = false;
        for (i, target) in targets.iter().enumerate() {
            let source = target.get("datasource").or_else(|| panel.get("datasource"));
            if !is_prometheus(source) {
                elsewhere = true;
                continue;
            }
            let target_ptr = format!("{pointer}/targets/{i}");
            let expr = target["expr"].as_str().unwrap_or_default().to_string();
            let expr_ptr = if target.get("expr").is_some() {
                format!("{target_ptr}/expr")
            } else {
                target_ptr
            };
            let resolved = substitute(&expr, &out.variables);
            let parsed = match &resolved {
                Ok(r) if !r.trim().is_empty() => Some(metric_names(r)),
                _ => None,
            };
            out.queries.push(Query {
                panel: title.clone(),
                ref_id: target["refId"]
                    .as_str()
                    .map_or_else(|| format!("#{i}"), str::to_string),
                at: at(&expr_ptr),
                pointer: expr_ptr,
                expr,
                resolved,
                parsed,
            });
        }
        if elsewhere {
            out.other_sources.push(title);
        }
    }
    Ok(out)
}

/// Every panel with its JSON Pointer: top-level panels, the panels inside rows (a collapsed
/// row holds its own `panels`), and the pre-v16 `rows[].panels[]` layout.
fn collect_panels<'a>(node: &'a Value, pointer: &str, out: &mut Vec<(String, &'a Value)>) {
    for key in ["panels", "rows"] {
        if let Some(list) = node.get(key).and_then(Value::as_array) {
            for (i, p) in list.iter().enumerate() {
                let ptr = format!("{pointer}/{key}/{i}");
                if key == "panels" {
                    out.push((ptr.clone(), p));
                }
                collect_panels(p, &ptr, out);
            }
        }
    }
}

fn panel_title(panel: &Value, pointer: &str) -> String {
    match (panel["title"].as_str(), &panel["id"]) {
        (Some(t), _) if !t.trim().is_empty() => t.to_string(),
        (_, Value::Number(id)) => format!("panel {id}"),
        _ => format!("panel at {pointer}"),
    }
}

/// Whether a target's data source (its own, else its panel's) is Prometheus: no data source
/// (the dashboard's default), a name or a variable (`${datasource}`), or an object whose
/// `type` is `prometheus` or not given.
fn is_prometheus(source: Option<&Value>) -> bool {
    match source.and_then(|s| s.get("type")).and_then(Value::as_str) {
        None => true,
        Some(t) => t == "prometheus" || (t == "datasource" && source_is_variable(source)),
    }
}

fn source_is_variable(source: Option<&Value>) -> bool {
    source
        .and_then(|s| s.get("uid"))
        .and_then(Value::as_str)
        .is_some_and(|u| u.starts_with('$'))
}

/// The dashboard's own variable values: each templating variable's current value (several
/// selected values as Grafana's regex `(a|b)`, "All" as its `allValue` or `.*`), else a
/// constant's or custom variable's query.
fn template_values(root: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let list = root
        .pointer("/templating/list")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for var in list {
        let Some(name) = var["name"].as_str() else {
            continue;
        };
        let current = match &var["current"]["value"] {
            Value::String(s) => Some(vec![s.clone()]),
            Value::Array(a) => Some(a.iter().filter_map(|v| v.as_str().map(str::to_string)).collect()),
            _ => None,
        };
        let value = match current.filter(|v: &Vec<String>| !v.is_empty()) {
            Some(v) if v.iter().any(|x| x == "$__all") => {
                var["allValue"].as_str().unwrap_or(".*").to_string()
            }
            Some(v) if v.len() == 1 => v[0].clone(),
            Some(v) => format!("({})", v.join("|")),
            None => match var["type"].as_str() {
                Some("constant" | "textbox") => var["query"].as_str().unwrap_or_default().into(),
                Some("custom" | "interval") => var["query"]
                    .as_str()
                    .and_then(|q| q.split(',').next())
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
                _ => continue,
            },
        };
        out.insert(name.to_string(), value);
    }
    out
}

/// Substitutes `$name`, `${name}`, `${name:format}` and `[[name]]` as Grafana does. A
/// reference to a variable nothing defines is an error naming it; `$1` (a `label_replace`
/// replacement) is left as written, as Grafana leaves it.
pub fn substitute(expr: &str, vars: &BTreeMap<String, String>) -> Result<String, Vec<String>> {
    static RE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"\$\{(\w+)(?:\.[^:^}]+)?(?::[^}]+)?\}|\[\[(\w+?)(?::\w+)?\]\]|\$(\w+)",
        )
        .expect("a valid regex")
    });
    let mut unknown = Vec::new();
    let out = RE.replace_all(expr, |c: &regex::Captures<'_>| {
        let name = c
            .get(1)
            .or_else(|| c.get(2))
            .or_else(|| c.get(3))
            .map_or("", |m| m.as_str());
        match vars.get(name) {
            Some(v) => v.clone(),
            None => {
                if !name.chars().all(|ch| ch.is_ascii_digit()) && !unknown.iter().any(|u| u == name)
                {
                    unknown.push(name.to_string());
                }
                c[0].to_string()
            }
        }
    });
    if unknown.is_empty() {
        Ok(out.into_owned())
    } else {
        Err(unknown)
    }
}

/// Parses `expr` as PromQL and names the metrics its selectors select (by name, or by an
/// exact `__name__` matcher). The parser is a third party's: a panic inside it is an error
/// here, never the check's.
pub fn metric_names(expr: &str) -> Result<BTreeSet<String>, String> {
    let parsed = std::panic::catch_unwind(|| promql_parser::parser::parse(expr))
        .map_err(|_| "the PromQL parser failed on this expression".to_string())??;
    let mut names = Names(BTreeSet::new());
    let _ = walk_expr(&mut names, &parsed);
    Ok(names.0)
}

struct Names(BTreeSet<String>);

impl Names {
    fn add(&mut self, vs: &VectorSelector) {
        if let Some(n) = &vs.name {
            self.0.insert(n.clone());
        }
        for m in &vs.matchers.matchers {
            if m.name == METRIC_NAME && matches!(m.op, MatchOp::Equal) {
                self.0.insert(m.value.clone());
            }
        }
    }
}

impl ExprVisitor for Names {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, e: &Expr) -> Result<bool, Self::Error> {
        match e {
            Expr::VectorSelector(vs) => self.add(vs),
            Expr::MatrixSelector(ms) => self.add(&ms.vs),
            _ => {}
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn substitutes_every_grafana_syntax() {
        let v = vars(&[("job", "core"), ("__rate_interval", "1m")]);
        let cases = [
            (r#"up{job="$job"}"#, r#"up{job="core"}"#),
            (r#"up{job="${job}"}"#, r#"up{job="core"}"#),
            (r#"up{job=~"${job:regex}"}"#, r#"up{job=~"core"}"#),
            (r#"up{job="[[job]]"}"#, r#"up{job="core"}"#),
            ("rate(x[$__rate_interval])", "rate(x[1m])"),
            // a label_replace replacement is not a variable
            (r#"label_replace(up, "a", "$1", "job", "(.*)")"#, r#"label_replace(up, "a", "$1", "job", "(.*)")"#),
        ];
        for (input, want) in cases {
            assert_eq!(substitute(input, &v).as_deref(), Ok(want), "{input}");
        }
        assert_eq!(
            substitute(r#"up{job="$job",i="$instance",n="${node}"}"#, &v),
            Err(vec!["instance".to_string(), "node".to_string()])
        );
    }

    #[test]
    fn names_the_metrics_of_every_selector() {
        let names = |e: &str| metric_names(e).map(|s| s.into_iter().collect::<Vec<_>>());
        assert_eq!(
            names(r#"histogram_quantile(0.99, sum by (le) (rate(a_bucket{job="x"}[5m]))) / on() group_left b"#),
            Ok(vec!["a_bucket".to_string(), "b".to_string()])
        );
        assert_eq!(
            names(r#"{__name__="c", job="x"} + max_over_time(d[5m:1m])"#),
            Ok(vec!["c".to_string(), "d".to_string()])
        );
        assert!(names("sum(rate(x[1m])").is_err());
        assert!(names("rate(x)").is_err(), "rate of an instant vector is a type error");
        assert!(names("").is_err());
    }

    /// A dashboard in the shapes Grafana writes: a row holding panels, a collapsed row with
    /// its own panels, a Loki panel, a target without `expr`, variables with current values.
    const DASH: &str = r#"{
  "title": "T",
  "templating": {"list": [
    {"name": "job", "type": "query", "current": {"text": "core", "value": "core"}},
    {"name": "inst", "type": "query", "current": {"value": ["a:1", "b:2"]}},
    {"name": "env", "type": "constant", "query": "prod"},
    {"name": "all", "type": "query", "current": {"value": ["$__all"]}}
  ]},
  "panels": [
    {"id": 1, "type": "row", "title": "R", "panels": []},
    {"id": 2, "title": "Requests", "datasource": {"type": "prometheus", "uid": "${datasource}"},
     "targets": [{"refId": "A", "expr": "rate(r{job=\"$job\",instance=~\"$inst\",env=\"$env\",x=~\"$all\"}[1m])"}]},
    {"id": 3, "type": "row", "collapsed": true, "title": "More", "panels": [
      {"id": 4, "targets": [{"refId": "B", "expr": "up{job=\"$job\"}"}, {"refId": "C"}]}
    ]},
    {"id": 5, "title": "Logs", "datasource": {"type": "loki", "uid": "l"},
     "targets": [{"refId": "A", "expr": "{app=\"x\"}"}]}
  ]
}"#;

    #[test]
    fn reads_panels_rows_and_variables() {
        let d = read(DASH, &BTreeMap::new()).unwrap();
        assert_eq!(d.title, "T");
        assert_eq!(d.other_sources, ["Logs"]);
        let q: Vec<(&str, &str, &str)> = d
            .queries
            .iter()
            .map(|q| (q.panel.as_str(), q.ref_id.as_str(), q.pointer.as_str()))
            .collect();
        assert_eq!(
            q,
            [
                ("Requests", "A", "/panels/1/targets/0/expr"),
                ("panel 4", "B", "/panels/2/panels/0/targets/0/expr"),
                ("panel 4", "C", "/panels/2/panels/0/targets/1"),
            ]
        );
        assert_eq!(
            d.queries[0].resolved.as_deref(),
            Ok(r#"rate(r{job="core",instance=~"(a:1|b:2)",env="prod",x=~".*"}[1m])"#)
        );
        assert_eq!(d.queries[0].at, Some((12, 41)));
        assert_eq!(
            d.queries[0].parsed,
            Some(Ok(BTreeSet::from(["r".to_string()])))
        );
        assert_eq!(d.queries[2].expr, "");
        assert_eq!(d.queries[2].parsed, None);
        // The policy's values win over the dashboard's.
        let d = read(DASH, &vars(&[("job", "other")])).unwrap();
        assert_eq!(d.queries[1].resolved.as_deref(), Ok(r#"up{job="other"}"#));
    }

    #[test]
    fn what_is_not_a_dashboard_says_where() {
        let e = read("{\n  \"panels\": [,]\n}", &BTreeMap::new()).unwrap_err();
        assert_eq!(e.at, Some((2, 14)), "{e:?}");
        assert!(e.message.starts_with("not JSON"), "{e:?}");
        let e = read(r#"{"title": "x"}"#, &BTreeMap::new()).unwrap_err();
        assert!(e.message.contains("no `panels`"), "{e:?}");
        assert!(read("[]", &BTreeMap::new()).is_err());
        // An exported dashboard (`{"dashboard": …}`) is read inside its wrapper.
        let d = read(
            r#"{"dashboard": {"panels": [{"title": "P", "targets": [{"refId": "A", "expr": "up"}]}]}}"#,
            &BTreeMap::new(),
        )
        .unwrap();
        assert_eq!(d.queries[0].pointer, "/dashboard/panels/0/targets/0/expr");
    }

    #[test]
    fn the_committed_dashboard_reads_and_parses() {
        let text = include_str!("../../../docs/dashboard.json");
        let d = read(text, &BTreeMap::new()).unwrap();
        assert!(d.queries.len() >= 12, "{}", d.queries.len());
        for q in &d.queries {
            assert!(q.at.is_some(), "{} has no position", q.pointer);
            assert!(
                matches!(q.parsed, Some(Ok(ref names)) if !names.is_empty()),
                "{} {}: {:?}",
                q.panel,
                q.ref_id,
                q.parsed
            );
        }
    }
}
