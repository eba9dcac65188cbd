//! Planning and scheduling: which checks run, from which source addresses, in what order and
//! with what concurrency.
//!
//! Source addresses follow reachability: a loopback target gets distinct 127.x.y.z blocks
//! per check (a fresh random start each run); any other target gets the addresses the
//! operator declared, or the OS's choice. When the addresses cannot keep checks apart, the
//! engine runs the checks one after another (concurrency 1).
//!
//! Shared checks marked `independent` run concurrently (bounded); exclusive ones run alone,
//! after everything started before them has finished. A check waits for its dependencies,
//! and is SKIP unless every one of them passed. Results come back in policy order. The
//! scheduler knows nothing of what a check does: it drives an [`Executor`].

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::pin::Pin;

use ipnet::IpNet;
use tokio::task::JoinSet;

use crate::outcome::Status;

/// How many further addresses each check gets on a loopback target.
pub const EXTRA_SOURCES: usize = 64;

/// Addresses per loopback block: the check's own, its [`EXTRA_SOURCES`], rounded up to a
/// power of two so that blocks stay aligned.
const BLOCK: u32 = 128;
/// First address of the loopback blocks: 127.1.0.0. 127.0.0.0/16 is left alone (services
/// and tests listen on 127.0.0.1, and earlier versions used 127.0.x.y as sources).
const LOOPBACK_FIRST: u32 = u32::from_be_bytes([127, 1, 0, 0]);
/// Blocks in 127.1.0.0 – 127.255.255.255.
const LOOPBACK_BLOCKS: u32 = (255 * 65536) / BLOCK;
/// Most declared addresses expanded from CIDRs (a /64 has more than anyone binds to).
pub const MAX_DECLARED: usize = 4096;

/// The client addresses of one check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sources {
    /// The check's own address. The unspecified address (`0.0.0.0` or `::`) means "let the
    /// OS choose" (no bind).
    pub own: IpAddr,
    /// Further addresses of this check, each distinct from `own` (the rate-limit
    /// neighbour, a flood spread over clients). Empty when none are distinct.
    pub extra: Vec<IpAddr>,
}

/// Where the client addresses of a run come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourcePlan {
    /// An IPv4 loopback target: each check gets its own block of 127.x.y.z addresses, the
    /// run's blocks starting at `first_block` (random per run, so that a second run does
    /// not meet the rate-limit buckets of the first).
    Loopback { first_block: u32 },
    /// Addresses the operator declared (`target.source_addresses`, `--source-address`):
    /// the target's family only, in the declared order.
    Declared(Vec<IpAddr>),
    /// No addresses known: the OS chooses, one address for every client. Holds the
    /// unspecified address of the target's family.
    Os(IpAddr),
}

impl SourcePlan {
    /// The plan for a target at `target` (its resolved address, when known): declared
    /// addresses of the target's family when any, else loopback blocks for an IPv4
    /// loopback target, else the OS's choice. A declaration with no address of the
    /// target's family is an error naming the field.
    pub fn new(target: Option<IpAddr>, declared: &[IpNet]) -> Result<Self, String> {
        let v6 = target.is_some_and(|a| a.is_ipv6());
        if !declared.is_empty() {
            let mut addrs = Vec::new();
            for net in declared {
                if net.addr().is_ipv6() != v6 {
                    continue;
                }
                // A single address (/32, /128) is itself; a range gives its hosts.
                if net.prefix_len() == net.max_prefix_len() {
                    addrs.push(net.addr());
                } else {
                    addrs.extend(net.hosts().take(MAX_DECLARED.saturating_sub(addrs.len())));
                }
                if addrs.len() >= MAX_DECLARED {
                    break;
                }
            }
            let mut seen = std::collections::HashSet::new();
            addrs.retain(|a| seen.insert(*a));
            if addrs.is_empty() {
                return Err(format!(
                    "`target.source_addresses` has no {} address, and the target is {}",
                    if v6 { "IPv6" } else { "IPv4" },
                    target.map_or_else(|| "unresolved".to_string(), |a| a.to_string())
                ));
            }
            return Ok(SourcePlan::Declared(addrs));
        }
        match target {
            Some(IpAddr::V4(a)) if a.is_loopback() => Ok(Self::fresh_loopback()),
            Some(IpAddr::V6(_)) => Ok(SourcePlan::Os(IpAddr::V6(Ipv6Addr::UNSPECIFIED))),
            _ => Ok(SourcePlan::Os(IpAddr::V4(Ipv4Addr::UNSPECIFIED))),
        }
    }

