//! `cycles.Authority` and `cycles.Reservation`: the core's facade, one call per method.
//!
//! Arguments are converted to the core's request structs (strictly, see `convert`), the core
//! call runs with the GIL released, and its result or error is translated. No rule of the
//! gate is evaluated here.

// Each Python keyword argument is one Rust parameter: the signatures mirror the Python API.
#![allow(clippy::too_many_arguments)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cycles_core as core;
use cycles_core::CyclesError as CoreError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyString, PyTuple, PyType};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::convert::{amounts_to_json, to_json, to_py};
use crate::errors::{IntoPy, to_py_err};
use crate::types::{
    AuditRecord, Balance, CommitResult, Decision, EventResult, ManualClock, ReleaseResult,
    VerifyReport, amount_map,
};

/// Deserializes a JSON value into a core type; a mismatch is `INVALID_REQUEST` on `field`.
fn from_json<T: DeserializeOwned>(v: Value, field: &str) -> Result<T, CoreError> {
    serde_json::from_value(v).map_err(|e| CoreError::invalid(field, e.to_string()))
}

/// A required Python argument as a core type.
fn arg<T: DeserializeOwned>(obj: &Bound<'_, PyAny>, field: &str) -> Result<T, CoreError> {
    from_json(to_json(obj, field)?, field)
}

/// An optional Python argument (`None` is absent) as a core type.
fn opt<T: DeserializeOwned>(
    obj: Option<&Bound<'_, PyAny>>,
    field: &str,
) -> Result<Option<T>, CoreError> {
    match obj {
        Some(o) if !o.is_none() => arg(o, field).map(Some),
        _ => Ok(None),
    }
}

/// Amounts given as `{unit: amount}` or as the core's list form; `None` is empty.
fn amounts(obj: Option<&Bound<'_, PyAny>>, field: &str) -> Result<Vec<core::Amount>, CoreError> {
    match obj {
        Some(o) if !o.is_none() => from_json(amounts_to_json(o, field)?, field),
        _ => Ok(Vec::new()),
    }
}

/// The proposed call: tool name, arguments (any JSON, `None` when absent), kind and tags.
fn tool_call(
    tool: &Bound<'_, PyAny>,
    args: Option<&Bound<'_, PyAny>>,
    kind: Option<&Bound<'_, PyAny>>,
    tags: Option<&Bound<'_, PyAny>>,
) -> Result<core::ToolCall, CoreError> {
    Ok(core::ToolCall {
        action: core::Action {
            name: arg(tool, "tool")?,
            kind: opt(kind, "kind")?,
            tags: opt(tags, "tags")?.unwrap_or_default(),
        },
        args: match args {
            Some(a) => to_json(a, "args")?,
            None => Value::Null,
        },
    })
}

/// `ran=`: the call that actually ran, as a mapping `{"tool": ..., "args": ..., "kind": ...,
/// "tags": ...}` (only `tool` required); `None` when not given.
fn ran_call(ran: Option<&Bound<'_, PyAny>>) -> Result<Option<core::ToolCall>, CoreError> {
    let Some(ran) = ran.filter(|r| !r.is_none()) else {
        return Ok(None);
    };
    let map = ran
        .cast::<pyo3::types::PyMapping>()
        .map_err(|_| CoreError::invalid("ran", "expected a mapping {tool, args, kind, tags}"))?;
    let keys: Vec<String> = map
        .keys()
        .and_then(|k| k.extract())
        .map_err(|_| CoreError::invalid("ran", "keys must be strings"))?;
    if let Some(k) = keys
        .iter()
        .find(|k| !matches!(k.as_str(), "tool" | "args" | "kind" | "tags"))
    {
        return Err(CoreError::invalid(
            format!("ran.{k}"),
            "unknown field; expected one of tool, args, kind, tags",
        ));
    }
    let item = |k: &str| map.get_item(k).ok();
    let tool = item("tool").ok_or_else(|| CoreError::invalid("ran.tool", "required"))?;
    let (args, kind, tags) = (item("args"), item("kind"), item("tags"));
    tool_call(&tool, args.as_ref(), kind.as_ref(), tags.as_ref()).map(Some)
}

/// `policy=`: `None` (the default policy), a path to a TOML file (str or os.PathLike) or a
/// dict in the policy's JSON form. Every failure is `PolicyError`.
fn load_policy(policy: Option<&Bound<'_, PyAny>>) -> Result<core::Policy, CoreError> {
    let Some(p) = policy.filter(|p| !p.is_none()) else {
        return Ok(core::Policy::default());
    };
    if p.is_instance_of::<PyString>() || p.hasattr("__fspath__").unwrap_or(false) {
        let path: std::path::PathBuf = p.extract().map_err(|e| {
            CoreError::Policy(format!("policy path is not a usable file name: {e}"))
        })?;
        return core::Policy::from_file(path);
    }
    let json = to_json(p, "policy").map_err(|e| CoreError::Policy(e.to_string()))?;
    if !json.is_object() {
        return Err(CoreError::Policy(
            "policy must be a path to a TOML file or a dict".into(),
        ));
    }
    serde_json::from_value(json).map_err(|e| CoreError::Policy(format!("policy: {e}")))
}

fn build(
    policy: Option<&Bound<'_, PyAny>>,
    ledger: Option<core::SqliteLedger>,
    clock: Option<&ManualClock>,
) -> Result<core::Authority, CoreError> {
    let mut b = core::Authority::builder().policy(load_policy(policy)?);
    if let Some(l) = ledger {
        b = b.ledger(l);
    }
    if let Some(c) = clock {
        b = b.clock(c.0.clone());
    }
    b.build()
}

/// The runtime authority: the gate between a model's proposed tool call and its execution.
///
/// Safe to share between threads; every method that touches the ledger releases the GIL.
#[pyclass(frozen, weakref, module = "cycles")]
pub struct Authority {
    inner: core::Authority,
}

