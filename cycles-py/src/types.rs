//! Frozen result objects: thin views over the core's structs.
//!
//! Each wraps the core value unchanged and converts a field to Python only when it is read;
//! `to_dict()` gives the core's JSON form (the one the fixtures and the other bindings use).

use cycles_core as core;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use serde::Serialize;

use crate::convert::to_py;

/// The core's JSON form of `v` as Python dicts and lists.
fn dict_of<'py, T: Serialize>(py: Python<'py>, v: &T) -> PyResult<Bound<'py, PyAny>> {
    let json = serde_json::to_value(v)
        .map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    to_py(py, &json)
}

/// `{unit: amount}` for a list of amounts (units are unique in every core list).
pub(crate) fn amount_map<'py>(
    py: Python<'py>,
    amounts: &[core::Amount],
) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for a in amounts {
        d.set_item(a.unit.as_str(), a.amount)?;
    }
    Ok(d)
}

/// `{'RISK_POINTS': 20}`: a list of amounts as the `{unit: amount}` dict the getters return
/// prints in Python, for reprs.
fn amounts_repr(amounts: &[core::Amount]) -> String {
    let items: Vec<String> = amounts
        .iter()
        .map(|a| format!("'{}': {}", a.unit.as_str(), a.amount))
        .collect();
    format!("{{{}}}", items.join(", "))
}

fn balances_tuple<'py>(py: Python<'py>, b: &[core::Balance]) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, b.iter().map(|b| Balance(b.clone())))
}

fn str_tuple<'py>(py: Python<'py>, v: &[String]) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(py, v)
}

/// The gate's answer for one call.
#[pyclass(frozen, eq, module = "cycles")]
#[derive(Debug, Clone, PartialEq)]
pub struct Decision(pub core::Decision);

impl From<core::Decision> for Decision {
    fn from(d: core::Decision) -> Self {
        Decision(d)
    }
}

#[pymethods]
impl Decision {
    /// `ALLOW`, `ALLOW_WITH_CAPS` or `DENY`.
    #[getter]
    fn decision(&self) -> &'static str {
        self.0.decision.as_str()
    }
    /// Why, on DENY.
    #[getter]
    fn reason_code(&self) -> Option<&'static str> {
        self.0.reason_code.map(|r| r.as_str())
    }
    /// ALLOW or ALLOW_WITH_CAPS.
    #[getter]
    fn allowed(&self) -> bool {
        self.0.is_allowed()
    }
    /// The call's tier, 0 to 4.
    #[getter]
    fn tier(&self) -> u8 {
        self.0.tier.get()
    }
    /// RISK_POINTS the call costs.
    #[getter]
    fn risk_points(&self) -> i64 {
        self.0.risk_points
    }
    /// Ids of the rules that determined the tier and the decision.
    #[getter]
    fn rules<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        str_tuple(py, &self.0.rules)
    }
    /// Caps, only on ALLOW_WITH_CAPS.
    #[getter]
    fn caps(&self) -> Option<Caps> {
        self.0.caps.clone().map(Caps)
    }
    /// The scope that caused a denial.
    #[getter]
    fn scope(&self) -> Option<&str> {
        self.0.scope.as_deref()
    }
    /// Balances of the budgeted scopes at decision time.
    #[getter]
    fn balances<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        balances_tuple(py, &self.0.balances)
    }
    /// When a retry may succeed (cooldowns).
    #[getter]
    fn retry_after_ms(&self) -> Option<i64> {
        self.0.retry_after_ms
    }
    /// The approval request to present to an approver (APPROVAL_REQUIRED).
    #[getter]
    fn approval_request_id(&self) -> Option<&str> {
        self.0.approval_request_id.as_deref()
    }
    /// Why a presented grant was rejected (`APPROVAL_INVALID` only): `bad_signature`, ...
    #[getter]
    fn approval_invalid_reason(&self) -> Option<&'static str> {
        self.0.approval_invalid_reason.map(|r| r.as_str())
    }
    /// Human-readable detail.
    #[getter]
    fn message(&self) -> Option<&str> {
        self.0.message.as_deref()
    }
    /// The core's JSON form.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        dict_of(py, &self.0)
    }
    fn __bool__(&self) -> bool {
        self.0.is_allowed()
    }
    fn __repr__(&self) -> String {
        match self.0.reason_code {
            Some(r) => format!(
                "Decision({}, reason_code={}, tier={}, risk_points={})",
                self.0.decision.as_str(),
                r.as_str(),
                self.0.tier.get(),
                self.0.risk_points
            ),
            None => format!(
                "Decision({}, tier={}, risk_points={})",
                self.0.decision.as_str(),
                self.0.tier.get(),
                self.0.risk_points
            ),
        }
    }
}

