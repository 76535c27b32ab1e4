//! The one error type of the library.
//!
//! Every failure the gate can report is a [`CyclesError`] variant with a stable
//! [`CyclesError::code`] string. Bindings translate the code (Python exception classes,
//! JS errors with `.code`); they never invent their own.

use crate::model::Decision;

/// Result alias used across the crate.
pub type Result<T, E = CyclesError> = std::result::Result<T, E>;

/// Everything that can go wrong, with a stable machine-readable [`code`](CyclesError::code).
///
/// ```
/// use cycles_core::CyclesError;
/// let err = CyclesError::invalid("subject", "at least one subject field is required");
/// assert_eq!(err.code(), "INVALID_REQUEST");
/// ```
#[derive(Debug, thiserror::Error)]
pub enum CyclesError {
    /// The request is malformed: a field fails validation. Nothing was changed.
    #[error("invalid request: {field}: {message}")]
    InvalidRequest {
        /// The offending field, dotted path (`subject.tenant`, `estimate[0].amount`).
        field: String,
        /// What is wrong with it.
        message: String,
    },
    /// The gate said no. The decision (reason code, tier, balances) is recorded in the ledger.
    #[error("denied: {}", .0.reason_code.map(|r| r.as_str()).unwrap_or("DENY"))]
    Denied(Box<Decision>),
    /// A reservation, budget or record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The reservation was already committed or released.
    #[error("reservation {0} is already finalized")]
    ReservationFinalized(String),
    /// The reservation expired (past its expiry, or past its grace period for a commit).
    #[error("reservation {0} has expired")]
    ReservationExpired(String),
    /// An idempotency key was reused with a different payload.
    #[error("idempotency key {0} was used with a different request")]
    IdempotencyMismatch(String),
    /// A reservation was extended too often.
    #[error("reservation {0} reached the maximum number of extensions")]
    MaxExtensionsExceeded(String),
    /// An amount's unit does not match the reservation or budget it applies to.
    #[error("unit mismatch: {0}")]
    UnitMismatch(String),
    /// A charge does not fit the remaining budget (commit with `REJECT`, or an event).
    #[error("budget exceeded on {scope} ({unit})")]
    BudgetExceeded {
        /// The scope that could not absorb the charge.
        scope: String,
        /// The unit in question.
        unit: String,
    },
    /// A charge would push debt past the scope's overdraft limit.
    #[error("overdraft limit exceeded on {scope} ({unit})")]
    OverdraftLimitExceeded {
        /// The scope that could not absorb the charge.
        scope: String,
        /// The unit in question.
        unit: String,
    },
    /// The budget is frozen: no new spending.
    #[error("budget frozen: {0}")]
    BudgetFrozen(String),
    /// The budget is closed.
    #[error("budget closed: {0}")]
    BudgetClosed(String),
    /// Checked arithmetic overflowed; nothing was changed.
    #[error("amount overflow in {0}")]
    AmountOverflow(String),
    /// The policy could not be read, parsed or validated. The authority refuses to start.
    #[error("policy error: {0}")]
    Policy(String),
    /// The ledger could not be reached or its transaction failed. The gate fails closed.
    #[error("ledger unavailable: {0}")]
    LedgerUnavailable(String),
    /// The ledger's stored data is inconsistent (bad schema version, unreadable row).
    #[error("ledger corrupt: {0}")]
    LedgerCorrupt(String),
    /// An approver's answer (a grant or a denial) cannot be recorded: bad or unknown signature,
    /// another call, expired, or the request is already finished.
    #[error("approval invalid ({reason}): {message}")]
    ApprovalInvalid {
        /// The machine-readable sub-reason.
        reason: crate::approval::ApprovalInvalidReason,
        /// What is wrong.
        message: String,
    },
    /// An approver (webhook, grant file) could not be reached or answered nonsense. The call
    /// stays denied.
    #[error("approver unavailable: {0}")]
    ApproverUnavailable(String),
}

impl CyclesError {
    /// Shorthand for [`CyclesError::InvalidRequest`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        CyclesError::InvalidRequest {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The stable code of this error: protocol codes where the Cycles protocol has one.
    ///
    /// A denial reports its decision's reason code (`BUDGET_EXCEEDED`, `TIER_NOT_PERMITTED`, ...).
    pub fn code(&self) -> &'static str {
        match self {
            CyclesError::InvalidRequest { .. } => "INVALID_REQUEST",
            CyclesError::Denied(d) => d.reason_code.map(|r| r.as_str()).unwrap_or("DENIED"),
            CyclesError::NotFound(_) => "NOT_FOUND",
            CyclesError::ReservationFinalized(_) => "RESERVATION_FINALIZED",
            CyclesError::ReservationExpired(_) => "RESERVATION_EXPIRED",
            CyclesError::IdempotencyMismatch(_) => "IDEMPOTENCY_MISMATCH",
            CyclesError::MaxExtensionsExceeded(_) => "MAX_EXTENSIONS_EXCEEDED",
            CyclesError::UnitMismatch(_) => "UNIT_MISMATCH",
            CyclesError::BudgetExceeded { .. } => "BUDGET_EXCEEDED",
            CyclesError::OverdraftLimitExceeded { .. } => "OVERDRAFT_LIMIT_EXCEEDED",
            CyclesError::BudgetFrozen(_) => "BUDGET_FROZEN",
            CyclesError::BudgetClosed(_) => "BUDGET_CLOSED",
            CyclesError::AmountOverflow(_) => "AMOUNT_OVERFLOW",
            CyclesError::Policy(_) => "POLICY_INVALID",
            CyclesError::LedgerUnavailable(_) => "LEDGER_UNAVAILABLE",
            CyclesError::LedgerCorrupt(_) => "LEDGER_CORRUPT",
            CyclesError::ApprovalInvalid { .. } => "APPROVAL_INVALID",
            CyclesError::ApproverUnavailable(_) => "APPROVER_UNAVAILABLE",
        }
    }

    /// The error family, used by bindings to pick an exception class.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CyclesError::InvalidRequest { .. } | CyclesError::AmountOverflow(_) => {
                ErrorKind::InvalidInput
            }
            CyclesError::Denied(_) => ErrorKind::Denied,
            CyclesError::Policy(_) => ErrorKind::Policy,
            CyclesError::LedgerUnavailable(_) | CyclesError::LedgerCorrupt(_) => ErrorKind::Ledger,
            CyclesError::NotFound(_) => ErrorKind::NotFound,
            _ => ErrorKind::Conflict,
        }
    }

    /// The decision carried by a denial.
    pub fn decision(&self) -> Option<&Decision> {
        match self {
            CyclesError::Denied(d) => Some(d),
            _ => None,
        }
    }
}

/// Families of [`CyclesError`], one per exception class in the bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Malformed input; nothing changed.
    InvalidInput,
    /// The gate denied the call.
    Denied,
    /// The policy is unusable.
    Policy,
    /// The ledger failed.
    Ledger,
    /// Something named does not exist.
    NotFound,
    /// The request conflicts with the state (finalized, expired, mismatch, over budget).
    Conflict,
}

impl From<rusqlite::Error> for CyclesError {
    fn from(e: rusqlite::Error) -> Self {
        // SQLite's own verdict that the file's bytes are not a sound database (garbage,
        // truncated, overwritten) is corruption, not an outage: retrying will not help.
        let corrupt = matches!(
            &e,
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::NotADatabase | rusqlite::ErrorCode::DatabaseCorrupt
                )
        );
        if corrupt {
            CyclesError::LedgerCorrupt(e.to_string())
        } else {
            CyclesError::LedgerUnavailable(e.to_string())
        }
    }
}
