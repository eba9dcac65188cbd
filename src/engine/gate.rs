//! The gate: turns results into a verdict (DESIGN §6). Pure: no I/O, no clock (the caller
//! passes today's date for waiver expiry), so every path is unit-tested.
//!
//! NO-GO when a FAIL or ERROR at a blocking severity is not waived; otherwise INCONCLUSIVE
//! when a blocking check was SKIP (it could not answer); otherwise GO. A SKIP out of scope
//! (a repository file when a built-in policy runs outside its checkout) never blocks.

use chrono::NaiveDate;

use crate::outcome::Status;
use crate::policy::model::FleetRequire;
use crate::policy::{Severity, Waiver};
use crate::report::{CheckResult, Counts, Verdict, WaiverInfo};

/// What the gate decided.
#[derive(Debug, Clone)]
pub struct Decision {
    pub verdict: Verdict,
    /// One sentence naming the blocking checks.
    pub reason: String,
    pub counts: Counts,
    /// Every waiver of the policy with its state (`active` or `expired`).
    pub waivers: Vec<WaiverInfo>,
}

/// Whether `waiver` applies on `today` (its expiry day included).
pub fn waiver_active(waiver: &Waiver, today: NaiveDate) -> bool {
    today <= waiver.expires
}

/// The active waiver for check `id`, if any.
pub fn active_waiver<'a>(waivers: &'a [Waiver], id: &str, today: NaiveDate) -> Option<&'a Waiver> {
    waivers
        .iter()
        .find(|w| w.check == id && waiver_active(w, today))
}

/// Whether a result with this status and severity blocks (before waivers).
pub fn blocks(status: Status, severity: Severity, block_on: &[Severity]) -> bool {
    status != Status::Pass && block_on.contains(&severity)
}

/// Whether a FAIL/ERROR of this check stops a `--fail-fast` run: it blocks and no active
/// waiver covers it.
pub fn is_blocking_failure(
    status: Status,
    severity: Severity,
    id: &str,
    block_on: &[Severity],
    waivers: &[Waiver],
    today: NaiveDate,
) -> bool {
    matches!(status, Status::Fail | Status::Error)
        && blocks(status, severity, block_on)
        && active_waiver(waivers, id, today).is_none()
}

/// Sets `blocking` and `waived` on every result and decides the verdict.
pub fn decide(
    results: &mut [CheckResult],
    block_on: &[Severity],
    waivers: &[Waiver],
    today: NaiveDate,
) -> Decision {
    let mut counts = Counts::default();
    let mut failed: Vec<String> = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    let mut waived: Vec<String> = Vec::new();
    for r in results.iter_mut() {
        counts.add(r.status);
        let waiver = active_waiver(waivers, &r.id, today).filter(|_| r.status != Status::Pass);
        r.waived = waiver.map(|w| w.reason.clone());
        let would_block = blocks(r.status, r.severity, block_on) && !r.out_of_scope;
        r.blocking = would_block && waiver.is_none();
        if waiver.is_some() && matches!(r.status, Status::Fail | Status::Error) {
            counts.waived += 1;
            if would_block {
                waived.push(r.id.clone());
            }
        }
        if r.blocking {
            let named = format!("{} ({})", r.id, r.status.as_str());
            match r.status {
                Status::Fail | Status::Error => failed.push(named),
                Status::Skip | Status::Inconclusive => skipped.push(named),
                Status::Pass => {}
            }
        }
    }
    let waiver_infos = waivers
        .iter()
        .map(|w| WaiverInfo {
            check: w.check.clone(),
            reason: w.reason.clone(),
            expires: w.expires.format("%Y-%m-%d").to_string(),
            state: if waiver_active(w, today) {
                "active".into()
            } else {
                "expired".into()
            },
        })
        .collect();
    let waived_note = if waived.is_empty() {
        String::new()
    } else {
        format!(
            " ({} waived: {})",
            plural(waived.len(), "failure"),
            waived.join(", ")
        )
    };
    let (verdict, reason) = if !failed.is_empty() {
        (
            Verdict::NoGo,
            format!(
                "{} at a blocking severity did not pass: {}{waived_note}.",
                plural(failed.len(), "check"),
                failed.join(", ")
            ),
        )
    } else if !skipped.is_empty() {
        (
            Verdict::Inconclusive,
            format!(
                "Nothing blocking failed, but {} at a blocking severity could not give an answer: {}{waived_note}.",
                plural(skipped.len(), "check"),
                skipped.join(", ")
            ),
        )
    } else {
        let out_of_scope: Vec<&str> = results
            .iter()
            .filter(|r| r.out_of_scope && block_on.contains(&r.severity))
            .map(|r| r.id.as_str())
            .collect();
        let total_blocking = results
            .iter()
            .filter(|r| block_on.contains(&r.severity))
            .count()
            - out_of_scope.len();
        let scope_note = if out_of_scope.is_empty() {
            String::new()
        } else {
            format!(
                " ({} out of scope here: {})",
                plural(out_of_scope.len(), "check"),
                out_of_scope.join(", ")
            )
        };
        (
            Verdict::Go,
            format!(
                "All {} at a blocking severity passed{waived_note}{scope_note}.",
                plural(total_blocking, "check")
            ),
        )
    };
    Decision {
        verdict,
        reason,
        counts,
        waivers: waiver_infos,
    }
}

