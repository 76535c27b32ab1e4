//! # cycles-core
//!
//! An embeddable runtime authority for AI agents: a mechanical pre-execution gate between a
//! model's proposed tool call and the client that performs it.
//!
//! Every call is classified into a tier (0 = no blast radius … 4 = irreversible), checked against
//! risk and spend budgets on every scope of its subject, reserved before it runs, and committed
//! or released afterwards. Every step is written to a hash-chained audit trail in the ledger
//! *before* the action runs.
//!
//! ```
//! use cycles_core::*;
//! let policy = Policy::default()
//!     .register("run_sql", Tier::T0)
//!     .budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 100));
//! let auth = Authority::builder().policy(policy).build()?;
//! let subject = Subject::new().tenant("acme").agent("coder");
//! let call = ToolCall::new("run_sql", serde_json::json!({"query": "SELECT 1"}));
//! let decision = auth.decide(&DecideRequest::new(subject, call))?;
//! assert_eq!(decision.decision, DecisionKind::Allow);
//! # Ok::<(), CyclesError>(())
//! ```

#![warn(missing_docs)]

pub mod approval;
pub mod audit;
pub mod authority;
pub mod classify;
pub mod clock;
pub mod error;
pub mod ledger;
mod machine;
pub mod model;
pub mod owed;
pub mod policy;
pub mod request;

/// The README's Rust examples, compiled as doctests so they cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

pub use approval::{
    ApprovalInvalidReason, ApprovalRequest, ApprovalResponse, ApprovalStatus, Approver,
    ApproverKey, CallbackApprover, Denial, Grant, GrantFileApprover, WebhookApprover,
};
pub use audit::{
    AuditAnchor, AuditKind, AuditQuery, AuditRecord, BrokenRecord, CapsCounter, SealedRecord,
    StateMismatch, VerifyReport,
};
pub use authority::{Authority, AuthorityBuilder};
pub use classify::Classification;
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{CyclesError, ErrorKind, Result};
pub use ledger::{
    Ledger, LedgerLocation, LedgerOptions, LedgerTxn, MemoryLedger, SqliteLedger, SqliteOptions,
    Synchronous, open_ledger,
};
#[cfg(feature = "postgres")]
pub use ledger::{PostgresLedger, PostgresOptions};
pub use model::{
    Action, Amount, Balance, Budget, BudgetStatus, Caps, CommitOveragePolicy, Decision,
    DecisionKind, FailurePolicy, Hold, ReasonCode, Reservation, ReservationStatus, Subject, Tier,
    ToolCall, Unit,
};
pub use owed::OwedSettlement;
pub use policy::{CompiledPolicy, Explanation, Policy, PolicyDenial, UnknownTool};
pub use request::{
    BudgetSpec, CallOutcome, CommitRequest, CommitResult, DecideRequest, EventRequest, EventResult,
    ExtendRequest, ReleaseRequest, ReleaseResult, ReserveRequest, SettleRequest, Settlement,
};
