//! Resident memory of the target: from a local pid (`/proc/<pid>/status`, with sysinfo as the
//! portable fallback) or from the `process_resident_memory_bytes` metric.

use crate::outcome::CheckError;
use crate::probe::http::Http;

/// RSS in bytes of a local process.
pub fn rss_of_pid(pid: u32) -> Result<u64, CheckError> {
    if let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/status"))
        && let Some(kib) = parse_vmrss(&text)
    {
        return Ok(kib * 1024);
    }
    rss_sysinfo(pid)
}

/// `VmRSS:   12345 kB` → 12345.
fn parse_vmrss(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn rss_sysinfo(pid: u32) -> Result<u64, CheckError> {
    use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};
    let mut sys = System::new();
    let p = Pid::from_u32(pid);
    sys.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[p]),
        true,
        ProcessRefreshKind::nothing().with_memory(),
    );
    sys.process(p)
        .map(|proc_| proc_.memory())
        .ok_or_else(|| CheckError::Target(format!("process {pid} is not running")))
}

/// RSS in bytes from the target's `/metrics` (`process_resident_memory_bytes`).
pub async fn rss_from_metric(http: &Http, metric: &str) -> Result<u64, CheckError> {
    let resp = http.get("/metrics").await?;
    if resp.status != 200 {
        return Err(CheckError::Target(format!(
            "GET /metrics answered {}",
            resp.status
        )));
    }
    let samples = crate::probe::prom::parse(&resp.text());
    samples
        .iter()
        .find(|s| s.name == metric)
        .map(|s| s.value as u64)
        .ok_or_else(|| CheckError::NotApplicable(format!("the target exports no `{metric}`")))
}

/// Every sample of the target's `/metrics`.
pub async fn scrape(http: &Http) -> Result<Vec<crate::probe::prom::Sample>, CheckError> {
    let resp = http.get("/metrics").await?;
    if resp.status != 200 {
        return Err(CheckError::Target(format!(
            "GET /metrics answered {}",
            resp.status
        )));
    }
    Ok(crate::probe::prom::parse(&resp.text()))
}

/// The value of a metric selector (`name` or `name{label="v"}`), summed over matches.
pub async fn metric_value(http: &Http, selector: &str) -> Result<Option<f64>, CheckError> {
    let expr =
        crate::probe::prom::Expr::parse(&format!("{selector} >= 0")).map_err(CheckError::Local)?;
    Ok(expr.selector.eval(&scrape(http).await?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_rss() {
        let rss = rss_of_pid(std::process::id()).unwrap();
        assert!(rss > 1024 * 1024, "{rss}");
    }

    #[test]
    fn parses_status() {
        assert_eq!(
            parse_vmrss("Name:\tx\nVmRSS:\t   2048 kB\nVmSwap: 0 kB\n"),
            Some(2048)
        );
        assert_eq!(parse_vmrss("Name: x\n"), None);
    }
}