/// Limits returned with ALLOW_WITH_CAPS (the denylist and cooldown are enforced by the core).
#[pyclass(frozen, eq, module = "cycles")]
#[derive(Debug, Clone, PartialEq)]
pub struct Caps(pub core::Caps);

#[pymethods]
impl Caps {
    /// Most tokens the caller should spend.
    #[getter]
    fn max_tokens(&self) -> Option<i64> {
        self.0.max_tokens
    }
    /// Steps the agent has left.
    #[getter]
    fn max_steps_remaining(&self) -> Option<i64> {
        self.0.max_steps_remaining
    }
    /// Only these tools may run.
    #[getter]
    fn tool_allowlist<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.0
            .tool_allowlist
            .as_deref()
            .map(|v| str_tuple(py, v))
            .transpose()
    }
    /// These tools may not run.
    #[getter]
    fn tool_denylist<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyTuple>>> {
        self.0
            .tool_denylist
            .as_deref()
            .map(|v| str_tuple(py, v))
            .transpose()
    }
    /// Minimum pause between calls.
    #[getter]
    fn cooldown_ms(&self) -> Option<i64> {
        self.0.cooldown_ms
    }
    /// The core's JSON form.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        dict_of(py, &self.0)
    }
    fn __repr__(&self) -> String {
        format!("Caps({:?})", self.0)
    }
}

/// One budget's balance: `remaining = allocated - spent - reserved - debt`.
#[pyclass(frozen, eq, module = "cycles")]
#[derive(Debug, Clone, PartialEq)]
pub struct Balance(pub core::Balance);

#[pymethods]
impl Balance {
    /// The scope path, e.g. `tenant:acme/agent:bot`.
    #[getter]
    fn scope(&self) -> &str {
        &self.0.scope
    }
    /// The unit (`RISK_POINTS`, `USD_MICROCENTS`, `TOKENS`, `CREDITS`).
    #[getter]
    fn unit(&self) -> &'static str {
        self.0.unit.as_str()
    }
    /// What may be spent.
    #[getter]
    fn allocated(&self) -> i64 {
        self.0.allocated
    }
    /// What has been charged.
    #[getter]
    fn spent(&self) -> i64 {
        self.0.spent
    }
    /// What active reservations hold.
    #[getter]
    fn reserved(&self) -> i64 {
        self.0.reserved
    }
    /// Overdraft debt.
    #[getter]
    fn debt(&self) -> i64 {
        self.0.debt
    }
    /// `allocated - spent - reserved - debt`.
    #[getter]
    fn remaining(&self) -> i64 {
        self.0.remaining
    }
    /// Most debt allowed.
    #[getter]
    fn overdraft_limit(&self) -> i64 {
        self.0.overdraft_limit
    }
    /// Over its limit (capped commit or debt past the limit).
    #[getter]
    fn is_over_limit(&self) -> bool {
        self.0.is_over_limit
    }
    /// `ACTIVE`, `FROZEN` or `CLOSED`.
    #[getter]
    fn status(&self) -> &'static str {
        self.0.status.as_str()
    }
    /// The core's JSON form.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        dict_of(py, &self.0)
    }
    fn __repr__(&self) -> String {
        format!(
            "Balance({} {}: allocated={}, spent={}, reserved={}, debt={}, remaining={})",
            self.0.scope,
            self.0.unit.as_str(),
            self.0.allocated,
            self.0.spent,
            self.0.reserved,
            self.0.debt,
            self.0.remaining
        )
    }
}

/// The result of a commit.
#[pyclass(frozen, eq, module = "cycles")]
#[derive(Debug, Clone, PartialEq)]
pub struct CommitResult(pub core::CommitResult);

#[pymethods]
impl CommitResult {
    /// The reservation.
    #[getter]
    fn reservation_id(&self) -> &str {
        &self.0.reservation_id
    }
    /// `COMMITTED`, or `EXPIRED` when the call was charged after its reservation expired
    /// (`charge_if_expired=True`; `event_id` names the charge).
    #[getter]
    fn status(&self) -> &'static str {
        self.0.status.as_str()
    }
    /// The event that charged the call after its reservation expired, else `None`.
    #[getter]
    fn event_id(&self) -> Option<&str> {
        self.0.event_id.as_deref()
    }
    /// What was charged, `{unit: amount}`.
    #[getter]
    fn charged<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        amount_map(py, &self.0.charged)
    }
    /// What was returned, `{unit: amount}`.
    #[getter]
    fn released<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        amount_map(py, &self.0.released)
    }
    /// Overdraft debt created, `{unit: amount}` (non-zero units only).
    #[getter]
    fn debt_incurred<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        amount_map(py, &self.0.debt_incurred)
    }
    /// Balances of the scopes touched, after the commit.
    #[getter]
    fn balances<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        balances_tuple(py, &self.0.balances)
    }
    /// The core's JSON form.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        dict_of(py, &self.0)
    }
    fn __repr__(&self) -> String {
        format!(
            "CommitResult({}, charged={})",
            self.0.reservation_id,
            amounts_repr(&self.0.charged)
        )
    }
}

