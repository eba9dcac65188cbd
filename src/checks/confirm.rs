//! `confirm`: a statement a person must look at and attest (y/n, with a note), for what no
//! probe can see ("the Grafana panel shows no new warning code since the deploy").
//!
//! Only `preflight audit` has someone to ask ([`Ctx::attestor`]); a plain `check` reports the
//! step SKIP. Yes is PASS, no is FAIL, and an unanswered step (`--no-input`) is
//! INCONCLUSIVE: never a pass on nobody's word. An answer given by `--yes` passes but says
//! so in every report (nobody looked).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::{Code, Exclusivity, Kind, KindSpec, Problems};
use crate::outcome::{Answer, Attestation, CheckError, Observation, Outcome};
use crate::target::Ctx;
use crate::units::Dur;

#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The statement the operator attests, phrased so that "yes" means it holds, e.g. "The
    /// Grafana panel 'Warnings and errors by code' shows no code that was not there before
    /// the deploy".
    pub question: String,
    /// What the operator should attach as the note (a link, the values seen); asked after
    /// the answer and kept with the attestation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<String>,
}

const EMPTY_QUESTION: Code = Code("confirm/empty-question");

impl KindSpec for Spec {
    const KIND: Kind = Kind {
        name: "confirm",
        namespace: "confirm",
        exclusivity: Exclusivity::Shared,
        codes: &[EMPTY_QUESTION],
    };

    fn validate(&self, p: &mut Problems) {
        if self.question.trim().is_empty() {
            p.error(
                "/question",
                EMPTY_QUESTION,
                "a confirm step needs the statement the operator attests",
                "write it so that \"yes\" means it holds, e.g. `question: the backup job ran tonight`",
            );
        }
        if self.evidence.as_deref().is_some_and(|e| e.trim().is_empty()) {
            p.error(
                "/evidence",
                EMPTY_QUESTION,
                "`evidence` is empty",
                "say what to attach (e.g. `evidence: link to the panel`), or remove the field",
            );
        }
    }

    /// A person answers: generous, but bounded (an audit left at its prompt ends ERROR).
    fn default_timeout(&self) -> Dur {
        Dur::from_secs(30 * 60)
    }

    /// Sends nothing to the target.
    fn default_budget(&self) -> u64 {
        0
    }

    fn run(&self, ctx: &Ctx) -> impl Future<Output = Result<Outcome, CheckError>> + Send {
        run(self, ctx)
    }
}

async fn run(spec: &Spec, ctx: &Ctx) -> Result<Outcome, CheckError> {
    let Some(attestor) = &ctx.attestor else {
        return Err(CheckError::NotApplicable(
            "a person must confirm this: run `preflight audit` on the runbook".into(),
        ));
    };
    let attestation = attestor
        .ask(&spec.question, spec.evidence.as_deref())
        .await;
    Ok(judge(spec, &attestation))
}

/// The outcome of one answer: yes holds, no fails, unanswered cannot decide.
pub fn judge(spec: &Spec, a: &Attestation) -> Outcome {
    let answered = match a.answer {
        Answer::Yes => "yes",
        Answer::No => "no",
        Answer::Unanswered => "unanswered",
    };
    let note = a
        .note
        .as_deref()
        .map(|n| format!(": \"{n}\""))
        .unwrap_or_default();
    let by = if a.via == "terminal" {
        format!("by {}", a.operator)
    } else {
        format!("by {} ({}: nobody looked)", a.operator, a.via)
    };
    let mut o = Outcome {
        summary: format!("{answered} {by}{note}"),
        evidence: serde_json::json!({
            "question": spec.question,
            "evidence_asked": spec.evidence,
            "attestation": a,
        }),
        ..Outcome::default()
    };
    match a.answer {
        Answer::Unanswered => {
            o.undecided("nobody answered: run the audit at a terminal, or with --yes");
        }
        answer => {
            o.observe(Observation::new(
                spec.question.clone(),
                "yes (attested)",
                format!("{answered} {by}{note}"),
                answer == Answer::Yes,
            ));
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Status;

    fn spec() -> Spec {
        Spec {
            question: "the panel shows no new code".into(),
            evidence: Some("link to the panel".into()),
        }
    }

    fn said(answer: Answer, via: &str, note: Option<&str>) -> Attestation {
        Attestation {
            answer,
            operator: "alice".into(),
            via: via.into(),
            note: note.map(str::to_string),
            at: "2026-12-03T00:00:00Z".into(),
        }
    }

    #[test]
    fn yes_passes_no_fails_unanswered_is_never_a_pass() {
        let yes = judge(&spec(), &said(Answer::Yes, "terminal", Some("https://g/d/1")));
        assert_eq!(yes.status(), Status::Pass);
        assert_eq!(yes.summary, "yes by alice: \"https://g/d/1\"");
        let no = judge(&spec(), &said(Answer::No, "terminal", None));
        assert_eq!(no.status(), Status::Fail);
        let none = judge(&spec(), &said(Answer::Unanswered, "--no-input", None));
        assert_eq!(none.status(), Status::Inconclusive);
        assert!(none.summary.contains("nobody looked"), "{}", none.summary);
    }

    #[test]
    fn an_answer_by_flag_says_nobody_looked() {
        let o = judge(&spec(), &said(Answer::Yes, "--yes", None));
        assert_eq!(o.status(), Status::Pass);
        assert!(o.summary.contains("--yes: nobody looked"), "{}", o.summary);
        assert_eq!(o.evidence["attestation"]["via"], "--yes");
    }

    #[test]
    fn an_empty_question_is_a_lint_error() {
        let mut p = Problems::default();
        Spec {
            question: " ".into(),
            evidence: None,
        }
        .validate(&mut p);
        assert_eq!(p.0.len(), 1);
        assert_eq!(p.0[0].field, "/question");
    }
}
