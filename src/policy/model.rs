//! The typed policy model. The JSON Schema (`docs/policy.schema.json`) is generated from
//! these types, so a field documented here is documented for editors too.

use std::collections::BTreeMap;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::checks::CheckSpec;
use crate::secret::Secret;
use crate::units::Dur;

/// A policy file: what to check, against which target, and how to decide.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Policy language version. Always `1`.
    pub version: u32,
    /// Short name, shown in every report.
    pub name: String,
    /// What this policy is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Other policy files (relative to this one) whose checks are added; a check here with the
    /// same `id` as an included one overrides the fields it sets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<String>,
    /// The service under test. Absent: preflight spawns the bundled core service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TargetSpec>,
    /// Which severities block a deploy.
    #[serde(default)]
    pub gate: GateSpec,
    /// Accepted exceptions, each with a reason and an expiry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub waivers: Vec<Waiver>,
    /// The checks, run and reported in this order.
    #[serde(default)]
    pub checks: Vec<Check>,
    /// Baseline against canary for `preflight canary` (see docs/canary.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<crate::policy::canary::CanarySpec>,
    /// How a fleet is checked (`--targets`) and how its instances' verdicts make one
    /// (see docs/fleets.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetSpec>,
}

/// A fleet: many instances of one service checked with one policy.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    /// The fleet is GO when `all` its instances are GO (the default), or a share of them
    /// such as `95%`. Instances not GO but not NO-GO (INCONCLUSIVE, or not in the merged
    /// reports) count against GO and for INCONCLUSIVE.
    #[serde(default)]
    pub require: FleetRequire,
    /// Instances checked at once.
    #[serde(default = "FleetSpec::default_concurrency")]
    #[schemars(range(min = 1))]
    pub concurrency: usize,
    /// Instances that may be disturbed at once (faults, floods, kills): a disturbing check
    /// waits until fewer than this many instances run one. Read-only checks never wait.
    #[serde(default = "FleetSpec::default_max_disturbed")]
    #[schemars(range(min = 1))]
    pub max_disturbed: usize,
}

impl FleetSpec {
    fn default_concurrency() -> usize {
        4
    }
    fn default_max_disturbed() -> usize {
        1
    }
}

impl Default for FleetSpec {
    fn default() -> Self {
        FleetSpec {
            require: FleetRequire::All,
            concurrency: Self::default_concurrency(),
            max_disturbed: Self::default_max_disturbed(),
        }
    }
}

/// `all`, or the share of instances that must be GO (`95%`).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum FleetRequire {
    #[default]
    All,
    Share(crate::units::Percent),
}

impl FleetRequire {
    /// The share of instances that must be GO, 0–1.
    pub fn share(self) -> f64 {
        match self {
            FleetRequire::All => 1.0,
            FleetRequire::Share(p) => p.fraction(),
        }
    }
    /// How many of `n` instances must be GO.
    pub fn needed(self, n: usize) -> usize {
        match self {
            FleetRequire::All => n,
            // A hair under the product, so 95% of 20 is 19, not 20 from 19.000000000000004.
            FleetRequire::Share(p) => ((p.fraction() * n as f64) - 1e-9).ceil().max(0.0) as usize,
        }
    }
}

impl std::fmt::Display for FleetRequire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FleetRequire::All => f.write_str("all"),
            FleetRequire::Share(p) => write!(f, "{p}"),
        }
    }
}

impl std::str::FromStr for FleetRequire {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim() == "all" {
            return Ok(FleetRequire::All);
        }
        s.parse::<crate::units::Percent>()
            .map(FleetRequire::Share)
            .map_err(|e| format!("`require` is `all` or a share such as `95%`: {e}"))
    }
}

impl Serialize for FleetRequire {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for FleetRequire {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for FleetRequire {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "FleetRequire".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "`all`, or the share of instances that must be GO, e.g. `95%`.",
            "type": "string",
            "pattern": "^(all|[0-9]+(\\.[0-9]+)?%)$",
            "examples": ["all", "95%"]
        })
    }
}

/// The service under test and what preflight may do to it (its capabilities).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetSpec {
    /// Base URL, e.g. `http://127.0.0.1:8080`. `--target` overrides it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Admin API bearer token; enables fault-injection checks. Use `${env:NAME}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<Secret>,
    /// How to find and restart the process; enables memory and crash checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessSpec>,
    /// The service's log directory; enables log-retention checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_dir: Option<PathBuf>,
    /// The service's SQLite database; enables `sqlite` checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sqlite: Option<PathBuf>,
    /// Spawn the bundled core service with this config instead of using a URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spawn: Option<SpawnSpec>,
    /// Client addresses preflight may bind to for a target that is not on loopback (IPs or
    /// CIDRs of this machine, e.g. `[198.51.100.11, 2001:db8:7::/120]`). Checks that need a
    /// second client (the `rate_limit` neighbour) use them; with too few, checks run one
    /// after another and what one address cannot prove is SKIP. Absent: the OS's choice.
    /// `--source-address` adds to them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub source_addresses: Vec<AddressRange>,
    /// TLS for an `https://` target: a private CA, a client certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSpec>,
    /// Request headers sent on every request to the target (e.g. `Authorization: Bearer
    /// ${env:GATEWAY_TOKEN}` for a gateway). Values are secrets: never printed.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Secret>,
}