#[pymethods]
impl Authority {
    /// An authority over a ledger: a SQLite file path (created if absent; several processes
    /// may share it) or a PostgreSQL URL, `postgres://user@host:5432/db?schema=NAME` (the
    /// schema is created if absent; processes on many hosts may share it). `synchronous`
    /// applies to both; `busy_timeout_ms` to SQLite only.
    #[staticmethod]
    #[pyo3(signature = (path, policy=None, *, clock=None, synchronous="FULL", busy_timeout_ms=10_000))]
    fn open(
        py: Python<'_>,
        path: std::path::PathBuf,
        policy: Option<&Bound<'_, PyAny>>,
        clock: Option<PyRef<'_, ManualClock>>,
        synchronous: &str,
        busy_timeout_ms: u64,
    ) -> PyResult<Self> {
        let synchronous = match synchronous {
            "FULL" => core::Synchronous::Full,
            "NORMAL" => core::Synchronous::Normal,
            other => {
                return Err(CoreError::invalid(
                    "synchronous",
                    format!("{other:?} is not FULL or NORMAL"),
                ))
                .py(py);
            }
        };
        // The policy is validated (by the core's compile) before the ledger is touched: a bad
        // policy creates no ledger file (or schema).
        let policy = load_policy(policy).py(py)?;
        policy.clone().compile().py(py)?;
        let mut options = core::LedgerOptions::default().synchronous(synchronous);
        options.sqlite.busy_timeout = Duration::from_millis(busy_timeout_ms);
        let clock = clock.map(|c| c.0.clone());
        // Connecting to a server or opening a file blocks: without the GIL.
        let inner = py
            .detach(move || {
                let ledger = core::open_ledger(&path, &options)?;
                let mut b = core::Authority::builder()
                    .policy(policy)
                    .shared_ledger(ledger);
                if let Some(c) = clock {
                    b = b.clock(c);
                }
                b.build()
            })
            .py(py)?;
        Ok(Authority { inner })
    }

    /// An authority over a fresh in-memory ledger (state is lost with the object).
    #[staticmethod]
    #[pyo3(signature = (policy=None, *, clock=None))]
    fn in_memory(
        py: Python<'_>,
        policy: Option<&Bound<'_, PyAny>>,
        clock: Option<PyRef<'_, ManualClock>>,
    ) -> PyResult<Self> {
        let inner = build(policy, None, clock.as_deref()).py(py)?;
        Ok(Authority { inner })
    }