    /// Loopback blocks starting at a random block: two runs share an address only when
    /// their random starts fall within the number of checks of each other.
    pub fn fresh_loopback() -> Self {
        SourcePlan::Loopback {
            first_block: rand::random::<u32>() % LOOPBACK_BLOCKS,
        }
    }

    /// Whether every check of a run of `checks` gets addresses no other check uses, so
    /// that checks may run concurrently without sharing a rate-limit bucket.
    pub fn isolates(&self, checks: usize) -> bool {
        match self {
            SourcePlan::Loopback { .. } => checks as u32 <= LOOPBACK_BLOCKS,
            SourcePlan::Declared(a) => a.len() >= 2 * checks.max(1),
            SourcePlan::Os(_) => false,
        }
    }

    /// The addresses of check `index` of a run of `checks`.
    ///
    /// Declared addresses are split into disjoint shares of at least two when there are
    /// enough ([`SourcePlan::isolates`]); otherwise every check gets all of them (its own
    /// first, rotated by check so that consecutive checks start on different addresses)
    /// and the engine runs the checks one after another.
    pub fn assign(&self, index: usize, checks: usize) -> Sources {
        match self {
            SourcePlan::Loopback { first_block } => {
                let block = (*first_block as u64 + index as u64) % LOOPBACK_BLOCKS as u64;
                let base = LOOPBACK_FIRST + block as u32 * BLOCK;
                let v4 = |n: u32| IpAddr::V4(Ipv4Addr::from(base + n));
                Sources {
                    own: v4(1),
                    extra: (2..2 + EXTRA_SOURCES as u32).map(v4).collect(),
                }
            }
            SourcePlan::Declared(addrs) if self.isolates(checks) => {
                let share = (addrs.len() / checks.max(1)).min(1 + EXTRA_SOURCES);
                let mine = &addrs[index * share..(index + 1) * share];
                Sources {
                    own: mine[0],
                    extra: mine[1..].to_vec(),
                }
            }
            SourcePlan::Declared(addrs) => {
                let k = addrs.len();
                let own = addrs[index % k];
                Sources {
                    own,
                    extra: (1..k.min(1 + EXTRA_SOURCES))
                        .map(|j| addrs[(index + j) % k])
                        .collect(),
                }
            }
            SourcePlan::Os(any) => Sources {
                own: *any,
                extra: Vec::new(),
            },
        }
    }

    /// For the report: where the client addresses came from.
    pub fn describe(&self) -> String {
        match self {
            SourcePlan::Loopback { .. } => {
                "a distinct block of loopback addresses (127.x.y.z) per check, fresh each run".into()
            }
            SourcePlan::Declared(a) => format!(
                "{} declared address(es) (`target.source_addresses`), from {}",
                a.len(),
                a[0]
            ),
            SourcePlan::Os(_) => {
                "the OS's choice, one address for every check (declare more in `target.source_addresses`)".into()
            }
        }
    }
}

/// What the scheduler needs to know of a check.
#[derive(Debug, Clone)]
pub struct Item {
    pub id: String,
    /// Runs alone: it disturbs the target, or the policy says it is not independent.
    pub exclusive: bool,
    pub depends_on: Vec<String>,
}

