//! The golden scenarios of `fixtures/scenarios/*.json` (format: `fixtures/README.md`): loading
//! them and performing their steps on an `Authority`. golden.rs checks each step's
//! expectations on MemoryLedger and SqliteLedger; postgres_golden.rs runs every step on
//! MemoryLedger and PostgresLedger and compares the two.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cycles_core::*;
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/scenarios")
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub policy: Value,
    pub start_ms: i64,
    pub steps: Vec<Step>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub op: String,
    #[serde(default)]
    pub note: Option<String>,
    #[serde(default)]
    pub request: Option<Value>,
    /// Binds the id of the reservation (reserve) or event (event) to a name.
    #[serde(default, rename = "as")]
    pub bind: Option<String>,
    /// A reservation bound earlier with `as`.
    #[serde(default)]
    pub reservation: Option<String>,
    /// A literal reservation id (for ids that do not exist).
    #[serde(default)]
    pub reservation_id: Option<String>,
    #[serde(default)]
    pub by_ms: Option<i64>,
    #[serde(default)]
    pub to_ms: Option<i64>,
    /// Filter of the `balances` op.
    #[serde(default)]
    pub scope: Option<String>,
    #[serde(default)]
    pub expect: Map<String, Value>,
}

/// A loaded scenario and the file it came from.
pub struct Fixture {
    pub file: String,
    pub scenario: Scenario,
    pub raw: Value,
}

pub fn load_fixtures() -> Vec<Fixture> {
    let dir = fixtures_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let file = path.file_name().unwrap().to_string_lossy().into_owned();
            let text = std::fs::read_to_string(&path).unwrap();
            let raw: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: not JSON: {e}"));
            let scenario: Scenario = serde_json::from_value(raw.clone())
                .unwrap_or_else(|e| panic!("{file}: not a scenario: {e}"));
            Fixture {
                file,
                scenario,
                raw,
            }
        })
        .collect()
}

/// What one step produced.
#[derive(Default)]
pub struct Outcome {
    /// The result as JSON (for a denied reserve: its decision).
    pub result: Option<Value>,
    pub error: Option<CyclesError>,
    pub decision: Option<Decision>,
    /// The id of the reservation or event created.
    pub id: Option<String>,
}

impl Outcome {
    pub fn from<T: serde::Serialize>(r: Result<T>) -> Outcome {
        match r {
            Ok(v) => Outcome {
                result: Some(serde_json::to_value(v).expect("results serialize")),
                ..Outcome::default()
            },
            Err(e) => Outcome {
                error: Some(e),
                ..Outcome::default()
            },
        }
    }
}

/// One scenario in progress on one ledger.
pub struct Run {
    pub auth: Authority,
    pub clock: ManualClock,
    pub names: BTreeMap<String, String>,
}

pub fn request<T: serde::de::DeserializeOwned>(step: &Step) -> Result<T, String> {
    let v = step
        .request
        .clone()
        .ok_or_else(|| format!("op {} needs a request", step.op))?;
    serde_json::from_value(v).map_err(|e| format!("request does not deserialize: {e}"))
}

pub fn request_or_default<T: serde::de::DeserializeOwned + Default>(
    step: &Step,
) -> Result<T, String> {
    match &step.request {
        None => Ok(T::default()),
        Some(_) => request(step),
    }
}

impl Run {
    pub fn start(scenario: &Scenario, ledger: Box<dyn Ledger>) -> Result<Run, String> {
        Run::with_policy(&scenario.policy, scenario.start_ms, ledger)
    }

    /// A run of a scenario's steps under another policy than the scenario's own.
    pub fn with_policy(
        policy: &Value,
        start_ms: i64,
        ledger: Box<dyn Ledger>,
    ) -> Result<Run, String> {
        let policy: Policy = serde_json::from_value(policy.clone())
            .map_err(|e| format!("policy does not deserialize: {e}"))?;
        let clock = ManualClock::new(start_ms);
        let auth = Authority::builder()
            .policy(policy)
            .shared_ledger(std::sync::Arc::from(ledger))
            .clock(clock.clone())
            .build()
            .map_err(|e| format!("authority does not build: {e}"))?;
        Ok(Run {
            auth,
            clock,
            names: BTreeMap::new(),
        })
    }

