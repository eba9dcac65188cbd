//! The core service's tick contract, shared by the kinds that write through it
//! (`crash_recovery`, `store_retention`, `store_full`): batches of ticks with client ids, and
//! the lookup that says which acknowledged ids are stored.

use serde_json::{Value, json};

use crate::outcome::CheckError;
use crate::probe::http::Rotating;

/// Where ticks are written.
pub const INGEST: &str = "/v1/ticks";
/// Where ids are looked up.
pub const LOOKUP: &str = "/v1/ticks/lookup";

/// A batch of `n` ticks with ids `{prefix}-{from}` … in `market`, stamped `ts_ms` (the
/// service's clock when `None`): the ids and the JSON body.
pub fn batch(
    prefix: &str,
    from: u32,
    n: u32,
    market: &str,
    ts_ms: Option<i64>,
) -> (Vec<String>, Value) {
    let ids: Vec<String> = (from..from + n).map(|i| format!("{prefix}-{i}")).collect();
    let ticks = ids
        .iter()
        .zip(from..)
        .map(|(id, seq)| {
            let mut t = json!({
                "id": id,
                "venue": format!("v{}", 1 + seq % 3),
                "market": market,
                "selection": format!("s{}", 1 + (seq / 3) % 3),
                "price": 1.5 + f64::from(seq % 97) / 40.0,
            });
            if let Some(ts) = ts_ms {
                t["ts_ms"] = json!(ts);
            }
            t
        })
        .collect();
    (ids, Value::Array(ticks))
}

/// The ids among `ids` the target does not have (`POST /v1/ticks/lookup`, 500 at a time).
pub async fn missing(http: &mut Rotating, ids: &[String]) -> Result<Vec<String>, CheckError> {
    let mut out = Vec::new();
    for chunk in ids.chunks(500) {
        let r = http.post(LOOKUP, Some(&json!({ "ids": chunk }))).await?;
        if r.status != 200 {
            return Err(CheckError::Target(format!(
                "POST {LOOKUP} answered {}: {}",
                r.status,
                r.text()
            )));
        }
        let body = r.json()?;
        let Some(list) = body.get("missing").and_then(Value::as_array) else {
            return Err(CheckError::Target(format!(
                "POST {LOOKUP}: no `missing` list in {body}"
            )));
        };
        out.extend(list.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    Ok(out)
}

/// The body's `/error/code`, or `?`.
pub fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/code")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn batches_carry_ids_and_the_given_time() {
        let (ids, body) = super::batch("p", 3, 2, "mk", Some(5));
        assert_eq!(ids, ["p-3", "p-4"]);
        assert_eq!(body[1]["id"], "p-4");
        assert_eq!(body[0]["market"], "mk");
        assert_eq!(body[0]["ts_ms"], 5);
        assert!(
            super::batch("p", 0, 1, "m", None).1[0]
                .get("ts_ms")
                .is_none()
        );
        assert_eq!(
            super::error_code(br#"{"error":{"code":"store-full"}}"#),
            "store-full"
        );
        assert_eq!(super::error_code(b"nope"), "?");
    }
}