    /// Would this call be allowed now? Holds nothing; the decision is recorded.
    #[pyo3(signature = (tool, args=None, *, subject, estimate=None, kind=None, tags=None))]
    fn decide(
        &self,
        py: Python<'_>,
        tool: &Bound<'_, PyAny>,
        args: Option<&Bound<'_, PyAny>>,
        subject: &Bound<'_, PyAny>,
        estimate: Option<&Bound<'_, PyAny>>,
        kind: Option<&Bound<'_, PyAny>>,
        tags: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Decision> {
        let req = (|| {
            Ok::<_, CoreError>(core::DecideRequest {
                subject: arg(subject, "subject")?,
                call: tool_call(tool, args, kind, tags)?,
                estimate: amounts(estimate, "estimate")?,
            })
        })()
        .py(py)?;
        let auth = &self.inner;
        py.detach(|| auth.decide(&req)).py(py).map(Decision)
    }

    /// Reserves the call's risk points and estimate on every budgeted scope.
    ///
    /// Raises `Denied` (or `ApprovalRequired`) when the gate says no; the denial is recorded.
    /// The returned `Reservation` is a context manager: commit (or settle) it inside the
    /// block; leaving the block normally without that settles it `COMPLETED` (charged what
    /// was held), leaving it by an exception settles it as `FAILED` (an `Exception`) or
    /// `INTERRUPTED` (anything else), or `COMPLETED` when the block had tried to commit.
    #[pyo3(signature = (tool, args=None, *, subject, estimate=None, kind=None, tags=None,
        ttl_ms=None, grace_period_ms=None, overage_policy=None, idempotency_key=None, grant=None))]
    fn reserve(
        slf: &Bound<'_, Self>,
        tool: &Bound<'_, PyAny>,
        args: Option<&Bound<'_, PyAny>>,
        subject: &Bound<'_, PyAny>,
        estimate: Option<&Bound<'_, PyAny>>,
        kind: Option<&Bound<'_, PyAny>>,
        tags: Option<&Bound<'_, PyAny>>,
        ttl_ms: Option<&Bound<'_, PyAny>>,
        grace_period_ms: Option<&Bound<'_, PyAny>>,
        overage_policy: Option<&Bound<'_, PyAny>>,
        idempotency_key: Option<&Bound<'_, PyAny>>,
        grant: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Reservation> {
        let py = slf.py();
        let req = (|| {
            Ok::<_, CoreError>(core::ReserveRequest {
                subject: arg(subject, "subject")?,
                call: tool_call(tool, args, kind, tags)?,
                estimate: amounts(estimate, "estimate")?,
                ttl_ms: opt(ttl_ms, "ttl_ms")?,
                grace_period_ms: opt(grace_period_ms, "grace_period_ms")?,
                overage_policy: opt(overage_policy, "overage_policy")?,
                idempotency_key: opt(idempotency_key, "idempotency_key")?,
                grant: opt(grant, "grant")?,
            })
        })()
        .py(py)?;
        let auth = &slf.get().inner;
        let r = py.detach(|| auth.reserve(&req)).py(py)?;
        Ok(Reservation::new(slf, r))
    }

    /// Commits a reservation by id with the actual amounts (units not listed are charged as held).
    /// `ran={"tool": ..., "args": ...}`: the call that actually ran, when it may not be the one
    /// reserved; a different call is charged at least its own risk points and named in the
    /// commit record.
    /// `charge_if_expired=True`: for a call that has run, when its reservation expired while
    /// it ran, charge it anyway (an event on the reservation's subject; the result's status is
    /// `EXPIRED` and `event_id` names it) instead of raising `RESERVATION_EXPIRED`.
    #[pyo3(signature = (reservation_id, actual=None, *, ran=None, charge_if_expired=false, idempotency_key=None))]
    fn commit(
        &self,
        py: Python<'_>,
        reservation_id: &Bound<'_, PyAny>,
        actual: Option<&Bound<'_, PyAny>>,
        ran: Option<&Bound<'_, PyAny>>,
        charge_if_expired: bool,
        idempotency_key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<CommitResult> {
        let id: String = arg(reservation_id, "reservation_id").py(py)?;
        commit_core(
            py,
            &self.inner,
            &id,
            (actual, ran),
            charge_if_expired,
            idempotency_key,
        )
    }

    /// Releases a reservation by id without charge.
    #[pyo3(signature = (reservation_id, reason=None, *, idempotency_key=None))]
    fn release(
        &self,
        py: Python<'_>,
        reservation_id: &Bound<'_, PyAny>,
        reason: Option<&Bound<'_, PyAny>>,
        idempotency_key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<ReleaseResult> {
        let id: String = arg(reservation_id, "reservation_id").py(py)?;
        let req = release_request(reason, idempotency_key).py(py)?;
        let auth = &self.inner;
        py.detach(|| auth.release(&id, &req))
            .py(py)
            .map(ReleaseResult)
    }

    /// Finishes a reservation by id by how its call ended: `outcome` is `"COMPLETED"` (the
    /// call returned: `actual` is charged, units not listed as held), `"FAILED"` (it reported
    /// an error: released or charged what was held, as the policy's `[defaults] on_failure`
    /// says), `"INTERRUPTED"` (stopped from outside after it started: charged what was held)
    /// or `"NOT_STARTED"` (released). The core decides; charged outcomes are charged even if
    /// the hold lapsed while the call ran (status `EXPIRED`, `event_id`). Returns the
    /// `CommitResult` or the `ReleaseResult` it was. `actual` only with `"COMPLETED"`;
    /// `reason` is recorded on a release; `ran` as in `commit`.
    #[pyo3(signature = (reservation_id, outcome, actual=None, *, ran=None, reason=None, idempotency_key=None))]
    fn settle<'py>(
        &self,
        py: Python<'py>,
        reservation_id: &Bound<'py, PyAny>,
        outcome: &Bound<'py, PyAny>,
        actual: Option<&Bound<'py, PyAny>>,
        ran: Option<&Bound<'py, PyAny>>,
        reason: Option<&Bound<'py, PyAny>>,
        idempotency_key: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id: String = arg(reservation_id, "reservation_id").py(py)?;
        let s = settle_core(
            py,
            &self.inner,
            &id,
            outcome,
            (actual, ran),
            reason,
            idempotency_key,
        )?;
        settlement_py(py, s)
    }

    /// `settle`, except when the ledger refuses it as unavailable (`LEDGER_UNAVAILABLE`: a
    /// SQLite file locked past the busy timeout, a database that went away): the settlement
    /// is then kept owed by the authority and `None` is returned. The authority makes it
    /// after the next operation the ledger answers (or on `retry_owed`); retrying is safe, a
    /// reservation is finalized once. Every other error is raised as by `settle`. Owed
    /// settlements live in this process: the ones still owed at interpreter exit are retried
    /// once then, and each one left is logged on the `cycles` logger (its hold then expires
    /// uncharged).
    #[pyo3(signature = (reservation_id, outcome, actual=None, *, ran=None, reason=None, idempotency_key=None))]
    fn settle_or_owe<'py>(
        slf: &Bound<'py, Self>,
        reservation_id: &Bound<'py, PyAny>,
        outcome: &Bound<'py, PyAny>,
        actual: Option<&Bound<'py, PyAny>>,
        ran: Option<&Bound<'py, PyAny>>,
        reason: Option<&Bound<'py, PyAny>>,
        idempotency_key: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let py = slf.py();
        let id: String = arg(reservation_id, "reservation_id").py(py)?;
        let req = settle_request(outcome, (actual, ran), reason, idempotency_key).py(py)?;
        let auth = &slf.get().inner;
        match py.detach(|| auth.settle_or_owe(&id, &req)).py(py)? {
            Some(s) => settlement_py(py, s).map(Some),
            None => {
                note_owed(slf)?;
                Ok(None)
            }
        }
    }

    /// The settlements this authority owes (`settle_or_owe` answered `None`), oldest first,
    /// as dicts: `reservation_id`, `request` (the settlement asked for, in the core's JSON
    /// form: `outcome`, and `actual`, `ran`, `reason`, `idempotency_key` when given),
    /// `attempts` (tries so far, the first included), `last_error` (the ledger's last
    /// refusal) and `since_ms` (when the first try failed, ledger clock).
    fn owed_settlements<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let auth = &self.inner;
        let owed = py.detach(|| auth.owed_settlements());
        owed.iter().map(|o| json_of(py, o)).collect()
    }

    /// Tries each owed settlement once, oldest first, stopping at the first the ledger still
    /// refuses as unavailable; returns what is still owed, as `owed_settlements` does. An
    /// entry the ledger answers otherwise (settled, already finalized, a release of a hold
    /// that expired) is done and dropped. The authority also does this by itself after the
    /// next operation the ledger answers.
    fn retry_owed<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let auth = &self.inner;
        let owed = py.detach(|| auth.retry_owed());
        owed.iter().map(|o| json_of(py, o)).collect()
    }

    /// Extends a reservation by id from its current expiry; returns the updated reservation.
    #[pyo3(signature = (reservation_id, by_ms, *, idempotency_key=None))]
    fn extend(
        slf: &Bound<'_, Self>,
        reservation_id: &Bound<'_, PyAny>,
        by_ms: &Bound<'_, PyAny>,
        idempotency_key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Reservation> {
        let py = slf.py();
        let id: String = arg(reservation_id, "reservation_id").py(py)?;
        let req = extend_request(by_ms, idempotency_key).py(py)?;
        let auth = &slf.get().inner;
        let r = py.detach(|| auth.extend(&id, &req)).py(py)?;
        Ok(Reservation::new(slf, r))
    }

    /// A reservation by id (a handle that can commit, release or extend it).
    fn reservation(
        slf: &Bound<'_, Self>,
        reservation_id: &Bound<'_, PyAny>,
    ) -> PyResult<Reservation> {
        let py = slf.py();
        let id: String = arg(reservation_id, "reservation_id").py(py)?;
        let auth = &slf.get().inner;
        let r = py.detach(|| auth.reservation(&id)).py(py)?;
        Ok(Reservation::new(slf, r))
    }

    /// The reservation a `reserve` with this idempotency key made, as it stands now; `None`
    /// when no reserve used the key or its answer was a denial (one lookup, however long the
    /// ledger's history).
    fn reservation_by_key(
        slf: &Bound<'_, Self>,
        idempotency_key: &Bound<'_, PyAny>,
    ) -> PyResult<Option<Reservation>> {
        let py = slf.py();
        let key: String = arg(idempotency_key, "idempotency_key").py(py)?;
        let auth = &slf.get().inner;
        let r = py.detach(|| auth.reservation_by_key(&key)).py(py)?;
        Ok(r.map(|r| Reservation::new(slf, r)))
    }

    /// An approval request by id, as stored in the ledger (its JSON form, call included).
    fn approval<'py>(
        &self,
        py: Python<'py>,
        request_id: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id: String = arg(request_id, "request_id").py(py)?;
        let auth = &self.inner;
        let request = py.detach(|| auth.approval(&id)).py(py)?;
        json_of(py, &request)
    }

    /// Approval requests, optionally with one status (`PENDING`, `GRANTED`, ...), oldest first.
    #[pyo3(signature = (status=None))]
    fn approvals<'py>(
        &self,
        py: Python<'py>,
        status: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Vec<Bound<'py, PyAny>>> {
        let status: Option<core::ApprovalStatus> = opt(status, "status").py(py)?;
        let auth = &self.inner;
        let list = py.detach(|| auth.approvals(status)).py(py)?;
        list.iter().map(|r| json_of(py, r)).collect()
    }

    /// Records an approver's signed answer (`{"grant": {...}}`, `{"deny": {...}}` or
    /// `"pending"`, as `cycles approve` writes it); the signature must verify against a key of
    /// the policy. Returns the request as stored afterwards.
    fn record_approval<'py>(
        &self,
        py: Python<'py>,
        request_id: &Bound<'py, PyAny>,
        response: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let id: String = arg(request_id, "request_id").py(py)?;
        let response: core::ApprovalResponse = arg(response, "response").py(py)?;
        let auth = &self.inner;
        let request = py.detach(|| auth.record_approval(&id, &response)).py(py)?;
        json_of(py, &request)
    }

    /// Charges usage that already happened, without a reservation.
    #[pyo3(signature = (tool, args=None, *, subject, actual, kind=None, tags=None,
        overage_policy=None, idempotency_key=None))]
    fn event(
        &self,
        py: Python<'_>,
        tool: &Bound<'_, PyAny>,
        args: Option<&Bound<'_, PyAny>>,
        subject: &Bound<'_, PyAny>,
        actual: &Bound<'_, PyAny>,
        kind: Option<&Bound<'_, PyAny>>,
        tags: Option<&Bound<'_, PyAny>>,
        overage_policy: Option<&Bound<'_, PyAny>>,
        idempotency_key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<EventResult> {
        let req = (|| {
            Ok::<_, CoreError>(core::EventRequest {
                subject: arg(subject, "subject")?,
                call: tool_call(tool, args, kind, tags)?,
                actual: amounts(Some(actual), "actual")?,
                overage_policy: opt(overage_policy, "overage_policy")?,
                idempotency_key: opt(idempotency_key, "idempotency_key")?,
            })
        })()
        .py(py)?;
        let auth = &self.inner;
        py.detach(|| auth.event(&req)).py(py).map(EventResult)
    }

    /// Creates or changes a budget (spending, holds and debt are kept); recorded in the audit.
    #[pyo3(signature = (scope, unit, allocated, *, overdraft_limit=None, status=None))]
    fn set_budget(
        &self,
        py: Python<'_>,
        scope: &Bound<'_, PyAny>,
        unit: &Bound<'_, PyAny>,
        allocated: &Bound<'_, PyAny>,
        overdraft_limit: Option<&Bound<'_, PyAny>>,
        status: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Balance> {
        let spec = (|| {
            Ok::<_, CoreError>(core::BudgetSpec {
                scope: arg(scope, "scope")?,
                unit: arg(unit, "unit")?,
                allocated: arg(allocated, "allocated")?,
                overdraft_limit: opt(overdraft_limit, "overdraft_limit")?.unwrap_or(0),
                status: opt(status, "status")?.unwrap_or_default(),
            })
        })()
        .py(py)?;
        let auth = &self.inner;
        py.detach(|| auth.set_budget(&spec)).py(py).map(Balance)
    }

    /// Balances of every budget, or of `scope` and the scopes below it.
    #[pyo3(signature = (scope=None))]
    fn balances<'py>(
        &self,
        py: Python<'py>,
        scope: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<Balance>> {
        let scope: Option<String> = opt(scope, "scope").py(py)?;
        let auth = &self.inner;
        let b = py.detach(|| auth.balances(scope.as_deref())).py(py)?;
        Ok(b.into_iter().map(Balance).collect())
    }

    /// Expires every reservation past its expiry plus grace; returns how many.
    fn sweep_expired(&self, py: Python<'_>) -> PyResult<usize> {
        let auth = &self.inner;
        py.detach(|| auth.sweep_expired()).py(py)
    }

    /// Audit records in chain order, filtered by scope (and the scopes below it), kinds,
    /// time range `[since_ms, until_ms)` and sequence.
    #[pyo3(signature = (*, scope=None, kinds=None, since_ms=None, until_ms=None, after_seq=None, limit=None))]
    fn audit(
        &self,
        py: Python<'_>,
        scope: Option<&Bound<'_, PyAny>>,
        kinds: Option<&Bound<'_, PyAny>>,
        since_ms: Option<&Bound<'_, PyAny>>,
        until_ms: Option<&Bound<'_, PyAny>>,
        after_seq: Option<&Bound<'_, PyAny>>,
        limit: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Vec<AuditRecord>> {
        let query = (|| {
            Ok::<_, CoreError>(core::AuditQuery {
                scope: opt(scope, "scope")?,
                kinds: opt(kinds, "kinds")?.unwrap_or_default(),
                since_ms: opt(since_ms, "since_ms")?,
                until_ms: opt(until_ms, "until_ms")?,
                after_seq: opt(after_seq, "after_seq")?,
                limit: opt(limit, "limit")?,
            })
        })()
        .py(py)?;
        let auth = &self.inner;
        let records = py.detach(|| auth.audit(&query)).py(py)?;
        Ok(records.into_iter().map(AuditRecord).collect())
    }

    /// Walks the whole audit chain; the report names the first broken record. `anchors` are
    /// `SEQ:HASH` strings from `audit_anchor()`, taken earlier and kept outside the ledger:
    /// each anchored record must still be in the chain with that hash (removed last records
    /// and a rebuilt chain are reported as broken).
    #[pyo3(signature = (anchors=None))]
    fn verify(&self, py: Python<'_>, anchors: Option<Vec<String>>) -> PyResult<VerifyReport> {
        let anchors = anchors
            .unwrap_or_default()
            .iter()
            .map(|a| a.parse::<core::AuditAnchor>())
            .collect::<Result<Vec<_>, _>>()
            .py(py)?;
        let auth = &self.inner;
        py.detach(|| auth.verify_with_anchors(&anchors))
            .py(py)
            .map(VerifyReport)
    }

    /// The head of the audit chain as `SEQ:HASH`, to keep outside the ledger and pass to
    /// `verify(anchors=...)` later; `None` while the trail is empty.
    fn audit_anchor(&self, py: Python<'_>) -> PyResult<Option<String>> {
        let auth = &self.inner;
        py.detach(|| auth.audit_anchor())
            .py(py)
            .map(|a| a.map(|a| a.to_string()))
    }

    /// Writes the audit trail as JSON Lines to `path`; returns how many records.
    fn export_jsonl(&self, py: Python<'_>, path: std::path::PathBuf) -> PyResult<usize> {
        let auth = &self.inner;
        py.detach(|| -> Result<usize, CoreError> {
            let file = std::fs::File::create(&path)
                .map_err(|e| CoreError::invalid("path", format!("{}: {e}", path.display())))?;
            let mut out = std::io::BufWriter::new(file);
            let n = auth.export_jsonl(&core::AuditQuery::default(), &mut out)?;
            std::io::Write::flush(&mut out).map_err(|e| {
                CoreError::LedgerUnavailable(format!("export {}: {e}", path.display()))
            })?;
            Ok(n)
        })
        .py(py)
    }

    /// The current time on the authority's clock (ms since the epoch).
    fn now_ms(&self) -> i64 {
        self.inner.now_ms()
    }

    /// The policy in force, in its JSON form.
    fn policy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = serde_json::to_value(self.inner.policy().policy())
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        to_py(py, &v)
    }

    /// How the policy rates a call before any budget (tier, rules, risk points, a denial by
    /// the policy itself, whether approval is needed), as a dict. Reads no ledger and records
    /// nothing: for writing and testing policies; `decide` is the call that counts.
    #[pyo3(signature = (tool, args=None, *, scope=None, kind=None, tags=None))]
    fn explain<'py>(
        &self,
        py: Python<'py>,
        tool: &Bound<'py, PyAny>,
        args: Option<&Bound<'py, PyAny>>,
        scope: Option<&str>,
        kind: Option<&Bound<'py, PyAny>>,
        tags: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let explained = tool_call(tool, args, kind, tags)
            .and_then(|call| self.inner.policy().explain(&call, scope))
            .py(py)?;
        let v = serde_json::to_value(&explained)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        to_py(py, &v)
    }

    /// `decide` in a worker thread: awaiting it never blocks the event loop.
    #[pyo3(signature = (tool, args=None, *, subject, estimate=None, kind=None, tags=None))]
    fn adecide<'py>(
        slf: &Bound<'py, Self>,
        tool: &Bound<'py, PyAny>,
        args: Option<&Bound<'py, PyAny>>,
        subject: &Bound<'py, PyAny>,
        estimate: Option<&Bound<'py, PyAny>>,
        kind: Option<&Bound<'py, PyAny>>,
        tags: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let kw = PyDict::new(py);
        kw.set_item("subject", subject)?;
        set_opt(&kw, "estimate", estimate)?;
        set_opt(&kw, "kind", kind)?;
        set_opt(&kw, "tags", tags)?;
        to_thread(slf, "decide", tool, args, &kw)
    }

    /// `reserve` in a worker thread: awaiting it never blocks the event loop.
    #[pyo3(signature = (tool, args=None, *, subject, estimate=None, kind=None, tags=None,
        ttl_ms=None, grace_period_ms=None, overage_policy=None, idempotency_key=None, grant=None))]
    fn areserve<'py>(
        slf: &Bound<'py, Self>,
        tool: &Bound<'py, PyAny>,
        args: Option<&Bound<'py, PyAny>>,
        subject: &Bound<'py, PyAny>,
        estimate: Option<&Bound<'py, PyAny>>,
        kind: Option<&Bound<'py, PyAny>>,
        tags: Option<&Bound<'py, PyAny>>,
        ttl_ms: Option<&Bound<'py, PyAny>>,
        grace_period_ms: Option<&Bound<'py, PyAny>>,
        overage_policy: Option<&Bound<'py, PyAny>>,
        idempotency_key: Option<&Bound<'py, PyAny>>,
        grant: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let kw = PyDict::new(py);
        kw.set_item("subject", subject)?;
        set_opt(&kw, "estimate", estimate)?;
        set_opt(&kw, "kind", kind)?;
        set_opt(&kw, "tags", tags)?;
        set_opt(&kw, "ttl_ms", ttl_ms)?;
        set_opt(&kw, "grace_period_ms", grace_period_ms)?;
        set_opt(&kw, "overage_policy", overage_policy)?;
        set_opt(&kw, "idempotency_key", idempotency_key)?;
        set_opt(&kw, "grant", grant)?;
        to_thread(slf, "reserve", tool, args, &kw)
    }

    /// A decorator that gates a sync or async function: its call arguments become the
    /// classified `args`, a DENY raises before the body runs, and the body's ending settles
    /// the reservation (returned `COMPLETED`, raised `FAILED`, cancelled `INTERRUPTED`). See
    /// `cycles.guard` for the options.
    #[pyo3(signature = (tool=None, *, subject, estimate=None, kind=None, tags=None, map_args=None, actual=None))]
    fn guard<'py>(
        slf: &Bound<'py, Self>,
        tool: Option<&Bound<'py, PyAny>>,
        subject: &Bound<'py, PyAny>,
        estimate: Option<&Bound<'py, PyAny>>,
        kind: Option<&Bound<'py, PyAny>>,
        tags: Option<&Bound<'py, PyAny>>,
        map_args: Option<&Bound<'py, PyAny>>,
        actual: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let py = slf.py();
        let kw = PyDict::new(py);
        kw.set_item("tool", tool)?;
        kw.set_item("subject", subject)?;
        kw.set_item("estimate", estimate)?;
        kw.set_item("kind", kind)?;
        kw.set_item("tags", tags)?;
        kw.set_item("map_args", map_args)?;
        kw.set_item("actual", actual)?;
        py.import("cycles._guard")?
            .getattr("guard")?
            .call((slf,), Some(&kw))
    }

    fn __repr__(&self) -> String {
        format!("Authority({})", self.inner.ledger().describe())
    }
}

