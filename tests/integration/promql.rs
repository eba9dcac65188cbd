//! The PromQL client (`probe::promql`) against a real Prometheus server scraping the bundled
//! service: what Prometheus answers must be what the service's own `/metrics` says.

use std::time::{Duration, SystemTime};

use preflight::probe::promql::{PromClient, PromError, QueryResult};
use serde_json::json;

use crate::prom_server;
use crate::support::{Service, config, post_json};

/// Scraping must start within this (Prometheus hands new targets to its scrapers every 5 s;
/// generous for a loaded 2-core machine).
const SCRAPED_DEADLINE: Duration = Duration::from_secs(60);

/// Graph builds done before Prometheus starts: `graph_builds_total` holds this from then on
/// (nothing else builds the graph), so every scrape must read exactly this.
const BUILDS: usize = 3;

#[tokio::test]
async fn reads_a_spawned_service_through_a_real_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let svc = Service::start(&config("core.yaml"), &dir.path().join("svc"));
    let c = svc.client();
    for _ in 0..BUILDS {
        let (s, v) = post_json(&c, &svc.url("/v1/graph/build"), &json!({"window": "5m"})).await;
        assert_eq!(s, 200, "{v}");
    }
    let own = svc.metric("graph_builds_total").await;
    assert_eq!(own, Some(BUILDS as f64), "the service's own /metrics");

    let Some(prom) = prom_server::start(&[("core", &svc.url)]).await else {
        return;
    };
    let instance = svc.url.trim_start_matches("http://").to_string();
    let builds = format!(r#"graph_builds_total{{job="core",instance="{instance}"}}"#);
    prom.wait_for("core", 1, &builds, SCRAPED_DEADLINE).await;
    let client = prom.client();

    // Instant query: the one series, its labels, the value the service itself reports.
    let r = client.query(&builds, None).await.unwrap();
    assert_eq!(r.single_value().unwrap(), own.unwrap(), "{r:?}");
    let QueryResult::Vector(v) = &r.result else {
        panic!("{r:?}")
    };
    assert_eq!(v[0].labels["__name__"], "graph_builds_total");
    assert_eq!(v[0].labels["job"], "core");
    assert_eq!(v[0].labels["instance"], instance);
    assert!(r.warnings.is_empty() && r.notes.is_empty(), "{r:?}");

    // A few scrapes, then the range: every point is the same value, one per second.
    let scrapes = format!("count_over_time({builds}[1m])");
    let end = std::time::Instant::now() + SCRAPED_DEADLINE;
    loop {
        let n = client
            .query(&scrapes, None)
            .await
            .unwrap()
            .single_value()
            .unwrap();
        if n >= 4.0 {
            break;
        }
        assert!(std::time::Instant::now() < end, "only {n} scrapes");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let now = SystemTime::now();
    let r = client
        .query_range(
            &builds,
            now - Duration::from_secs(2),
            now,
            Duration::from_secs(1),
        )
        .await
        .unwrap();
    let QueryResult::Matrix(m) = &r.result else {
        panic!("{r:?}")
    };
    assert_eq!(m.len(), 1, "{r:?}");
    assert_eq!(m[0].labels["instance"], instance);
    let values: Vec<f64> = m[0].points.iter().map(|p| p.v).collect();
    assert_eq!(values, [own.unwrap(); 3], "{r:?}");
    let times: Vec<f64> = m[0].points.iter().map(|p| p.t).collect();
    assert!(
        times.windows(2).all(|w| (w[1] - w[0] - 1.0).abs() < 1e-6),
        "{times:?}"
    );

    // The evaluation time is the one asked for; an hour ago there was nothing.
    let at = SystemTime::now();
    let r = client.query(&builds, Some(at)).await.unwrap();
    let QueryResult::Vector(v) = &r.result else {
        panic!("{r:?}")
    };
    let asked = at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        (v[0].point.unwrap().t - asked).abs() < 0.002,
        "{r:?} at {asked}"
    );
    let r = client
        .query(&builds, Some(at - Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(r.result, QueryResult::Vector(vec![]));

    // The same through a POST form.
    let post = PromClient::builder(&prom.url).post(true).build().unwrap();
    let r = post.query(&builds, None).await.unwrap();
    assert_eq!(r.single_value().unwrap(), own.unwrap());

    // Scalars, as Prometheus spells them: a number, NaN, infinities.
    let scalar = |q: &str| {
        let q = q.to_string();
        let client = client.clone();
        async move {
            match client.query(&q, None).await.unwrap().result {
                QueryResult::Scalar(p) => p.v,
                other => panic!("{q}: {other:?}"),
            }
        }
    };
    assert_eq!(scalar(&format!("scalar({builds})")).await, own.unwrap());
    assert!(scalar("0/0").await.is_nan());
    assert_eq!(scalar("1/0").await, f64::INFINITY);
    assert_eq!(scalar("-1/0").await, f64::NEG_INFINITY);

    // A bad query: bad_data, with Prometheus's parse error and the query.
    let e = client.query("sum(", None).await.unwrap_err();
    assert!(matches!(e, PromError::BadData { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("bad_data: ") && msg.contains("parse error") && msg.contains("`sum(`"),
        "{msg}"
    );

    // A metric that is not there: an empty vector, and no single value ("0 series").
    let r = client
        .query("preflight_no_such_metric_total", None)
        .await
        .unwrap();
    assert_eq!(r.result, QueryResult::Vector(vec![]));
    let e = r.single_value().unwrap_err();
    assert!(matches!(e, PromError::NotOneSeries { n: 0, .. }), "{e:?}");
    assert!(e.to_string().contains("returned 0 series"), "{e}");

    // Two series where one was expected: both named.
    let two = format!(
        r#"{{job="core",instance="{instance}",__name__=~"graph_builds_total|snapshots_total"}}"#
    );
    let e = client
        .query(&two, None)
        .await
        .unwrap()
        .single_value()
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("returned 2 series")
            && e.contains("graph_builds_total{")
            && e.contains("snapshots_total{"),
        "{e}"
    );
}