/// TLS settings of an `https://` target. Server certificates are verified against the
/// system's roots, plus `ca` when given; the server name is the URL's host.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TlsSpec {
    /// PEM file of the CA (or CAs) that signed the target's certificate, added to the
    /// system's roots. Relative to the working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate (chain) for mutual TLS; needs `client_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_key: Option<PathBuf>,
    /// Accept any server certificate. Only for a throwaway test target: every report
    /// carries a warning when it is set.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_verify: bool,
}

/// An IP address or a CIDR range (`198.51.100.11`, `198.51.100.0/28`, `fd00:7::/120`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressRange(pub ipnet::IpNet);

impl std::str::FromStr for AddressRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Ok(net) = s.parse::<ipnet::IpNet>() {
            return Ok(AddressRange(net));
        }
        s.parse::<std::net::IpAddr>()
            .map(|a| AddressRange(ipnet::IpNet::from(a)))
            .map_err(|_| {
                format!("`{s}` is neither an IP address nor a CIDR range (e.g. `198.51.100.11` or `fd00:7::/120`)")
            })
    }
}

impl std::fmt::Display for AddressRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            write!(f, "{}", self.0.addr())
        } else {
            write!(f, "{}", self.0)
        }
    }
}

impl Serialize for AddressRange {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AddressRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for AddressRange {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "AddressRange".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "An IP address or a CIDR range, e.g. `198.51.100.11` or `fd00:7::/120`."
        })
    }
}

/// Process control of a remote target.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// File holding the service's pid.
    pub pid_file: PathBuf,
    /// Command (argv, no shell) that starts the service again after a crash test. It must
    /// return once the service is started (in the background, its output to a file);
    /// preflight then polls `/readyz`. Without it, crash checks SKIP and nothing is killed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub restart: Vec<String>,
}

/// Spawn the bundled service.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SpawnSpec {
    /// Service config profile, relative to the working directory.
    pub config: PathBuf,
}

/// How results become a verdict.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GateSpec {
    /// A FAIL or ERROR at one of these severities is NO-GO.
    #[serde(default = "GateSpec::default_block_on")]
    pub block_on: Vec<Severity>,
}

impl GateSpec {
    fn default_block_on() -> Vec<Severity> {
        vec![Severity::Critical, Severity::High]
    }
}

impl Default for GateSpec {
    fn default() -> Self {
        GateSpec {
            block_on: Self::default_block_on(),
        }
    }
}

/// How much a failing check matters.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Critical,
    #[default]
    High,
    Medium,
    Low,
    Info,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::High => "high",
            Severity::Medium => "medium",
            Severity::Low => "low",
            Severity::Info => "info",
        }
    }
}

/// An accepted exception for one check.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Waiver {
    /// The id of the waived check.
    pub check: String,
    /// Why this is acceptable, for the people reading the report.
    pub reason: String,
    /// Last day the waiver applies (`YYYY-MM-DD`); after it the check blocks again.
    pub expires: chrono::NaiveDate,
}

/// One check: common fields plus the fields of its `kind`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
pub struct Check {
    /// Unique id (kebab-case), used by `--only`, `depends_on`, waivers and reports.
    pub id: String,
    /// What requirement this check proves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// How much a failure matters (default `high`).
    #[serde(default)]
    pub severity: Severity,
    /// Run only after these checks passed; otherwise SKIP.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Retry until the check passes or `within` runs out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Deadline for the whole check (default per kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Dur>,
    /// Most requests the check may send (default per kind).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_requests: Option<u64>,
    /// When `preflight watch` runs this check (`every 30s`, `hourly`, `daily at 03:00`,
    /// `weekly on sun at 03:00`, or `{when, jitter, window}`); `preflight check` ignores it.
    /// Without one, watch runs a read-only check every `--every` and never runs a check that
    /// disturbs the target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<crate::policy::schedule::Schedule>,
    /// Whether the check may run concurrently with other independent checks. Checks that
    /// disturb the target (faults, kills, floods) are never run concurrently, whatever this says.
    #[serde(default = "default_true")]
    pub independent: bool,
    /// The kind and its fields.
    #[serde(flatten)]
    pub spec: CheckSpec,
    /// Where the check is declared; set by the loader, not written in a policy.
    #[serde(skip)]
    pub origin: Option<Origin>,
}

/// The file and position of a check's declaration (its `id:` entry), for reports that point
/// back into the policy (CI annotations).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    /// The policy file as given (or `builtin:…`).
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
}

fn default_true() -> bool {
    true
}

/// Retry-until-met.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// Give up after this long.
    pub within: Dur,
    /// Wait between attempts.
    #[serde(default = "Retry::default_every")]
    pub every: Dur,
}

impl Retry {
    fn default_every() -> Dur {
        Dur::from_millis(500)
    }
}

/// Extra map type used by several kinds.
pub type StringMap = BTreeMap<String, String>;