/// The core's JSON form of `v` as Python values.
fn json_of<'py, T: serde::Serialize>(py: Python<'py>, v: &T) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json::to_value(v)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    to_py(py, &json)
}

/// Benchmark hook, not API: runs `op` (`decide` or `reserve+commit`) on the core directly,
/// `batches` times `batch` calls with the request built once and the GIL released for the
/// whole loop, and returns each batch's mean in ns per call. `benches/python/bench.py` sets
/// it beside the same calls made through the binding, so the difference is the binding's own
/// cost, measured on the same authority in the same minute.
#[pyfunction]
#[pyo3(signature = (authority, op, tool, args, subject, batches, batch))]
pub(crate) fn _bench_core(
    py: Python<'_>,
    authority: PyRef<'_, Authority>,
    op: &str,
    tool: &Bound<'_, PyAny>,
    args: &Bound<'_, PyAny>,
    subject: &Bound<'_, PyAny>,
    batches: usize,
    batch: usize,
) -> PyResult<Vec<f64>> {
    let subject: core::Subject = arg(subject, "subject").py(py)?;
    let call = tool_call(tool, Some(args), None, None).py(py)?;
    let decide = core::DecideRequest::new(subject.clone(), call.clone());
    let reserve = core::ReserveRequest::new(subject, call);
    let commit = core::CommitRequest::default();
    let auth = &authority.inner;
    let run: Box<dyn Fn() -> Result<(), CoreError> + Send + Sync> = match op {
        "decide" => Box::new(move || auth.decide(&decide).map(drop)),
        "reserve+commit" => Box::new(move || {
            let r = auth.reserve(&reserve)?;
            auth.commit(&r.reservation_id, &commit).map(drop)
        }),
        other => {
            return Err(CoreError::invalid(
                "op",
                format!("{other:?} is not decide or reserve+commit"),
            ))
            .py(py);
        }
    };
    py.detach(|| {
        let mut means = Vec::with_capacity(batches);
        for _ in 0..batches {
            let start = std::time::Instant::now();
            for _ in 0..batch {
                run()?;
            }
            means.push(start.elapsed().as_nanos() as f64 / batch.max(1) as f64);
        }
        Ok(means)
    })
    .py(py)
}