/// The result of a release.
#[pyclass(frozen, eq, module = "cycles")]
#[derive(Debug, Clone, PartialEq)]
pub struct ReleaseResult(pub core::ReleaseResult);

#[pymethods]
impl ReleaseResult {
    /// The reservation.
    #[getter]
    fn reservation_id(&self) -> &str {
        &self.0.reservation_id
    }
    /// `RELEASED`.
    #[getter]
    fn status(&self) -> &'static str {
        self.0.status.as_str()
    }
    /// What was returned, `{unit: amount}`.
    #[getter]
    fn released<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        amount_map(py, &self.0.released)
    }
    /// Balances after.
    #[getter]
    fn balances<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        balances_tuple(py, &self.0.balances)
    }
    /// The core's JSON form.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        dict_of(py, &self.0)
    }
    fn __repr__(&self) -> String {
        format!(
            "ReleaseResult({}, released={})",
            self.0.reservation_id,
            amounts_repr(&self.0.released)
        )
    }
}

/// The result of a direct charge.
#[pyclass(frozen, eq, module = "cycles")]
#[derive(Debug, Clone, PartialEq)]
pub struct EventResult(pub core::EventResult);

#[pymethods]
impl EventResult {
    /// The event id (`evt_...`).
    #[getter]
    fn event_id(&self) -> &str {
        &self.0.event_id
    }
    /// What was charged, `{unit: amount}`.
    #[getter]
    fn charged<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        amount_map(py, &self.0.charged)
    }
    /// Overdraft debt created, `{unit: amount}`.
    #[getter]
    fn debt_incurred<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        amount_map(py, &self.0.debt_incurred)
    }
    /// Balances after.
    #[getter]
    fn balances<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        balances_tuple(py, &self.0.balances)
    }
    /// The core's JSON form.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        dict_of(py, &self.0)
    }
    fn __repr__(&self) -> String {
        format!(
            "EventResult({}, charged={})",
            self.0.event_id,
            amounts_repr(&self.0.charged)
        )
    }
}

/// The outcome of walking the audit chain; truthy when intact.
#[pyclass(frozen, eq, module = "cycles")]
#[derive(Debug, Clone, PartialEq)]
pub struct VerifyReport(pub core::VerifyReport);

#[pymethods]
impl VerifyReport {
    /// True when every record is intact and linked.
    #[getter]
    fn ok(&self) -> bool {
        self.0.ok
    }
    /// Records checked.
    #[getter]
    fn records(&self) -> u64 {
        self.0.records
    }
    /// The hash of the last intact record.
    #[getter]
    fn head_hash(&self) -> &str {
        &self.0.head_hash
    }
    /// Sequence number of the first broken record.
    #[getter]
    fn first_broken_seq(&self) -> Option<u64> {
        self.0.first_broken.as_ref().map(|b| b.seq)
    }
    /// What is wrong with the first broken record.
    #[getter]
    fn first_broken_reason(&self) -> Option<&str> {
        self.0.first_broken.as_ref().map(|b| b.reason.as_str())
    }
    /// `(item, reason)` for each budget or active reservation whose stored state is not what
    /// the intact chain says (edited outside the gate); empty when they agree.
    #[getter]
    fn state_mismatches(&self) -> Vec<(String, String)> {
        self.0
            .state_mismatches
            .iter()
            .map(|m| (m.item.clone(), m.reason.clone()))
            .collect()
    }
    /// The core's JSON form.
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        dict_of(py, &self.0)
    }
    fn __bool__(&self) -> bool {
        self.0.ok
    }
    fn __repr__(&self) -> String {
        match &self.0.first_broken {
            None if self.0.state_mismatches.is_empty() => {
                format!("VerifyReport(ok, records={})", self.0.records)
            }
            None => format!(
                "VerifyReport(state differs from the chain: {} mismatches, first {}: {}, records={})",
                self.0.state_mismatches.len(),
                self.0.state_mismatches[0].item,
                self.0.state_mismatches[0].reason,
                self.0.records
            ),
            Some(b) => format!(
                "VerifyReport(broken at seq {}: {}, records={})",
                b.seq, b.reason, self.0.records
            ),
        }
    }
}

