//! Exception classes and the one translation from [`CoreError`] to a Python exception.
//!
//! The class comes from the core's [`ErrorKind`]; `.code` is the core's stable `code()`;
//! denials also carry `.reason_code` and the frozen `.decision`, and approval requests their
//! `.request_id`. Nothing here decides anything: it only names what the core reported.

use cycles_core::{CyclesError as CoreError, ErrorKind, ReasonCode};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

use crate::types::Decision;

create_exception!(
    cycles,
    CyclesError,
    PyException,
    "Base class of every error raised by cycles; `.code` is the core's stable code."
);
create_exception!(
    cycles,
    Denied,
    CyclesError,
    "The gate denied the call; `.reason_code` and `.decision` say why."
);
create_exception!(
    cycles,
    ApprovalRequired,
    Denied,
    "The call needs an out-of-band approval; `.request_id` names the approval request."
);
create_exception!(
    cycles,
    PolicyError,
    CyclesError,
    "The policy could not be read, parsed or validated."
);
create_exception!(
    cycles,
    LedgerError,
    CyclesError,
    "The ledger could not be reached or its data is inconsistent."
);
create_exception!(
    cycles,
    InvalidInput,
    CyclesError,
    "A value does not fit the request; nothing was changed."
);
create_exception!(
    cycles,
    NotFound,
    CyclesError,
    "A reservation, budget or record does not exist."
);
create_exception!(
    cycles,
    Conflict,
    CyclesError,
    "The request conflicts with the ledger's state (finalized, expired, idempotency mismatch, over budget)."
);

/// Translates a core error into the matching Python exception.
pub(crate) fn to_py_err(py: Python<'_>, e: CoreError) -> PyErr {
    let code = e.code();
    let message = match e.decision().and_then(|d| d.message.as_deref()) {
        // The decision's message usually starts with the reason code; do not say it twice.
        Some(detail) if detail.starts_with(code) => format!("denied: {detail}"),
        Some(detail) => format!("{e}: {detail}"),
        None => e.to_string(),
    };
    let err = match e.kind() {
        ErrorKind::Denied => {
            let CoreError::Denied(decision) = e else {
                // kind() is Denied only for the Denied variant.
                return CyclesError::new_err(message);
            };
            let approval = decision.reason_code == Some(ReasonCode::ApprovalRequired);
            let err = if approval {
                ApprovalRequired::new_err(message)
            } else {
                Denied::new_err(message)
            };
            let value = err.value(py);
            let reason = decision.reason_code.map(|r| r.as_str());
            let request_id = decision.approval_request_id.clone();
            let attrs = (|| -> PyResult<()> {
                value.setattr("reason_code", reason)?;
                value.setattr("request_id", request_id)?;
                value.setattr("decision", Py::new(py, Decision::from(*decision))?)
            })();
            if let Err(set_failed) = attrs {
                return set_failed;
            }
            err
        }
        ErrorKind::InvalidInput => InvalidInput::new_err(message),
        ErrorKind::Policy => PolicyError::new_err(message),
        ErrorKind::Ledger => LedgerError::new_err(message),
        ErrorKind::NotFound => NotFound::new_err(message),
        ErrorKind::Conflict => Conflict::new_err(message),
    };
    if let Err(set_failed) = err.value(py).setattr("code", code) {
        return set_failed;
    }
    err
}

/// `Result<T, CoreError>` -> `PyResult<T>`.
pub(crate) trait IntoPy<T> {
    /// Translates the error, if any.
    fn py(self, py: Python<'_>) -> PyResult<T>;
}

impl<T> IntoPy<T> for Result<T, CoreError> {
    fn py(self, py: Python<'_>) -> PyResult<T> {
        self.map_err(|e| to_py_err(py, e))
    }
}

/// Registers the exception classes, with class-level defaults so the attributes exist on
/// every instance (also one raised by user code).
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    let base = py.get_type::<CyclesError>();
    base.setattr("code", "CYCLES_ERROR")?;
    let denied = py.get_type::<Denied>();
    denied.setattr("code", "DENIED")?;
    denied.setattr("reason_code", py.None())?;
    denied.setattr("decision", py.None())?;
    denied.setattr("request_id", py.None())?;
    py.get_type::<ApprovalRequired>()
        .setattr("code", "APPROVAL_REQUIRED")?;
    py.get_type::<PolicyError>()
        .setattr("code", "POLICY_INVALID")?;
    py.get_type::<LedgerError>()
        .setattr("code", "LEDGER_UNAVAILABLE")?;
    py.get_type::<InvalidInput>()
        .setattr("code", "INVALID_REQUEST")?;
    py.get_type::<NotFound>().setattr("code", "NOT_FOUND")?;
    py.get_type::<Conflict>().setattr("code", "CONFLICT")?;
    m.add("CyclesError", base)?;
    m.add("Denied", denied)?;
    m.add("ApprovalRequired", py.get_type::<ApprovalRequired>())?;
    m.add("PolicyError", py.get_type::<PolicyError>())?;
    m.add("LedgerError", py.get_type::<LedgerError>())?;
    m.add("InvalidInput", py.get_type::<InvalidInput>())?;
    m.add("NotFound", py.get_type::<NotFound>())?;
    m.add("Conflict", py.get_type::<Conflict>())?;
    Ok(())
}
