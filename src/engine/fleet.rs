//! Fleets (DESIGN §10): one policy against many instances of a service, each with its own
//! verdict, and the fleet's verdict by the policy's `fleet.require`. Instances run with
//! bounded concurrency (`fleet.concurrency`); within one, the engine keeps a disturbing check
//! alone as ever, and `fleet.max_disturbed` caps how many instances are disturbed at once.
//!
//! A fleet report is a [`Report`] whose results each name their `instance`, plus a
//! [`FleetSummary`]. Shards of a fleet (`--shard K/N`) give such reports for parts of it;
//! [`merge`] joins them into the report the whole fleet would have given.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::time::Instant;

use crate::engine::gate;
use crate::engine::run::{CheckFailure, CheckOptions, Progress, check};
use crate::outcome::Status;
use crate::policy::model::FleetRequire;
use crate::probe::discovery::Instance;
use crate::report::{
    CheckResult, Counts, FleetSummary, InstanceVerdict, Report, TargetInfo, Verdict,
};
use crate::target::ProgressFn;

/// The part of a fleet this run covers.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The instances to check (already sharded).
    pub instances: Vec<Instance>,
    /// Where they were listed, for the report (`fleet.json`, `prometheus:…`).
    pub source: String,
    /// Instances in the whole fleet.
    pub size: usize,
    /// `K/N` when this run is one shard.
    pub shard: Option<(u32, u32)>,
}

/// Progress of one instance, its lines prefixed with the instance's name.
struct Prefixed(Arc<dyn Progress>, String);

impl Progress for Prefixed {
    fn message(&self, msg: &str) {
        self.0.message(&format!("{}: {msg}", self.1));
    }
    fn started(&self, id: &str) -> ProgressFn {
        self.0.started(&format!("{}: {id}", self.1))
    }
    fn finished(&self, id: &str, status: Status, summary: &str) {
        self.0
            .finished(&format!("{}: {id}", self.1), status, summary);
    }
}

/// Runs the policy of `opts` against every instance of `fleet` and decides the fleet's
/// verdict. `opts.target` and `opts.config` are ignored: the instances are the targets.
pub async fn check_fleet(opts: CheckOptions, fleet: Fleet) -> Result<Report, CheckFailure> {
    let spec = opts.policy.fleet.clone().unwrap_or_default();
    // Usage errors (an unknown --only id) are the same for every instance: say so once.
    crate::engine::run::select(&opts.policy.checks, &opts.only, &opts.skip)
        .map_err(CheckFailure::Usage)?;
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let start = Instant::now();
    let disturbing = Arc::new(Semaphore::new(spec.max_disturbed.max(1)));
    let slots = Arc::new(Semaphore::new(spec.concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for (index, instance) in fleet.instances.iter().cloned().enumerate() {
        let mut o = opts.clone();
        o.target = Some(instance.url.clone());
        o.config = None;
        o.progress = Arc::new(Prefixed(opts.progress.clone(), instance.name.clone()));
        o.disturbing = Some(disturbing.clone());
        let slots = slots.clone();
        tasks.spawn(async move {
            // Never closed, so acquiring cannot fail; a failure would only run it unbounded.
            let _slot = slots.acquire_owned().await.ok();
            (index, instance, check(o).await)
        });
    }
    let mut parts: Vec<Option<(Instance, Report)>> = vec![None; fleet.instances.len()];
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((i, instance, Ok(report))) => parts[i] = Some((instance, report)),
            Ok((_, _, Err(e))) => return Err(e),
            // A panic in one instance's run: the others' results still stand; this one is
            // reported below as an ERROR instance.
            Err(_) => {}
        }
    }
    let mut instances = vec![];
    let mut results = vec![];
    let mut template = None;
    for (slot, instance) in parts.into_iter().zip(&fleet.instances) {
        match slot {
            Some((instance, report)) => {
                instances.push(instance_verdict(&instance, &report));
                results.extend(report.results.iter().cloned().map(|mut r| {
                    r.instance = Some(instance.name.clone());
                    r
                }));
                template.get_or_insert(report);
            }
            None => instances.push(InstanceVerdict {
                name: instance.name.clone(),
                url: instance.url.clone(),
                labels: instance.labels.clone(),
                verdict: Verdict::Inconclusive,
                verdict_reason: "its run ended abnormally (a bug in preflight: please report it)"
                    .into(),
                counts: Counts::default(),
                duration_ms: 0,
                warnings: vec![],
            }),
        }
    }
    let Some(template) = template else {
        return Err(CheckFailure::Usage(
            "no instance of the fleet could be checked".into(),
        ));
    };
    let summary = FleetSummary {
        require: spec.require.to_string(),
        size: fleet.size,
        source: fleet.source,
        shards: fleet
            .shard
            .map(|(k, n)| vec![format!("{k}/{n}")])
            .unwrap_or_default(),
        go: 0,
        no_go: 0,
        inconclusive: 0,
        missing: 0,
        instances,
    };
    let mut report = assemble(template, summary, results, spec.require);
    report.started_at = started_at;
    report.duration_ms = start.elapsed().as_millis() as u64;
    Ok(report)
}