/// A fleet's verdict from its instances' (DESIGN §10): GO when at least `require` of the whole
/// fleet (`size`, sharded or not) is GO; NO-GO when so many are NO-GO that it cannot be; else
/// INCONCLUSIVE (instances undecided, or missing from the merged shards, could go either way).
/// Names the NO-GO instances (up to five) and the missing count.
pub fn fleet_decide(
    verdicts: &[(&str, Verdict)],
    size: usize,
    require: FleetRequire,
) -> (Verdict, String) {
    let needed = require.needed(size);
    let go = verdicts.iter().filter(|v| v.1 == Verdict::Go).count();
    let no_go: Vec<&str> = verdicts
        .iter()
        .filter(|v| v.1 == Verdict::NoGo)
        .map(|v| v.0)
        .collect();
    let missing = size.saturating_sub(verdicts.len());
    let rule = match require {
        FleetRequire::All => format!("all {size} must be GO"),
        other => format!("{other} must be GO: {needed} of {size}"),
    };
    let named = |v: &[&str]| {
        let mut s = v.iter().take(5).copied().collect::<Vec<_>>().join(", ");
        if v.len() > 5 {
            s.push_str(&format!(" and {} more", v.len() - 5));
        }
        s
    };
    let missing_note = if missing > 0 {
        format!("; {missing} not in this report")
    } else {
        String::new()
    };
    if go >= needed {
        (
            Verdict::Go,
            format!("{go} of {size} instances GO ({rule}){missing_note}."),
        )
    } else if size - no_go.len() < needed {
        (
            Verdict::NoGo,
            format!(
                "{} NO-GO: {} ({rule}){missing_note}.",
                plural(no_go.len(), "instance"),
                named(&no_go)
            ),
        )
    } else {
        (
            Verdict::Inconclusive,
            format!(
                "{go} of {size} instances GO, {} undecided ({rule}){missing_note}.",
                size - go - no_go.len()
            ),
        )
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fleet_verdict_follows_its_rule() {
        use Verdict::*;
        let share = |p: f64| FleetRequire::Share(crate::units::Percent(p));
        let fleet = |go: usize, no: usize, inc: usize| -> Vec<(&'static str, Verdict)> {
            let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
            let mut v = vec![];
            v.extend((0..go).map(|i| (names[i], Go)));
            v.extend((go..go + no).map(|i| (names[i], NoGo)));
            v.extend((go + no..go + no + inc).map(|i| (names[i], Inconclusive)));
            v
        };
        assert_eq!(fleet_decide(&fleet(10, 0, 0), 10, FleetRequire::All).0, Go);
        let (v, why) = fleet_decide(&fleet(9, 1, 0), 10, FleetRequire::All);
        assert_eq!(v, NoGo);
        assert_eq!(why, "1 instance NO-GO: j (all 10 must be GO).");
        assert_eq!(
            fleet_decide(&fleet(9, 0, 1), 10, FleetRequire::All).0,
            Inconclusive
        );
        // 90% of 10 is 9: one NO-GO is allowed, two are not.
        assert_eq!(share(0.9).needed(10), 9);
        assert_eq!(share(0.95).needed(20), 19, "no float round-up");
        assert_eq!(fleet_decide(&fleet(9, 1, 0), 10, share(0.9)).0, Go);
        let (v, why) = fleet_decide(&fleet(8, 2, 0), 10, share(0.9));
        assert_eq!(
            (v, why.as_str()),
            (NoGo, "2 instances NO-GO: i, j (90% must be GO: 9 of 10).")
        );
        assert_eq!(
            fleet_decide(&fleet(8, 1, 1), 10, share(0.9)).0,
            Inconclusive
        );
        // Shards merged with one missing: what is absent is not GO.
        let (v, why) = fleet_decide(&fleet(7, 0, 0), 10, FleetRequire::All);
        assert_eq!(v, Inconclusive);
        assert!(why.ends_with("; 3 not in this report."), "{why}");
        let (v, _) = fleet_decide(&fleet(7, 0, 0), 10, share(0.7));
        assert_eq!(v, Go);
    }

    fn result(id: &str, severity: Severity, status: Status) -> CheckResult {
        CheckResult {
            attempts: 1,
            ..CheckResult::new(id, "http", severity, status)
        }
    }

    fn day(s: &str) -> NaiveDate {
        s.parse().unwrap()
    }

    fn waiver(check: &str, expires: &str) -> Waiver {
        Waiver {
            check: check.into(),
            reason: "accepted for now".into(),
            expires: day(expires),
        }
    }

    const BLOCK: [Severity; 2] = [Severity::Critical, Severity::High];

    #[test]
    fn all_pass_is_go() {
        let mut rs = vec![
            result("a", Severity::Critical, Status::Pass),
            result("b", Severity::Low, Status::Pass),
        ];
        let d = decide(&mut rs, &BLOCK, &[], day("2026-01-01"));
        assert_eq!(d.verdict, Verdict::Go);
        assert_eq!(d.reason, "All 1 check at a blocking severity passed.");
        assert!(rs.iter().all(|r| !r.blocking));
    }

    #[test]
    fn non_blocking_failure_is_go() {
        let mut rs = vec![
            result("a", Severity::High, Status::Pass),
            result("b", Severity::Low, Status::Fail),
            result("c", Severity::Info, Status::Skip),
        ];
        let d = decide(&mut rs, &BLOCK, &[], day("2026-01-01"));
        assert_eq!(d.verdict, Verdict::Go);
        assert_eq!(d.counts.fail, 1);
        assert_eq!(d.counts.skip, 1);
    }

    #[test]
    fn blocking_fail_or_error_is_no_go_and_named() {
        let mut rs = vec![
            result("a", Severity::High, Status::Fail),
            result("b", Severity::Critical, Status::Error),
            result("c", Severity::High, Status::Skip),
        ];
        let d = decide(&mut rs, &BLOCK, &[], day("2026-01-01"));
        assert_eq!(d.verdict, Verdict::NoGo);
        assert_eq!(
            d.reason,
            "2 checks at a blocking severity did not pass: a (FAIL), b (ERROR)."
        );
        assert!(rs.iter().all(|r| r.blocking));
    }

    #[test]
    fn a_blocking_inconclusive_check_is_never_go() {
        let mut rs = vec![
            result("a", Severity::Critical, Status::Pass),
            result("b", Severity::High, Status::Inconclusive),
        ];
        let d = decide(&mut rs, &BLOCK, &[], day("2026-01-01"));
        assert_eq!(d.verdict, Verdict::Inconclusive);
        assert_eq!(d.counts.inconclusive, 1);
        assert!(d.reason.contains("b (INCONCLUSIVE)"), "{}", d.reason);
        let mut rs = vec![
            result("a", Severity::Critical, Status::Fail),
            result("b", Severity::High, Status::Inconclusive),
        ];
        let d = decide(&mut rs, &BLOCK, &[], day("2026-01-01"));
        assert_eq!(d.verdict, Verdict::NoGo);
    }

    #[test]
    fn blocking_skip_is_inconclusive() {
        let mut rs = vec![
            result("a", Severity::High, Status::Pass),
            result("b", Severity::Critical, Status::Skip),
            result("c", Severity::Low, Status::Error),
        ];
        let d = decide(&mut rs, &BLOCK, &[], day("2026-01-01"));
        assert_eq!(d.verdict, Verdict::Inconclusive);
        assert!(d.reason.contains("b (SKIP)"), "{}", d.reason);
        assert!(!rs[2].blocking);
    }

    #[test]
    fn an_out_of_scope_skip_never_blocks_and_is_named() {
        let mut rs = vec![
            result("a", Severity::High, Status::Pass),
            result("runbook", Severity::Critical, Status::Skip),
        ];
        rs[1].out_of_scope = true;
        let d = decide(&mut rs, &BLOCK, &[], day("2026-01-01"));
        assert_eq!(d.verdict, Verdict::Go, "{}", d.reason);
        assert!(!rs[1].blocking);
        assert_eq!(
            d.reason,
            "All 1 check at a blocking severity passed (1 check out of scope here: runbook)."
        );
        // only the out-of-scope one is lifted: another blocking SKIP still is INCONCLUSIVE
        rs.push(result("b", Severity::High, Status::Skip));
        let d = decide(&mut rs, &BLOCK, &[], day("2026-01-01"));
        assert_eq!(d.verdict, Verdict::Inconclusive);
        assert!(!d.reason.contains("runbook"), "{}", d.reason);
    }

    #[test]
    fn block_on_is_respected() {
        let mut rs = vec![result("a", Severity::Medium, Status::Fail)];
        let d = decide(&mut rs, &[Severity::Medium], &[], day("2026-01-01"));
        assert_eq!(d.verdict, Verdict::NoGo);
    }

    #[test]
    fn active_waiver_lifts_the_block_and_is_shown() {
        let mut rs = vec![
            result("a", Severity::Critical, Status::Fail),
            result("b", Severity::High, Status::Pass),
        ];
        let ws = [waiver("a", "2026-01-31")];
        // The expiry day itself is still covered.
        let d = decide(&mut rs, &BLOCK, &ws, day("2026-01-31"));
        assert_eq!(d.verdict, Verdict::Go);
        assert_eq!(rs[0].waived.as_deref(), Some("accepted for now"));
        assert!(!rs[0].blocking);
        assert_eq!(d.counts.waived, 1);
        assert_eq!(d.waivers[0].state, "active");
        assert!(d.reason.contains("1 failure waived: a"), "{}", d.reason);
    }

    #[test]
    fn expired_waiver_does_not_apply_and_says_so() {
        let mut rs = vec![result("a", Severity::Critical, Status::Fail)];
        let ws = [waiver("a", "2026-01-31")];
        let d = decide(&mut rs, &BLOCK, &ws, day("2026-02-01"));
        assert_eq!(d.verdict, Verdict::NoGo);
        assert_eq!(rs[0].waived, None);
        assert!(rs[0].blocking);
        assert_eq!(d.waivers[0].state, "expired");
        assert_eq!(d.counts.waived, 0);
    }

    #[test]
    fn waiver_on_a_passing_check_changes_nothing() {
        let mut rs = vec![result("a", Severity::High, Status::Pass)];
        let ws = [waiver("a", "2030-01-01")];
        let d = decide(&mut rs, &BLOCK, &ws, day("2026-01-01"));
        assert_eq!(d.verdict, Verdict::Go);
        assert_eq!(rs[0].waived, None);
    }

    #[test]
    fn waived_skip_is_not_inconclusive() {
        let mut rs = vec![result("a", Severity::High, Status::Skip)];
        let ws = [waiver("a", "2030-01-01")];
        let d = decide(&mut rs, &BLOCK, &ws, day("2026-01-01"));
        assert_eq!(d.verdict, Verdict::Go);
    }

    #[test]
    fn fail_fast_predicate() {
        let ws = [waiver("w", "2030-01-01")];
        let today = day("2026-01-01");
        assert!(is_blocking_failure(
            Status::Fail,
            Severity::High,
            "a",
            &BLOCK,
            &ws,
            today
        ));
        assert!(is_blocking_failure(
            Status::Error,
            Severity::Critical,
            "a",
            &BLOCK,
            &ws,
            today
        ));
        assert!(!is_blocking_failure(
            Status::Skip,
            Severity::High,
            "a",
            &BLOCK,
            &ws,
            today
        ));
        assert!(!is_blocking_failure(
            Status::Fail,
            Severity::Low,
            "a",
            &BLOCK,
            &ws,
            today
        ));
        assert!(!is_blocking_failure(
            Status::Fail,
            Severity::High,
            "w",
            &BLOCK,
            &ws,
            today
        ));
    }

    #[test]
    fn empty_policy_is_go() {
        let d = decide(&mut [], &BLOCK, &[], day("2026-01-01"));
        assert_eq!(d.verdict, Verdict::Go);
        assert_eq!(d.reason, "All 0 checks at a blocking severity passed.");
    }
}
