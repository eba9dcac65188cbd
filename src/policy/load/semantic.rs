//! Stage 6 of loading: the rules a schema cannot express: unique ids, known and acyclic
//! dependencies, waivers naming real checks and not expired, the gate, the common fields of
//! each check, and each kind's own `validate`.

use std::collections::HashMap;

use serde_json::Value;

use super::Pending;
use super::schema_check::did_you_mean;
use crate::checks::Problems;
use crate::policy::codes;
use crate::policy::diag::Level;
use crate::policy::model::Check;

/// Cross-check rules: ids, dependencies, waivers, common fields, and each kind's own rules.
pub(super) fn semantic(
    value: &Value,
    raw_checks: &[Value],
    typed: &[Option<Check>],
    today: chrono::NaiveDate,
    out: &mut Vec<Pending>,
) {
    let ids: Vec<Option<&str>> = raw_checks
        .iter()
        .map(|c| c.get("id").and_then(Value::as_str))
        .collect();
    let known: Vec<String> = ids.iter().flatten().map(|s| s.to_string()).collect();
    let mut first: HashMap<&str, usize> = HashMap::new();
    for (i, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        if let Some(prev) = first.get(id) {
            out.push(
                Pending::error(
                    codes::DUPLICATE_ID,
                    format!("/checks/{i}/id"),
                    format!("duplicate check id `{id}` (first used by check #{})", prev + 1),
                )
                .hint("ids must be unique; to change an included check, override it from the including file"),
            );
        } else {
            first.insert(id, i);
        }
    }
    // depends_on: known ids, no cycles.
    let mut deps: Vec<Vec<(usize, usize)>> = vec![Vec::new(); raw_checks.len()];
    for (i, c) in raw_checks.iter().enumerate() {
        let Some(list) = c.get("depends_on").and_then(Value::as_array) else {
            continue;
        };
        for (j, d) in list.iter().enumerate() {
            let Some(d) = d.as_str() else { continue };
            match first.get(d) {
                Some(&k) => deps[i].push((k, j)),
                None => {
                    let hint = did_you_mean(d, &known)
                        .map(|s| format!("did you mean `{s}`?"))
                        .unwrap_or_else(|| "depend on the id of a check in this policy".into());
                    out.push(
                        Pending::error(
                            codes::UNKNOWN_DEPENDENCY,
                            format!("/checks/{i}/depends_on/{j}"),
                            format!("`{d}` is not the id of a check in this policy"),
                        )
                        .hint(hint),
                    );
                }
            }
        }
    }
    dependency_cycles(&deps, &ids, out);
    // Waivers.
    if let Some(ws) = value.get("waivers").and_then(Value::as_array) {
        for (k, w) in ws.iter().enumerate() {
            if let Some(id) = w.get("check").and_then(Value::as_str)
                && !first.contains_key(id)
            {
                let hint = did_you_mean(id, &known)
                    .map(|s| format!("did you mean `{s}`?"))
                    .unwrap_or_else(|| "remove the waiver, or fix the check id".into());
                out.push(
                    Pending::error(
                        codes::WAIVER_UNKNOWN_CHECK,
                        format!("/waivers/{k}/check"),
                        format!("waiver for `{id}`, which is not a check in this policy"),
                    )
                    .hint(hint),
                );
            }
            let expires = w
                .get("expires")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<chrono::NaiveDate>().ok());
            if let Some(date) = expires
                && date < today
            {
                let id = w.get("check").and_then(Value::as_str).unwrap_or("?");
                out.push(Pending {
                    level: Level::Warning,
                    code: codes::WAIVER_EXPIRED,
                    pointer: format!("/waivers/{k}/expires"),
                    at_key: false,
                    message: format!(
                        "the waiver for `{id}` expired on {date}: the check blocks again"
                    ),
                    hint: Some("renew it with a current reason and date, or remove it".into()),
                });
            }
        }
    }
    if let Some(Value::Array(b)) = value.pointer("/gate/block_on")
        && b.is_empty()
    {
        out.push(Pending {
            level: Level::Warning,
            code: codes::GATE_NEVER_BLOCKS,
            pointer: "/gate/block_on".into(),
            at_key: false,
            message: "`block_on` is empty: the verdict is GO whatever fails".into(),
            hint: Some("e.g. `block_on: [critical, high]`".into()),
        });
    }
    if let Some(raw) = value.get("canary")
        && let Ok(spec) = serde_json::from_value::<crate::policy::canary::CanarySpec>(raw.clone())
    {
        for (ptr, message, hint) in crate::policy::canary::problems(&spec) {
            out.push(
                Pending::error(codes::CANARY_INVALID, format!("/canary{ptr}"), message).hint(hint),
            );
        }
    }
    let canary_only = value.get("canary").is_some();
    if raw_checks.is_empty()
        && !canary_only
        && value.is_object()
        && !out.iter().any(|p| p.level == Level::Error)
    {
        out.push(Pending {
            level: Level::Warning,
            code: codes::NO_CHECKS,
            pointer: String::new(),
            at_key: false,
            message: "this policy has no checks".into(),
            hint: Some("add checks under `checks:`, or include a file that has some".into()),
        });
    }
    // Common fields and each kind's rules.
    for (i, check) in typed.iter().enumerate() {
        let Some(check) = check else { continue };
        let mut p = Problems::default();
        if let Some(n) = check.max_requests {
            p.positive("/max_requests", n, "max_requests");
        }
        if check.timeout.is_some_and(|t| t.0.is_zero()) {
            p.error(
                "/timeout",
                crate::checks::codes::ZERO,
                "timeout must be above zero",
                "leave it out for the kind's default",
            );
        }
        if let Some(r) = &check.retry {
            if r.within.0.is_zero() {
                p.error(
                    "/retry/within",
                    crate::checks::codes::ZERO,
                    "retry.within must be above zero",
                    "",
                );
            }
            if r.every.0.is_zero() {
                p.error(
                    "/retry/every",
                    crate::checks::codes::ZERO,
                    "retry.every must be above zero",
                    "",
                );
            }
            // An explicit timeout is the check's whole deadline, retries included: retrying
            // beyond it is retrying for nothing (issue 15). Without one the deadline is the
            // kind's default plus `within` (engine::run), which `within` never exceeds.
            let (timeout, whose) = match check.timeout {
                Some(t) => (t, "its `timeout`"),
                None => (crate::units::Dur(std::time::Duration::ZERO), ""),
            };
            if !timeout.0.is_zero() && r.within.0 > timeout.0 {
                p.warning(
                    "/retry/within",
                    codes::RETRY_BEYOND_TIMEOUT,
                    format!(
                        "retry.within ({}) is longer than {whose} ({timeout}), the check's whole deadline: retries stop at {timeout}",
                        r.within
                    ),
                    format!("raise `timeout` to at least {}, or shorten `retry.within`", r.within),
                );
            }
        }
        check.spec.validate(&mut p);
        for pr in p.0 {
            out.push(Pending {
                level: if pr.warning {
                    Level::Warning
                } else {
                    Level::Error
                },
                code: pr.code,
                pointer: format!("/checks/{i}{}", pr.field),
                at_key: false,
                message: pr.message,
                hint: pr.hint,
            });
        }
    }
}