/// A boxed future the scheduler can spawn.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// Runs checks for the scheduler and builds their results.
pub trait Executor {
    type Out: Send + 'static;
    /// Starts check `index`.
    fn start(&self, index: usize) -> BoxFuture<Self::Out>;
    /// A result for a check that is not run, with the reason.
    fn skipped(&self, index: usize, reason: String) -> Self::Out;
    /// A result for a check whose task died (a bug in a check, never the target's doing).
    fn crashed(&self, index: usize, reason: String) -> Self::Out;
    fn status(&self, out: &Self::Out) -> Status;
    /// Whether this result stops a `--fail-fast` run.
    fn stops_run(&self, index: usize, out: &Self::Out) -> bool;
}

/// Scheduling options.
#[derive(Debug, Clone, Copy)]
pub struct Sched {
    /// Most shared checks running at once (at least 1).
    pub concurrency: usize,
    pub fail_fast: bool,
}

struct State<T> {
    results: Vec<Option<T>>,
    running: JoinSet<(usize, T)>,
    /// Task id → check index, to attribute a panic.
    tasks: HashMap<tokio::task::Id, usize>,
    stopped: bool,
}

impl<T: Send + 'static> State<T> {
    async fn join_one<E: Executor<Out = T>>(&mut self, exec: &E, fail_fast: bool) -> bool {
        let Some(joined) = self.running.join_next_with_id().await else {
            return false;
        };
        let (index, out) = match joined {
            Ok((id, (index, out))) => {
                self.tasks.remove(&id);
                (index, out)
            }
            Err(e) => {
                let index = self.tasks.remove(&e.id()).unwrap_or(usize::MAX);
                let why = if e.is_panic() {
                    "the check panicked (a bug in preflight, please report it)".to_string()
                } else {
                    format!("the check's task ended: {e}")
                };
                if index == usize::MAX {
                    return true;
                }
                (index, exec.crashed(index, why))
            }
        };
        self.record(exec, index, out, fail_fast);
        true
    }

    fn record<E: Executor<Out = T>>(&mut self, exec: &E, index: usize, out: T, fail_fast: bool) {
        if fail_fast && exec.stops_run(index, &out) {
            self.stopped = true;
        }
        self.results[index] = Some(out);
    }

    async fn drain<E: Executor<Out = T>>(&mut self, exec: &E, fail_fast: bool) {
        while self.join_one(exec, fail_fast).await {}
    }
}

/// Runs every item and returns their results in the items' order.
pub async fn schedule<E: Executor>(items: &[Item], exec: &E, opts: Sched) -> Vec<E::Out> {
    let concurrency = opts.concurrency.max(1);
    let index_of: HashMap<&str, usize> = items
        .iter()
        .enumerate()
        .map(|(i, it)| (it.id.as_str(), i))
        .collect();
    let mut st = State {
        results: (0..items.len()).map(|_| None).collect(),
        running: JoinSet::new(),
        tasks: HashMap::new(),
        stopped: false,
    };
    for (i, item) in items.iter().enumerate() {
        // A dependency still running must finish first.
        let waits = item.depends_on.iter().any(|d| {
            index_of
                .get(d.as_str())
                .is_some_and(|&j| j < i && st.results[j].is_none())
        });
        if waits || item.exclusive {
            st.drain(exec, opts.fail_fast).await;
        }
        if st.stopped {
            st.results[i] = Some(exec.skipped(i, "not run: --fail-fast".into()));
            continue;
        }
        if let Some(reason) = unmet_dependency(item, i, &index_of, &st.results, exec) {
            st.results[i] = Some(exec.skipped(i, reason));
            continue;
        }
        if item.exclusive {
            let out = exec.start(i).await;
            st.record(exec, i, out, opts.fail_fast);
            continue;
        }
        while st.running.len() >= concurrency {
            st.join_one(exec, opts.fail_fast).await;
        }
        if st.stopped {
            st.results[i] = Some(exec.skipped(i, "not run: --fail-fast".into()));
            continue;
        }
        let fut = exec.start(i);
        let handle = st.running.spawn(async move { (i, fut.await) });
        st.tasks.insert(handle.id(), i);
    }
    st.drain(exec, opts.fail_fast).await;
    st.results
        .into_iter()
        .enumerate()
        .map(|(i, r)| r.unwrap_or_else(|| exec.crashed(i, "the check never finished".into())))
        .collect()
}