fn instance_verdict(instance: &Instance, report: &Report) -> InstanceVerdict {
    InstanceVerdict {
        name: instance.name.clone(),
        url: instance.url.clone(),
        labels: instance.labels.clone(),
        verdict: report.verdict,
        verdict_reason: report.verdict_reason.clone(),
        counts: report.counts.clone(),
        duration_ms: report.duration_ms,
        warnings: report.target.warnings.clone(),
    }
}

/// The fleet report from a template (policy, tool, gate: any instance's report), the
/// instances and all their results: sorted by instance, counts summed, verdict by `require`.
fn assemble(
    template: Report,
    mut summary: FleetSummary,
    mut results: Vec<CheckResult>,
    require: FleetRequire,
) -> Report {
    summary.instances.sort_by(|a, b| a.name.cmp(&b.name));
    // Stable: each instance's results keep the policy order.
    results.sort_by(|a, b| a.instance.cmp(&b.instance));
    let mut counts = Counts::default();
    for i in &summary.instances {
        let c = &i.counts;
        counts.pass += c.pass;
        counts.fail += c.fail;
        counts.error += c.error;
        counts.skip += c.skip;
        counts.inconclusive += c.inconclusive;
        counts.waived += c.waived;
    }
    let verdicts: Vec<(&str, Verdict)> = summary
        .instances
        .iter()
        .map(|i| (i.name.as_str(), i.verdict))
        .collect();
    let (verdict, reason) = gate::fleet_decide(&verdicts, summary.size, require);
    let of = |v: Verdict| summary.instances.iter().filter(|i| i.verdict == v).count();
    summary.go = of(Verdict::Go);
    summary.no_go = of(Verdict::NoGo);
    summary.inconclusive = of(Verdict::Inconclusive);
    summary.missing = summary.size.saturating_sub(summary.instances.len());
    let shards = if summary.shards.is_empty() {
        String::new()
    } else {
        format!(", shard {}", summary.shards.join(" + "))
    };
    Report {
        target: TargetInfo {
            url: format!(
                "{} of {} instances from {}{shards}",
                summary.instances.len(),
                summary.size,
                summary.source
            ),
            spawned: false,
            config: None,
            capabilities: template.target.capabilities.clone(),
            address: None,
            sources: None,
            warnings: vec![],
            version: None,
        },
        verdict,
        verdict_reason: reason,
        counts,
        results,
        fleet: Some(summary),
        canary: None,
        ..template
    }
}