/// Reports each `depends_on` entry that closes a cycle.
pub(super) fn dependency_cycles(
    deps: &[Vec<(usize, usize)>],
    ids: &[Option<&str>],
    out: &mut Vec<Pending>,
) {
    // 0 unvisited, 1 on the stack, 2 done. Iterative DFS: no recursion limit on big policies.
    let mut state = vec![0u8; deps.len()];
    for start in 0..deps.len() {
        if state[start] != 0 {
            continue;
        }
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        state[start] = 1;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&(to, entry)) = deps[node].get(*next) {
                *next += 1;
                match state[to] {
                    0 => {
                        state[to] = 1;
                        stack.push((to, 0));
                    }
                    1 => {
                        let mut chain: Vec<&str> = stack
                            .iter()
                            .skip_while(|(n, _)| *n != to)
                            .map(|(n, _)| ids[*n].unwrap_or("?"))
                            .collect();
                        chain.push(ids[to].unwrap_or("?"));
                        out.push(
                            Pending::error(
                                codes::DEPENDENCY_CYCLE,
                                format!("/checks/{node}/depends_on/{entry}"),
                                format!("dependency cycle: {}", chain.join(" → ")),
                            )
                            .hint("a check cannot (indirectly) depend on itself; remove one `depends_on` entry"),
                        );
                    }
                    _ => {}
                }
            } else {
                state[node] = 2;
                stack.pop();
            }
        }
    }
}
