//! Planning and scheduling: which checks run, from which source addresses, in what order and
//! with what concurrency.
//!
//! Shared checks marked `independent` run concurrently (bounded); exclusive ones run alone,
//! after everything started before them has finished. A check waits for its dependencies,
//! and is SKIP unless every one of them passed. Results come back in policy order. The
//! scheduler knows nothing of what a check does: it drives an [`Executor`].

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::pin::Pin;

use tokio::task::JoinSet;

use crate::outcome::Status;

/// How many further addresses each check gets (see [`extra_sources`]).
pub const EXTRA_SOURCES: usize = 64;

/// The check's own client address: `127.0.1.N` for the N-th check (1-based), continuing in
/// `127.0.2.x` and so on past 250 checks.
pub fn source_for(index: usize) -> IpAddr {
    let third = 1 + index / 250;
    let fourth = 1 + index % 250;
    IpAddr::V4(Ipv4Addr::new(127, 0, third as u8, fourth as u8))
}

/// The check's further addresses: a block of [`EXTRA_SOURCES`] in `127.(10+N).x.y`, disjoint
/// from every other check's block and from all [`source_for`] addresses (second octet 0).
pub fn extra_sources(index: usize) -> Vec<IpAddr> {
    let second = 11 + (index % 245) as u8;
    let third = (index / 245) as u8;
    (1..=EXTRA_SOURCES as u8)
        .map(|d| IpAddr::V4(Ipv4Addr::new(127, second, third, d)))
        .collect()
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

    #[test]
    fn sources_are_distinct_and_disjoint() {
        let mut all = std::collections::HashSet::new();
        for i in 0..600 {
            assert!(all.insert(source_for(i)), "source {i}");
            for a in extra_sources(i) {
                assert!(all.insert(a), "extra {i} {a}");
            }
        }
        assert_eq!(source_for(0).to_string(), "127.0.1.1");
        assert_eq!(extra_sources(0)[0].to_string(), "127.11.0.1");
    }
}
