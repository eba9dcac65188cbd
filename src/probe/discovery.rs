//! Fleets: the instances a policy runs against, from where operators already list them — a
//! Prometheus `file_sd` file (JSON or YAML) or a Prometheus server's active targets
//! (`/api/v1/targets?state=active`). Each becomes an [`Instance`]: a name, a base URL and the
//! labels that came with it (`__`-prefixed meta labels dropped, as Prometheus drops them).
//!
//! This module only reads lists; running policies against them is the engine's. Label
//! matchers are PromQL's, from [`crate::probe::prom`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::probe::prom::{Matcher, Sample, Selector};

/// One member of a fleet.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, schemars::JsonSchema,
)]
pub struct Instance {
    /// Its `instance` label when the source sets one, else its address (`host:port`), as
    /// Prometheus names it.
    pub name: String,
    /// Base URL the checks run against (`http://host:port`; `https` from `__scheme__`).
    pub url: String,
    /// The labels the source gave it, meta labels (`__…`) dropped.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// Where a fleet comes from (`--targets`).
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A `file_sd` file: a list of `{targets: [host:port…], labels: {…}}` groups.
    File(std::path::PathBuf),
    /// A Prometheus server's active targets, filtered by label matchers.
    Prometheus { url: String, matchers: Matchers },
}

/// The active targets' labels a fleet keeps: a PromQL selector's matchers, without a name
/// (`{job="core",env!~"dev.*"}`; the braces may be left out).
#[derive(Debug, Clone, PartialEq)]
pub struct Matchers(Vec<Matcher>);

impl Matchers {
    pub fn parse(s: &str) -> Result<Matchers, String> {
        let inner = s.trim();
        let inner = inner
            .strip_prefix('{')
            .and_then(|i| i.strip_suffix('}'))
            .unwrap_or(inner);
        Selector::parse(&format!("target{{{inner}}}"))
            .map(|sel| Matchers(sel.matchers))
            .map_err(|e| {
                format!("`{s}` is not a list of label matchers like {{job=\"core\",env!~\"dev.*\"}}: {e}")
            })
    }

    /// Whether every matcher holds for `labels` (an absent label is the empty string).
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let sample = Sample {
            name: "target".into(),
            labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            value: 0.0,
            timestamp: None,
        };
        self.0.iter().all(|m| m.matches(&sample))
    }
}