fn set_opt(kw: &Bound<'_, PyDict>, key: &str, v: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
    if let Some(v) = v {
        kw.set_item(key, v)?;
    }
    Ok(())
}

/// `asyncio.to_thread(self.<method>, tool, args, **kw)`: a coroutine to await.
fn to_thread<'py>(
    slf: &Bound<'py, Authority>,
    method: &str,
    tool: &Bound<'py, PyAny>,
    args: Option<&Bound<'py, PyAny>>,
    kw: &Bound<'py, PyDict>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = slf.py();
    let f = slf.getattr(method)?;
    let args = args.cloned().unwrap_or_else(|| py.None().into_bound(py));
    py.import("asyncio")?
        .getattr("to_thread")?
        .call((f, tool, args), Some(kw))
}

fn release_request(
    reason: Option<&Bound<'_, PyAny>>,
    idempotency_key: Option<&Bound<'_, PyAny>>,
) -> Result<core::ReleaseRequest, CoreError> {
    Ok(core::ReleaseRequest {
        reason: opt(reason, "reason")?,
        idempotency_key: opt(idempotency_key, "idempotency_key")?,
    })
}

fn extend_request(
    by_ms: &Bound<'_, PyAny>,
    idempotency_key: Option<&Bound<'_, PyAny>>,
) -> Result<core::ExtendRequest, CoreError> {
    Ok(core::ExtendRequest {
        extend_by_ms: arg(by_ms, "by_ms")?,
        idempotency_key: opt(idempotency_key, "idempotency_key")?,
    })
}