    pub fn reservation_id(&self, step: &Step) -> Result<String, String> {
        match (&step.reservation, &step.reservation_id) {
            (Some(name), None) => self
                .names
                .get(name)
                .cloned()
                .ok_or_else(|| format!("no reservation is bound to {name:?}")),
            (None, Some(id)) => Ok(id.clone()),
            _ => Err("give exactly one of reservation, reservation_id".into()),
        }
    }

    /// Performs one step. `Err` is a malformed step (a scenario bug), not a mismatch.
    pub fn perform(&mut self, step: &Step) -> Result<Outcome, String> {
        let a = &self.auth;
        let out = match step.op.as_str() {
            "decide" => {
                let req: DecideRequest = request(step)?;
                match a.decide(&req) {
                    Ok(d) => Outcome {
                        result: Some(serde_json::to_value(&d).unwrap()),
                        decision: Some(d),
                        ..Outcome::default()
                    },
                    Err(e) => Outcome::from::<()>(Err(e)),
                }
            }
            "reserve" => {
                let req: ReserveRequest = request(step)?;
                match a.reserve(&req) {
                    Ok(r) => Outcome {
                        result: Some(serde_json::to_value(&r).unwrap()),
                        id: Some(r.reservation_id.clone()),
                        decision: Some(r.decision),
                        error: None,
                    },
                    Err(e) => {
                        let decision = e.decision().cloned();
                        Outcome {
                            result: decision.as_ref().map(|d| serde_json::to_value(d).unwrap()),
                            decision,
                            error: Some(e),
                            id: None,
                        }
                    }
                }
            }
            "commit" => {
                let id = self.reservation_id(step)?;
                let req: CommitRequest = request_or_default(step)?;
                Outcome::from(a.commit(&id, &req))
            }
            "release" => {
                let id = self.reservation_id(step)?;
                let req: ReleaseRequest = request_or_default(step)?;
                Outcome::from(a.release(&id, &req))
            }
            "settle" => {
                let id = self.reservation_id(step)?;
                let req: SettleRequest = request(step)?;
                Outcome::from(a.settle(&id, &req))
            }
            "extend" => {
                let id = self.reservation_id(step)?;
                let req: ExtendRequest = request(step)?;
                Outcome::from(a.extend(&id, &req))
            }
            "event" => {
                let req: EventRequest = request(step)?;
                let r = a.event(&req);
                let id = r.as_ref().ok().map(|e| e.event_id.clone());
                Outcome {
                    id,
                    ..Outcome::from(r)
                }
            }
            "sweep_expired" => Outcome::from(a.sweep_expired().map(|n| json!({ "swept": n }))),
            "set_budget" => {
                let spec: BudgetSpec = request(step)?;
                Outcome::from(a.set_budget(&spec))
            }
            "advance_clock" => {
                match (step.by_ms, step.to_ms) {
                    (Some(by), None) => self.clock.advance(by),
                    (None, Some(to)) => self.clock.set(to),
                    _ => return Err("advance_clock takes exactly one of by_ms, to_ms".into()),
                }
                Outcome {
                    result: Some(json!({ "now_ms": self.clock.now_ms() })),
                    ..Outcome::default()
                }
            }
            "balances" => Outcome {
                result: Some(Value::Null),
                ..Outcome::default()
            },
            "verify" => {
                let report = a.verify();
                let kinds = a
                    .audit(&AuditQuery::default())
                    .map(|records| records.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>());
                Outcome::from(report.and_then(|rep| {
                    Ok(json!({ "ok": rep.ok, "records": rep.records, "kinds": kinds? }))
                }))
            }
            other => return Err(format!("unknown op {other:?}")),
        };
        if let Some(name) = &step.bind {
            if !matches!(step.op.as_str(), "reserve" | "event") {
                return Err("`as` binds only reserve and event results".into());
            }
            let id = out
                .id
                .clone()
                .ok_or_else(|| format!("cannot bind {name:?}: the step created nothing"))?;
            if self.names.insert(name.clone(), id).is_some() {
                return Err(format!("name {name:?} is bound twice"));
            }
        }
        Ok(out)
    }
}