/// One record of the hash-chained audit trail (arguments appear only as their digest).
#[pyclass(frozen, eq, module = "cycles")]
#[derive(Debug, Clone, PartialEq)]
pub struct AuditRecord(pub core::AuditRecord);

#[pymethods]
impl AuditRecord {
    /// Position in the chain, from 1.
    #[getter]
    fn seq(&self) -> u64 {
        self.0.seq
    }
    /// Ledger time, ms since the epoch.
    #[getter]
    fn time_ms(&self) -> i64 {
        self.0.time_ms
    }
    /// What happened (`decide`, `denial`, `reserve`, `commit`, ...).
    #[getter]
    fn kind(&self) -> &'static str {
        self.0.kind.as_str()
    }
    /// Who, as a dict.
    #[getter]
    fn subject<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        self.0.subject.as_ref().map(|s| dict_of(py, s)).transpose()
    }
    /// The scopes concerned.
    #[getter]
    fn scopes<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        str_tuple(py, &self.0.scopes)
    }
    /// The tool's name.
    #[getter]
    fn tool(&self) -> Option<&str> {
        self.0.action.as_ref().map(|a| a.name.as_str())
    }
    /// SHA-256 of the canonical call.
    #[getter]
    fn call_digest(&self) -> Option<&str> {
        self.0.call_digest.as_deref()
    }
    /// The decision, for decide and denial records.
    #[getter]
    fn decision(&self) -> Option<&'static str> {
        self.0.decision.map(|d| d.as_str())
    }
    /// The reason code of a denial.
    #[getter]
    fn reason_code(&self) -> Option<&'static str> {
        self.0.reason_code.map(|r| r.as_str())
    }
    /// The call's tier.
    #[getter]
    fn tier(&self) -> Option<u8> {
        self.0.tier.map(|t| t.get())
    }
    /// Amounts held, charged or released, `{unit: amount}`.
    #[getter]
    fn amounts<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        amount_map(py, &self.0.amounts)
    }
    /// The budgets this record's operation changed, as they stood after it.
    #[getter]
    fn budgets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let after: Vec<core::Balance> = self.0.budgets.iter().map(|b| b.balance()).collect();
        balances_tuple(py, &after)
    }
    /// The caps counters this record's reservation advanced, as they stood after it:
    /// `{"key", "steps", "allocated", "cooldown_until_ms"}` each.
    #[getter]
    fn caps<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let items = self
            .0
            .caps
            .iter()
            .map(|c| dict_of(py, c))
            .collect::<PyResult<Vec<_>>>()?;
        PyTuple::new(py, items)
    }
    /// The reservation concerned.
    #[getter]
    fn reservation_id(&self) -> Option<&str> {
        self.0.reservation_id.as_deref()
    }
    /// Anything else recorded (rule ids, reasons, budget settings).
    #[getter]
    fn detail<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.0.detail {
            Some(d) => to_py(py, d),
            None => Ok(py.None().into_bound(py)),
        }
    }
    /// Hash of the previous record.
    #[getter]
    fn prev_hash(&self) -> &str {
        &self.0.prev_hash
    }
    /// SHA-256 of this record's canonical JSON without `hash`.
    #[getter]
    fn hash(&self) -> &str {
        &self.0.hash
    }
    /// The core's JSON form (one line of the JSON Lines export).
    fn to_dict<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        dict_of(py, &self.0)
    }
    fn __repr__(&self) -> String {
        format!(
            "AuditRecord(seq={}, kind={}, tool={:?}, reason_code={:?})",
            self.0.seq,
            self.0.kind.as_str(),
            self.0.action.as_ref().map(|a| a.name.as_str()),
            self.0.reason_code.map(|r| r.as_str())
        )
    }
}

/// A clock that moves only when told to, for tests and simulations. Pass it to
/// `Authority.in_memory(clock=...)` or `Authority.open(clock=...)`; it is the ledger's time.
#[pyclass(frozen, module = "cycles")]
#[derive(Debug, Clone)]
pub struct ManualClock(pub core::ManualClock);

#[pymethods]
impl ManualClock {
    #[new]
    #[pyo3(signature = (start_ms=0))]
    fn new(start_ms: i64) -> Self {
        ManualClock(core::ManualClock::new(start_ms))
    }
    /// Moves the clock by `delta_ms` (negative moves it back).
    fn advance(&self, delta_ms: i64) {
        self.0.advance(delta_ms)
    }
    /// Sets the time.
    fn set(&self, ms: i64) {
        self.0.set(ms)
    }
    /// The current time, ms.
    #[getter]
    fn now_ms(&self) -> i64 {
        use cycles_core::Clock;
        self.0.now_ms()
    }
    fn __repr__(&self) -> String {
        use cycles_core::Clock;
        format!("ManualClock({})", self.0.now_ms())
    }
}