/// The actual amounts and the call that ran, as a commit takes them.
type Actual<'a, 'py> = (Option<&'a Bound<'py, PyAny>>, Option<&'a Bound<'py, PyAny>>);

fn commit_core(
    py: Python<'_>,
    auth: &core::Authority,
    id: &str,
    (actual, ran): Actual<'_, '_>,
    charge_if_expired: bool,
    idempotency_key: Option<&Bound<'_, PyAny>>,
) -> PyResult<CommitResult> {
    let req = (|| {
        Ok::<_, CoreError>(core::CommitRequest {
            actual: amounts(actual, "actual")?,
            ran: ran_call(ran)?,
            charge_if_expired,
            idempotency_key: opt(idempotency_key, "idempotency_key")?,
        })
    })()
    .py(py)?;
    py.detach(|| auth.commit(id, &req)).py(py).map(CommitResult)
}

/// A `settle` request: the outcome is the protocol string, read by the core's serde (an
/// unknown one is `INVALID_REQUEST`); whether it is charged is the core's decision.
fn settle_request(
    outcome: &Bound<'_, PyAny>,
    (actual, ran): Actual<'_, '_>,
    reason: Option<&Bound<'_, PyAny>>,
    idempotency_key: Option<&Bound<'_, PyAny>>,
) -> Result<core::SettleRequest, CoreError> {
    Ok(core::SettleRequest {
        outcome: arg(outcome, "outcome")?,
        actual: amounts(actual, "actual")?,
        ran: ran_call(ran)?,
        reason: opt(reason, "reason")?,
        idempotency_key: opt(idempotency_key, "idempotency_key")?,
    })
}

fn settle_core(
    py: Python<'_>,
    auth: &core::Authority,
    id: &str,
    outcome: &Bound<'_, PyAny>,
    actual: Actual<'_, '_>,
    reason: Option<&Bound<'_, PyAny>>,
    idempotency_key: Option<&Bound<'_, PyAny>>,
) -> PyResult<core::Settlement> {
    let req = settle_request(outcome, actual, reason, idempotency_key).py(py)?;
    py.detach(|| auth.settle(id, &req)).py(py)
}

/// The authority now owes a settlement: `cycles._owed` keeps it alive (a strong reference,
/// let go once it owes nothing) and retries it at interpreter exit (it only calls its
/// `retry_owed`).
fn note_owed(authority: &Bound<'_, Authority>) -> PyResult<()> {
    authority
        .py()
        .import("cycles._owed")?
        .getattr("_note_owed")?
        .call1((authority,))
        .map(drop)
}