/// Joins shard reports of one fleet into the report of the whole (`preflight report merge`):
/// the same policy and rule in each, no instance in two. Shards missing from the set leave
/// their instances out, and the verdict counts them as not GO.
pub fn merge(reports: Vec<Report>) -> Result<Report, String> {
    let mut reports = reports.into_iter();
    let first = reports.next().ok_or("give at least one report to merge")?;
    let Some(fleet) = first.fleet.clone() else {
        return Err("the first report is not a fleet report (made with `check --targets`)".into());
    };
    let require: FleetRequire = fleet.require.parse()?;
    let mut summary = FleetSummary {
        instances: vec![],
        shards: vec![],
        ..fleet.clone()
    };
    let mut results = vec![];
    let mut seen = BTreeSet::new();
    let mut started = first.started_at.clone();
    let mut duration = 0;
    for (n, r) in std::iter::once(first.clone()).chain(reports).enumerate() {
        let which = format!("report {}", n + 1);
        let Some(f) = r.fleet else {
            return Err(format!(
                "{which} is not a fleet report (made with `check --targets`)"
            ));
        };
        if r.policy.name != first.policy.name {
            return Err(format!(
                "{which} checked policy `{}`, the first `{}`: merge reports of one policy",
                r.policy.name, first.policy.name
            ));
        }
        if f.require != fleet.require || f.size != fleet.size || f.source != fleet.source {
            return Err(format!(
                "{which} is of another fleet (require {}, {} instances from {}; the first: require {}, {} from {})",
                f.require, f.size, f.source, fleet.require, fleet.size, fleet.source
            ));
        }
        for i in &f.instances {
            if !seen.insert(i.name.clone()) {
                return Err(format!(
                    "the instance `{}` is in two of the reports: shards overlap, or one report was given twice",
                    i.name
                ));
            }
        }
        started = started.min(r.started_at.clone());
        duration = duration.max(r.duration_ms);
        summary.shards.extend(f.shards);
        summary.instances.extend(f.instances);
        results.extend(r.results);
    }
    summary.shards.sort();
    summary.shards.dedup();
    let mut report = assemble(first, summary, results, require);
    report.started_at = started;
    report.duration_ms = duration;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{PolicyInfo, SCHEMA_VERSION};

    fn part(names: &[(&str, Verdict)], shard: &str) -> Report {
        let instances = names
            .iter()
            .map(|(n, v)| InstanceVerdict {
                name: n.to_string(),
                url: format!("http://{n}"),
                labels: Default::default(),
                verdict: *v,
                verdict_reason: String::new(),
                counts: Counts {
                    pass: 1,
                    ..Counts::default()
                },
                duration_ms: 10,
                warnings: vec![],
            })
            .collect();
        let results = names
            .iter()
            .map(|(n, _)| {
                let mut r =
                    CheckResult::new("c", "http", crate::policy::Severity::High, Status::Pass);
                r.instance = Some(n.to_string());
                r
            })
            .collect();
        Report {
            schema_version: SCHEMA_VERSION,
            tool: "preflight".into(),
            policy: PolicyInfo {
                name: "p".into(),
                description: None,
                files: vec![],
            },
            target: TargetInfo::default(),
            started_at: "2026-12-03T00:00:00Z".into(),
            duration_ms: 5,
            verdict: Verdict::Go,
            verdict_reason: String::new(),
            block_on: vec![],
            counts: Counts::default(),
            waivers: vec![],
            results,
            canary: None,
            fleet: Some(FleetSummary {
                require: "all".into(),
                size: 5,
                source: "fleet.json".into(),
                shards: vec![shard.into()],
                go: 0,
                no_go: 0,
                inconclusive: 0,
                missing: 0,
                instances,
            }),
        }
    }

    #[test]
    fn shards_merge_into_the_whole_fleet() {
        use Verdict::*;
        let a = part(&[("d", Go), ("a", Go)], "1/2");
        let b = part(&[("c", NoGo), ("b", Go), ("e", Go)], "2/2");
        let m = merge(vec![b.clone(), a.clone()]).unwrap();
        let f = m.fleet.as_ref().unwrap();
        let names: Vec<&str> = f.instances.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
        assert_eq!(f.shards, ["1/2", "2/2"]);
        assert_eq!((f.go, f.no_go, f.missing), (4, 1, 0));
        assert_eq!(m.verdict, NoGo);
        assert_eq!(m.counts.pass, 5);
        let order: Vec<&str> = m
            .results
            .iter()
            .map(|r| r.instance.as_deref().unwrap())
            .collect();
        assert_eq!(order, names);

        // One shard alone: the rest are missing, and missing is not GO.
        let only_a = merge(vec![a.clone()]).unwrap();
        assert_eq!(only_a.verdict, Inconclusive);
        assert_eq!(only_a.fleet.unwrap().missing, 3);

        let e = merge(vec![a.clone(), a.clone()]).unwrap_err();
        assert!(e.contains("`d` is in two"), "{e}");
        let mut other = b.clone();
        other.policy.name = "q".into();
        assert!(
            merge(vec![a.clone(), other])
                .unwrap_err()
                .contains("policy `q`")
        );
        let mut plain = b;
        plain.fleet = None;
        assert!(
            merge(vec![a, plain])
                .unwrap_err()
                .contains("not a fleet report")
        );
    }
}