impl Source {
    /// `prometheus:URL[?match=M1,M2…]` or a file path.
    pub fn parse(s: &str) -> Result<Source, String> {
        let Some(rest) = s.strip_prefix("prometheus:") else {
            return Ok(Source::File(s.into()));
        };
        let (url, query) = rest.split_once('?').unwrap_or((rest, ""));
        let url = url.trim_end_matches('/').to_string();
        if !crate::target::is_http_url(&url) {
            return Err(format!(
                "`{s}`: after `prometheus:` comes the server's URL (`prometheus:http://prometheus:9090?match=job=core`)"
            ));
        }
        let mut matchers = Matchers(vec![]);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key != "match" {
                return Err(format!(
                    "`{s}`: unknown parameter `{key}` (only `match=` is read)"
                ));
            }
            matchers
                .0
                .extend(Matchers::parse(&percent_decode(value))?.0);
        }
        Ok(Source::Prometheus { url, matchers })
    }

    /// The instances, sorted by name; an error says what to fix. A name given twice is an
    /// error: per-instance verdicts would be ambiguous.
    pub async fn load(&self) -> Result<Vec<Instance>, String> {
        let mut out = match self {
            Source::File(path) => read_file_sd(path)?,
            Source::Prometheus { url, matchers } => prometheus_targets(url, matchers).await?,
        };
        out.sort();
        if let Some(w) = out.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(format!(
                "the instance `{}` is listed twice (give each its own `instance` label)",
                w[0].name
            ));
        }
        if out.is_empty() {
            return Err("the fleet is empty: the source lists no targets".into());
        }
        Ok(out)
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = (b[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (hex, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, c) => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One `file_sd` group.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    targets: Vec<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

/// An instance from an address and the labels around it.
fn instance(address: &str, labels: &BTreeMap<String, String>) -> Instance {
    let scheme = labels.get("__scheme__").map_or("http", String::as_str);
    let url = if address.contains("://") {
        address.trim_end_matches('/').to_string()
    } else {
        format!("{scheme}://{address}")
    };
    let kept: BTreeMap<String, String> = labels
        .iter()
        .filter(|(k, _)| !k.starts_with("__"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Instance {
        name: kept
            .get("instance")
            .cloned()
            .unwrap_or_else(|| address.to_string()),
        url,
        labels: kept,
    }
}

/// Reads a `file_sd` file (JSON or YAML: YAML is a superset); errors point at `file:line:col`.
pub fn read_file_sd(path: &Path) -> Result<Vec<Instance>, String> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the targets file {}: {e}", path.display()))?;
    let doc = crate::yaml::parse(&src).map_err(|e| {
        format!(
            "{}:{}:{}: {}",
            path.display(),
            e.pos.line,
            e.pos.col,
            e.message
        )
    })?;
    let groups: Vec<Group> = serde_path_to_error::deserialize(&doc.value).map_err(|e| {
        let pointer = crate::yaml::pointer_of(e.path());
        // An unknown field is shown at its key, a wrong value at the value.
        let at = if e.inner().to_string().starts_with("unknown field") {
            doc.locate_key(&pointer)
        } else {
            doc.locate(&pointer)
        };
        format!(
            "{}:{}:{}: {} (a file_sd file is a list of `{{targets: [host:port, …], labels: {{name: value}}}}`)",
            path.display(),
            at.line,
            at.col,
            e.inner()
        )
    })?;
    let mut out = vec![];
    for g in &groups {
        for t in &g.targets {
            out.push(instance(t, &g.labels));
        }
    }
    Ok(out)
}

/// The subset of `/api/v1/targets` read here.
#[derive(Deserialize)]
struct TargetsResponse {
    data: TargetsData,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TargetsData {
    active_targets: Vec<ActiveTarget>,
}
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ActiveTarget {
    #[serde(default)]
    discovered_labels: BTreeMap<String, String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    scrape_url: String,
}

async fn prometheus_targets(url: &str, matchers: &Matchers) -> Result<Vec<Instance>, String> {
    let api = format!("{url}/api/v1/targets?state=active");
    let resp = crate::http_client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?
        .get(&api)
        .send()
        .await
        .map_err(|e| format!("cannot ask {api} for its targets: {e}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{api} answered {status}"));
    }
    let body: TargetsResponse = resp
        .json()
        .await
        .map_err(|e| format!("{api} did not answer a Prometheus targets list: {e}"))?;
    from_active_targets(body.data.active_targets, matchers)
}

fn from_active_targets(
    targets: Vec<ActiveTarget>,
    matchers: &Matchers,
) -> Result<Vec<Instance>, String> {
    let mut out = vec![];
    for t in targets {
        if !matchers.matches(&t.labels) {
            continue;
        }
        let u = reqwest::Url::parse(&t.scrape_url)
            .map_err(|e| format!("Prometheus gave `{}`, not a URL: {e}", t.scrape_url))?;
        let base = u.origin().ascii_serialization();
        let mut labels = t.labels;
        labels
            .entry("__scheme__".into())
            .or_insert_with(|| u.scheme().to_string());
        let address = t
            .discovered_labels
            .get("__address__")
            .cloned()
            .unwrap_or_else(|| base.clone());
        let mut i = instance(&base, &labels);
        if !labels.contains_key("instance") {
            i.name = address;
        }
        out.push(i);
    }
    Ok(out)
}

/// Whether `instance` falls in shard `k` of `n` (1-based): by a stable hash of its name
/// (FNV-1a, the same on every machine and release), so CI matrix jobs or Kubernetes indexed
/// Jobs split a fleet without talking to each other, and together cover it exactly once.
pub fn in_shard(instance: &Instance, k: u32, n: u32) -> bool {
    n <= 1 || (crate::units::fnv1a(instance.name.as_bytes()) % u64::from(n)) == u64::from(k - 1)
}

/// `K/N` with 1 ≤ K ≤ N.
pub fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{s}` is not a shard: write K/N with 1 ≤ K ≤ N, e.g. `--shard 2/3`");
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n): (u32, u32) = (
        k.trim().parse().map_err(|_| bad())?,
        n.trim().parse().map_err(|_| bad())?,
    );
    if k == 0 || n == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_sd_json_and_yaml_read_alike_with_labels_kept() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("t.json");
        std::fs::write(
            &json,
            r#"[{"targets": ["127.0.0.1:8001", "127.0.0.1:8002"], "labels": {"env": "prod", "__scheme__": "https"}},
                {"targets": ["[::1]:8003"], "labels": {"instance": "v6"}}]"#,
        )
        .unwrap();
        let yaml = dir.path().join("t.yaml");
        std::fs::write(
            &yaml,
            "- targets: ['127.0.0.1:8001', '127.0.0.1:8002']\n  labels: {env: prod, __scheme__: https}\n- targets: ['[::1]:8003']\n  labels:\n    instance: v6\n",
        )
        .unwrap();
        let a = read_file_sd(&json).unwrap();
        assert_eq!(a, read_file_sd(&yaml).unwrap());
        assert_eq!(a[0].url, "https://127.0.0.1:8001");
        assert_eq!(a[0].name, "127.0.0.1:8001");
        assert_eq!(a[0].labels, labels(&[("env", "prod")]));
        assert_eq!(a[2].name, "v6");
        assert_eq!(a[2].url, "http://[::1]:8003");
    }

    #[test]
    fn a_bad_file_sd_file_points_at_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.yaml");
        std::fs::write(&p, "- targets: ['a:1']\n- target: ['b:2']\n").unwrap();
        let e = read_file_sd(&p).unwrap_err();
        assert!(e.contains("t.yaml:2:3"), "{e}");
        assert!(e.contains("unknown field `target`"), "{e}");
    }

    #[tokio::test]
    async fn duplicate_and_empty_fleets_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.json");
        std::fs::write(&p, r#"[{"targets": ["a:1", "a:1"]}]"#).unwrap();
        let e = Source::File(p.clone()).load().await.unwrap_err();
        assert!(e.contains("`a:1` is listed twice"), "{e}");
        std::fs::write(&p, "[]").unwrap();
        let e = Source::File(p).load().await.unwrap_err();
        assert!(e.contains("empty"), "{e}");
    }

    #[test]
    fn sources_and_matchers_parse() {
        assert_eq!(
            Source::parse("fleet.json").unwrap(),
            Source::File("fleet.json".into())
        );
        let Source::Prometheus { url, matchers } = Source::parse(
            "prometheus:http://127.0.0.1:9090/?match=%7Bjob%3D%22core%22%7D&match=env!~\"dev.*\"",
        )
        .unwrap() else {
            panic!("not prometheus")
        };
        assert_eq!(url, "http://127.0.0.1:9090");
        assert_eq!(matchers.0.len(), 2);
        assert!(
            matchers.matches(&labels(&[("job", "core")])),
            "absent env is \"\""
        );
        assert!(!matchers.matches(&labels(&[("job", "core2")])));
        assert!(!matchers.matches(&labels(&[("job", "core"), ("env", "dev-1")])));
        assert!(Source::parse("prometheus:localhost:9090").is_err());
        assert!(Source::parse("prometheus:http://p?job=core").is_err());
        assert!(Matchers::parse("job").is_err());
        assert!(Matchers::parse("job=~\"(\"").is_err());
    }

    #[test]
    fn active_targets_become_instances() {
        let t: TargetsResponse = serde_json::from_str(
            r#"{"status":"success","data":{"activeTargets":[
              {"discoveredLabels":{"__address__":"127.0.0.1:8001","__scheme__":"http"},
               "labels":{"instance":"127.0.0.1:8001","job":"core"},
               "scrapeUrl":"http://127.0.0.1:8001/metrics","health":"up"},
              {"discoveredLabels":{"__address__":"127.0.0.1:9100"},
               "labels":{"instance":"127.0.0.1:9100","job":"node"},
               "scrapeUrl":"https://127.0.0.1:9100/metrics","health":"down"}],
              "droppedTargets":[]}}"#,
        )
        .unwrap();
        let all = from_active_targets(t.data.active_targets, &Matchers(vec![])).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].url, "http://127.0.0.1:8001");
        assert_eq!(all[1].url, "https://127.0.0.1:9100");
        assert_eq!(
            all[0].labels,
            labels(&[("instance", "127.0.0.1:8001"), ("job", "core")])
        );
    }

    #[test]
    fn shards_cover_a_fleet_exactly_once() {
        let fleet: Vec<Instance> = (0..200)
            .map(|i| instance(&format!("127.0.0.1:{}", 8000 + i), &BTreeMap::new()))
            .collect();
        for n in 1..=5 {
            let mut seen = 0;
            for k in 1..=n {
                let here = fleet.iter().filter(|i| in_shard(i, k, n)).count();
                assert!(n == 1 || here > 0, "shard {k}/{n} empty");
                seen += here;
            }
            assert_eq!(seen, fleet.len());
        }
        assert_eq!(parse_shard("2/3").unwrap(), (2, 3));
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            assert!(parse_shard(bad).is_err(), "{bad}");
        }
    }
}