/// A settlement as the Python result it was: `CommitResult` or `ReleaseResult`.
fn settlement_py(py: Python<'_>, s: core::Settlement) -> PyResult<Bound<'_, PyAny>> {
    match s {
        core::Settlement::Committed(c) => Ok(Bound::new(py, CommitResult(c))?.into_any()),
        core::Settlement::Released(r) => Ok(Bound::new(py, ReleaseResult(r))?.into_any()),
    }
}

/// A reservation: authority held for one call until it is committed, released or expires.
///
/// A context manager: commit (or settle) inside the block; leaving it normally without that
/// settles it `COMPLETED` (charged what was held: the block ran its call), leaving it by an
/// exception settles it (`FAILED` for an `Exception`, `INTERRUPTED` for a cancellation, Ctrl-C
/// or `SystemExit`; `COMPLETED` when the block had tried to commit, e.g. with amounts the core
/// refused). Attributes reflect what this handle has done (`status`, `expires_at_ms`,
/// `charged`); `Authority.reservation(id)` reads the ledger's current state.
#[pyclass(frozen, module = "cycles")]
pub struct Reservation {
    auth: core::Authority,
    // The Python authority it came from: told when a settlement of this handle is owed.
    owner: Py<Authority>,
    id: String,
    // The latest state this handle knows. Never held across a core call: a thread waiting on
    // it with the GIL could otherwise deadlock with one that needs the GIL back.
    state: Mutex<core::Reservation>,
    // Set when code holding this handle tried to commit it (or settle it COMPLETED): the call
    // ran. If that attempt failed (amounts the core refuses), the block's exit must not settle
    // the call as failed and let it go free.
    completion_attempted: AtomicBool,
    // Its settlement is owed (`settle_or_owe` answered `None`): the authority makes it; the
    // block's exit must not settle it again.
    owed: AtomicBool,
}

impl Reservation {
    fn new(owner: &Bound<'_, Authority>, r: core::Reservation) -> Self {
        Reservation {
            auth: owner.get().inner.clone(),
            owner: owner.clone().unbind(),
            id: r.reservation_id.clone(),
            state: Mutex::new(r),
            completion_attempted: AtomicBool::new(false),
            owed: AtomicBool::new(false),
        }
    }

    /// `settle_or_owe` of the core, for this reservation: a settlement made updates the
    /// handle; an owed one marks it and tells the owner's exit hook.
    fn settle_or_owe_core(
        &self,
        py: Python<'_>,
        req: &core::SettleRequest,
    ) -> Result<Option<core::Settlement>, CoreError> {
        let auth = &self.auth;
        let s = py.detach(|| auth.settle_or_owe(&self.id, req))?;
        match &s {
            Some(s) => self.settled(s),
            None => self.owed.store(true, Ordering::Relaxed),
        }
        Ok(s)
    }

    fn note_owed(&self, py: Python<'_>) -> PyResult<()> {
        note_owed(self.owner.bind(py))
    }

    /// A block's exit owes its settlement: tell the exit hook and say so on the `cycles`
    /// logger, as the guard does.
    fn owed_at_exit(&self, py: Python<'_>, req: &core::SettleRequest) -> PyResult<()> {
        self.note_owed(py)?;
        py.import("cycles._owed")?
            .getattr("_log_owed")?
            .call1((self.id.as_str(), json_of(py, &req.outcome)?))
            .map(drop)
    }

    fn snapshot(&self) -> core::Reservation {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn update(&self, f: impl FnOnce(&mut core::Reservation)) {
        f(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn settled(&self, s: &core::Settlement) {
        match s {
            core::Settlement::Committed(c) => self.finished(c.status, c.charged.clone()),
            core::Settlement::Released(_) => {
                self.finished(core::ReservationStatus::Released, Vec::new())
            }
        }
    }

    fn finished(&self, status: core::ReservationStatus, charged: Vec<core::Amount>) {
        let now = self.auth.now_ms();
        self.update(|r| {
            r.status = status;
            r.charged = charged;
            r.finalized_at_ms = Some(now);
        })
    }
}

#[pymethods]
impl Reservation {
    /// Its id (`rsv_...`).
    #[getter]
    fn reservation_id(&self) -> &str {
        &self.id
    }
    /// `ACTIVE`, `COMMITTED`, `RELEASED` or `EXPIRED`, as this handle last saw it.
    #[getter]
    fn status(&self) -> &'static str {
        self.snapshot().status.as_str()
    }
    /// The tool reserved for.
    #[getter]
    fn tool(&self) -> String {
        self.snapshot().action.name
    }
    /// The subject, as a dict.
    #[getter]
    fn subject<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = serde_json::to_value(self.snapshot().subject)
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        to_py(py, &v)
    }
    /// The call's tier.
    #[getter]
    fn tier(&self) -> u8 {
        self.snapshot().tier.get()
    }
    /// SHA-256 of the canonical call.
    #[getter]
    fn call_digest(&self) -> String {
        self.snapshot().call_digest
    }
    /// The decision that allowed it.
    #[getter]
    fn decision(&self) -> Decision {
        Decision(self.snapshot().decision)
    }
    /// What is held, `{unit: amount}` (on every budgeted scope of the subject).
    #[getter]
    fn reserved<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        amount_map(py, &self.snapshot().reserved())
    }
    /// The budgeted scopes holding each unit, `{unit: (scope, ...)}`.
    #[getter]
    fn scopes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        for h in self.snapshot().holds {
            d.set_item(h.unit.as_str(), PyTuple::new(py, h.scopes)?)?;
        }
        Ok(d)
    }
    /// What was charged, once committed, `{unit: amount}`.
    #[getter]
    fn charged<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        amount_map(py, &self.snapshot().charged)
    }
    /// Ledger time of creation (ms).
    #[getter]
    fn created_at_ms(&self) -> i64 {
        self.snapshot().created_at_ms
    }
    /// Ledger time it expires (ms).
    #[getter]
    fn expires_at_ms(&self) -> i64 {
        self.snapshot().expires_at_ms
    }
    /// Commit still accepted this long after expiry.
    #[getter]
    fn grace_ms(&self) -> i64 {
        self.snapshot().grace_ms
    }
    /// Times extended.
    #[getter]
    fn extensions(&self) -> u32 {
        self.snapshot().extensions
    }
    /// What a commit does with overage.
    #[getter]
    fn overage_policy(&self) -> String {
        serde_json::to_value(self.snapshot().overage_policy)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Charges the actual amounts (units not listed are charged as held) and returns the rest.
    /// `ran=`: the call that actually ran, as in `Authority.commit`.
    /// `charge_if_expired=True`: as in `Authority.commit`.
    #[pyo3(signature = (actual=None, *, ran=None, charge_if_expired=false, idempotency_key=None))]
    fn commit(
        &self,
        py: Python<'_>,
        actual: Option<&Bound<'_, PyAny>>,
        ran: Option<&Bound<'_, PyAny>>,
        charge_if_expired: bool,
        idempotency_key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<CommitResult> {
        self.completion_attempted.store(true, Ordering::Relaxed);
        let res = commit_core(
            py,
            &self.auth,
            &self.id,
            (actual, ran),
            charge_if_expired,
            idempotency_key,
        )?;
        self.finished(res.0.status, res.0.charged.clone());
        Ok(res)
    }

    /// Returns the hold without charge.
    #[pyo3(signature = (reason=None, *, idempotency_key=None))]
    fn release(
        &self,
        py: Python<'_>,
        reason: Option<&Bound<'_, PyAny>>,
        idempotency_key: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<ReleaseResult> {
        let req = release_request(reason, idempotency_key).py(py)?;
        let auth = &self.auth;
        let res = py.detach(|| auth.release(&self.id, &req)).py(py)?;
        self.finished(core::ReservationStatus::Released, Vec::new());
        Ok(ReleaseResult(res))
    }

    /// Finishes the reservation by how its call ended, as in `Authority.settle`: returns the
    /// `CommitResult` or the `ReleaseResult` it was.
    #[pyo3(signature = (outcome, actual=None, *, ran=None, reason=None, idempotency_key=None))]
    fn settle<'py>(
        &self,
        py: Python<'py>,
        outcome: &Bound<'py, PyAny>,
        actual: Option<&Bound<'py, PyAny>>,
        ran: Option<&Bound<'py, PyAny>>,
        reason: Option<&Bound<'py, PyAny>>,
        idempotency_key: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if outcome.extract::<String>().is_ok_and(|o| o == "COMPLETED") {
            self.completion_attempted.store(true, Ordering::Relaxed);
        }
        let s = settle_core(
            py,
            &self.auth,
            &self.id,
            outcome,
            (actual, ran),
            reason,
            idempotency_key,
        )?;
        self.settled(&s);
        settlement_py(py, s)
    }

    /// `settle`, except when the ledger refuses it as unavailable: the settlement is then kept
    /// owed by the authority (made after the next operation the ledger answers, or on
    /// `Authority.retry_owed`) and `None` is returned, as in `Authority.settle_or_owe`. This
    /// handle's `status` stays `ACTIVE` meanwhile; its block's exit does not settle it again.
    #[pyo3(signature = (outcome, actual=None, *, ran=None, reason=None, idempotency_key=None))]
    fn settle_or_owe<'py>(
        &self,
        py: Python<'py>,
        outcome: &Bound<'py, PyAny>,
        actual: Option<&Bound<'py, PyAny>>,
        ran: Option<&Bound<'py, PyAny>>,
        reason: Option<&Bound<'py, PyAny>>,
        idempotency_key: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if outcome.extract::<String>().is_ok_and(|o| o == "COMPLETED") {
            self.completion_attempted.store(true, Ordering::Relaxed);
        }
        let req = settle_request(outcome, (actual, ran), reason, idempotency_key).py(py)?;
        match self.settle_or_owe_core(py, &req).py(py)? {
            Some(s) => settlement_py(py, s).map(Some),
            None => {
                self.note_owed(py)?;
                Ok(None)
            }
        }
    }

    /// Pushes the expiry `by_ms` further from the current expiry (at most 10 times).
    #[pyo3(signature = (by_ms, *, idempotency_key=None))]
    fn extend<'py>(
        slf: &Bound<'py, Self>,
        by_ms: &Bound<'py, PyAny>,
        idempotency_key: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, Self>> {
        let py = slf.py();
        let this = slf.get();
        let req = extend_request(by_ms, idempotency_key).py(py)?;
        let auth = &this.auth;
        let r = py.detach(|| auth.extend(&this.id, &req)).py(py)?;
        this.update(|s| *s = r);
        Ok(slf.clone())
    }

    /// The core's JSON form of this handle's latest state.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = serde_json::to_value(self.snapshot())
            .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
        to_py(py, &v)
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Settles the reservation by how the block ended, unless the block committed, released
    /// or settled it itself. A block left normally ran its call: `COMPLETED`, charged what was
    /// held (as a database connection's context manager commits on a clean exit; release
    /// explicitly when the call did not run). A block that raised: an `Exception` is a failed
    /// call (`FAILED`: released, or charged what was held under `[defaults] on_failure =
    /// "CHARGE"`), an interruption from outside (a cancellation, Ctrl-C, `SystemExit`: not an
    /// `Exception`) is `INTERRUPTED` (charged what was held: it may have acted); the core
    /// decides what each costs. The settlement is `settle_or_owe`: when the ledger is
    /// unavailable it is owed (a warning on the `cycles` logger) and made when the ledger
    /// answers again. After an exception, any other settle error is ignored: the block's
    /// exception propagates.
    #[pyo3(signature = (exc_type=None, _exc_value=None, _traceback=None))]
    fn __exit__(
        &self,
        py: Python<'_>,
        exc_type: Option<&Bound<'_, PyType>>,
        _exc_value: Option<&Bound<'_, PyAny>>,
        _traceback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        if self.snapshot().status != core::ReservationStatus::Active
            || self.owed.load(Ordering::Relaxed)
        {
            return Ok(false);
        }
        let Some(t) = exc_type else {
            let req = core::SettleRequest::new(core::CallOutcome::Completed);
            return match self.settle_or_owe_core(py, &req) {
                Ok(Some(_)) => Ok(false),
                Ok(None) => {
                    self.owed_at_exit(py, &req)?;
                    Ok(false)
                }
                // Finalized through another handle: nothing is held any more.
                Err(CoreError::ReservationFinalized(_)) => Ok(false),
                Err(e) => Err(to_py_err(py, e)),
            };
        };
        // Translation only: which way the block ended, in the core's terms. A block that
        // tried to commit (and failed, e.g. amounts the core refused) had run its call.
        let outcome = if self.completion_attempted.load(Ordering::Relaxed) {
            core::CallOutcome::Completed
        } else if t.is_subclass_of::<pyo3::exceptions::PyException>()? {
            core::CallOutcome::Failed
        } else {
            core::CallOutcome::Interrupted
        };
        let reason = format!("exception: {}", t.name()?);
        let req = core::SettleRequest {
            reason: Some(reason.chars().take(256).collect()),
            ..core::SettleRequest::new(outcome)
        };
        // The block's exception propagates whatever the ledger says.
        if let Ok(None) = self.settle_or_owe_core(py, &req) {
            self.owed_at_exit(py, &req)?;
        }
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let r = self.snapshot();
        let reserved: Vec<String> = r
            .holds
            .iter()
            .map(|h| format!("{}={}", h.unit.as_str(), h.amount))
            .collect();
        format!(
            "Reservation({}, {}, tool={:?}, tier={}, reserved=[{}])",
            r.reservation_id,
            r.status.as_str(),
            r.action.name,
            r.tier.get(),
            reserved.join(", ")
        )
    }
}