fn unmet_dependency<E: Executor>(
    item: &Item,
    i: usize,
    index_of: &HashMap<&str, usize>,
    results: &[Option<E::Out>],
    exec: &E,
) -> Option<String> {
    for dep in &item.depends_on {
        match index_of.get(dep.as_str()) {
            None => return Some(format!("dependency `{dep}` is not part of this run")),
            Some(&j) if j >= i => {
                return Some(format!(
                    "dependency `{dep}` comes later in the policy; move it before `{}`",
                    item.id
                ));
            }
            Some(&j) => match results[j].as_ref().map(|r| exec.status(r)) {
                Some(Status::Pass) => {}
                Some(s) => {
                    return Some(format!("dependency `{dep}` did not pass ({})", s.as_str()));
                }
                None => return Some(format!("dependency `{dep}` did not run")),
            },
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::*;

    /// A fake executor: each check sleeps, logs start/end, and returns a fixed status.
    struct Fake {
        plan: Vec<(Status, u64)>,
        log: Arc<Mutex<Vec<String>>>,
        running: Arc<Mutex<(usize, usize)>>, // (now, max)
    }

    impl Executor for Fake {
        type Out = (usize, Status, String);
        fn start(&self, index: usize) -> BoxFuture<Self::Out> {
            let (status, ms) = self.plan[index];
            let log = self.log.clone();
            let running = self.running.clone();
            Box::pin(async move {
                {
                    let mut r = running.lock().unwrap();
                    r.0 += 1;
                    r.1 = r.1.max(r.0);
                }
                log.lock().unwrap().push(format!("start {index}"));
                if status == Status::Error && ms == 999 {
                    panic!("boom");
                }
                tokio::time::sleep(Duration::from_millis(ms)).await;
                log.lock().unwrap().push(format!("end {index}"));
                running.lock().unwrap().0 -= 1;
                (index, status, String::new())
            })
        }
        fn skipped(&self, index: usize, reason: String) -> Self::Out {
            (index, Status::Skip, reason)
        }
        fn crashed(&self, index: usize, reason: String) -> Self::Out {
            self.running.lock().unwrap().0 -= 1;
            (index, Status::Error, reason)
        }
        fn status(&self, out: &Self::Out) -> Status {
            out.1
        }
        fn stops_run(&self, _: usize, out: &Self::Out) -> bool {
            matches!(out.1, Status::Fail | Status::Error)
        }
    }

    fn fake(plan: Vec<(Status, u64)>) -> Fake {
        Fake {
            plan,
            log: Arc::default(),
            running: Arc::default(),
        }
    }

    fn item(id: &str, exclusive: bool, deps: &[&str]) -> Item {
        Item {
            id: id.into(),
            exclusive,
            depends_on: deps.iter().map(|s| s.to_string()).collect(),
        }
    }

    const OPTS: Sched = Sched {
        concurrency: 4,
        fail_fast: false,
    };

    #[tokio::test]
    async fn results_come_back_in_policy_order() {
        // The first check is the slowest: it finishes last but is reported first.
        let f = fake(vec![
            (Status::Pass, 150),
            (Status::Fail, 10),
            (Status::Pass, 50),
        ]);
        let items = [
            item("a", false, &[]),
            item("b", false, &[]),
            item("c", false, &[]),
        ];
        let out = schedule(&items, &f, OPTS).await;
        let ids: Vec<usize> = out.iter().map(|o| o.0).collect();
        assert_eq!(ids, [0, 1, 2]);
        assert_eq!(out[1].1, Status::Fail);
        let log = f.log.lock().unwrap().clone();
        assert_eq!(log.last().unwrap(), "end 0", "{log:?}");
        assert_eq!(f.running.lock().unwrap().1, 3, "all three ran at once");
    }

    #[tokio::test]
    async fn concurrency_is_bounded() {
        let f = fake(vec![(Status::Pass, 40); 7]);
        let items: Vec<Item> = (0..7).map(|i| item(&format!("c{i}"), false, &[])).collect();
        let opts = Sched {
            concurrency: 2,
            fail_fast: false,
        };
        let out = schedule(&items, &f, opts).await;
        assert_eq!(out.len(), 7);
        assert_eq!(f.running.lock().unwrap().1, 2);
    }

    #[tokio::test]
    async fn exclusive_checks_run_alone() {
        let f = fake(vec![
            (Status::Pass, 60),
            (Status::Pass, 10),
            (Status::Pass, 30),
            (Status::Pass, 10),
        ]);
        let items = [
            item("a", false, &[]),
            item("x", true, &[]),
            item("b", false, &[]),
            item("c", false, &[]),
        ];
        schedule(&items, &f, OPTS).await;
        let log = f.log.lock().unwrap().clone();
        // x starts only after a ended, and ends before b starts.
        let pos = |s: &str| log.iter().position(|l| l == s).unwrap();
        assert!(pos("end 0") < pos("start 1"), "{log:?}");
        assert!(pos("end 1") < pos("start 2"), "{log:?}");
        // b and c, both shared, overlap.
        assert!(pos("start 3") < pos("end 2"), "{log:?}");
    }

    #[tokio::test]
    async fn depends_on_waits_and_skips_unless_passed() {
        let f = fake(vec![
            (Status::Pass, 50),
            (Status::Fail, 10),
            (Status::Pass, 10),
            (Status::Pass, 10),
            (Status::Pass, 10),
        ]);
        let items = [
            item("a", false, &[]),
            item("b", false, &[]),
            item("needs-a", false, &["a"]),
            item("needs-b", false, &["a", "b"]),
            item("needs-missing", false, &["zzz"]),
        ];
        let out = schedule(&items, &f, OPTS).await;
        assert_eq!(out[2].1, Status::Pass);
        let log = f.log.lock().unwrap().clone();
        let pos = |s: &str| log.iter().position(|l| l == s).unwrap();
        assert!(pos("end 0") < pos("start 2"), "waited for a: {log:?}");
        assert_eq!(out[3].1, Status::Skip);
        assert_eq!(out[3].2, "dependency `b` did not pass (FAIL)");
        assert_eq!(out[4].1, Status::Skip);
        assert!(out[4].2.contains("not part of this run"));
    }

    #[tokio::test]
    async fn fail_fast_skips_the_rest() {
        let f = fake(vec![
            (Status::Pass, 10),
            (Status::Fail, 10),
            (Status::Pass, 10),
            (Status::Pass, 10),
        ]);
        let items = [
            item("a", true, &[]),
            item("b", true, &[]),
            item("c", false, &[]),
            item("d", true, &[]),
        ];
        let opts = Sched {
            concurrency: 4,
            fail_fast: true,
        };
        let out = schedule(&items, &f, opts).await;
        let st: Vec<Status> = out.iter().map(|o| o.1).collect();
        assert_eq!(st, [Status::Pass, Status::Fail, Status::Skip, Status::Skip]);
        assert_eq!(out[3].2, "not run: --fail-fast");
    }

    #[tokio::test]
    async fn a_panicking_check_is_an_error_not_a_crash() {
        let f = fake(vec![(Status::Error, 999), (Status::Pass, 10)]);
        let items = [item("a", false, &[]), item("b", false, &[])];
        let out = schedule(&items, &f, OPTS).await;
        assert_eq!(out[0].1, Status::Error);
        assert!(out[0].2.contains("panicked"));
        assert_eq!(out[1].1, Status::Pass);
    }

    fn all_of(plan: &SourcePlan, checks: usize) -> Vec<IpAddr> {
        (0..checks)
            .flat_map(|i| {
                let s = plan.assign(i, checks);
                std::iter::once(s.own).chain(s.extra)
            })
            .collect()
    }

    #[test]
    fn sources_are_distinct_and_disjoint() {
        // Near the end of the range too: the blocks wrap around without overlapping.
        for first_block in [0, 77, LOOPBACK_BLOCKS - 300] {
            let plan = SourcePlan::Loopback { first_block };
            let mut all = std::collections::HashSet::new();
            for a in all_of(&plan, 600) {
                assert!(all.insert(a), "{a} twice");
                let IpAddr::V4(v4) = a else { panic!("{a}") };
                let o = v4.octets();
                assert_eq!(o[0], 127, "{a}");
                assert_ne!(o[1], 0, "{a} in 127.0.0.0/16");
            }
            assert_eq!(all.len(), 600 * (1 + EXTRA_SOURCES));
        }
        let first = SourcePlan::Loopback { first_block: 0 }.assign(0, 1);
        assert_eq!(first.own.to_string(), "127.1.0.1");
        assert_eq!(first.extra[0].to_string(), "127.1.0.2");
    }

    /// Regression (issue 15, "a false NO-GO on a second run"): two runs reused the same
    /// client addresses, so the second met the rate-limit buckets the first had drained.
    #[test]
    fn two_runs_get_fresh_loopback_addresses() {
        let target = Some("127.0.0.1".parse().unwrap());
        let mut disjoint = 0;
        for _ in 0..20 {
            let a = SourcePlan::new(target, &[]).unwrap();
            let b = SourcePlan::new(target, &[]).unwrap();
            let a: std::collections::HashSet<_> = all_of(&a, 20).into_iter().collect();
            disjoint += usize::from(all_of(&b, 20).iter().all(|x| !a.contains(x)));
        }
        // A collision needs the two random starts within 20 blocks of 130 560: about one
        // pair in 3 000, so 20 of 20 pairs are disjoint but for a very rare draw.
        assert!(disjoint >= 19, "{disjoint} of 20 pairs disjoint");
    }

    #[test]
    fn non_loopback_targets_use_declared_addresses_or_the_os() {
        let remote = Some("198.51.100.2".parse().unwrap());
        let plan = SourcePlan::new(remote, &[]).unwrap();
        assert_eq!(plan, SourcePlan::Os("0.0.0.0".parse().unwrap()));
        assert!(!plan.isolates(3));
        let s = plan.assign(2, 3);
        assert!(s.own.is_unspecified() && s.extra.is_empty());

        let v6 = Some("::1".parse().unwrap());
        assert_eq!(
            SourcePlan::new(v6, &[]).unwrap(),
            SourcePlan::Os("::".parse().unwrap())
        );

        // One declared address: every check has it and no neighbour; run one by one.
        let one: Vec<IpNet> = vec!["198.51.100.11/32".parse().unwrap()];
        let plan = SourcePlan::new(remote, &one).unwrap();
        assert!(!plan.isolates(2));
        assert_eq!(
            plan.assign(1, 2),
            Sources {
                own: "198.51.100.11".parse().unwrap(),
                extra: vec![]
            }
        );

        // Three declared for two checks: not enough to split, each gets all three.
        let three: Vec<IpNet> = ["198.51.100.11/32", "198.51.100.12/31"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let plan = SourcePlan::new(remote, &three).unwrap();
        let SourcePlan::Declared(a) = &plan else {
            panic!("{plan:?}")
        };
        assert_eq!(a.len(), 3, "{a:?}");
        let s = plan.assign(1, 2);
        assert_eq!(s.own.to_string(), "198.51.100.12");
        assert_eq!(s.extra.len(), 2);
        assert!(!s.extra.contains(&s.own));

        // A /120 for ten checks: disjoint shares of 25, concurrent.
        let net: Vec<IpNet> = vec!["fd00:7::100/120".parse().unwrap()];
        let plan = SourcePlan::new(Some("fd00:7::2".parse().unwrap()), &net).unwrap();
        assert!(plan.isolates(10));
        let all = all_of(&plan, 10);
        let set: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
        assert_eq!(plan.assign(0, 10).extra.len(), 24);

        // Only addresses of the other family: an error naming the field.
        let err = SourcePlan::new(remote, &net).unwrap_err();
        assert!(err.contains("target.source_addresses"), "{err}");
    }
}
