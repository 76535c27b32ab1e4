//! [`Authority`]: the public facade. Validates input, classifies, then runs the state machine
//! in one ledger transaction per operation.

use std::io::Write;
use std::sync::Arc;

use crate::approval::{self, ApprovalRequest, ApprovalResponse, ApprovalStatus, Approver};
use crate::audit::{
    AuditAnchor, AuditQuery, AuditRecord, ChainVerifier, LedgerSnapshot, VerifyReport, write_jsonl,
};
use crate::clock::{Clock, SystemClock};
use crate::error::{CyclesError, Result};
use crate::ledger::{Ledger, MemoryLedger, read_with, write_with};
use crate::machine::{self, Ctx, Prepared, ReserveOutcome};
use crate::model::{Balance, Decision, ReasonCode, Reservation, ReservationStatus, ToolCall};
use crate::owed::{OwedQueue, OwedSettlement};
use crate::policy::{CompiledPolicy, Policy};
use crate::request::{
    BudgetSpec, CommitRequest, CommitResult, DecideRequest, EventRequest, EventResult,
    ExtendRequest, ReleaseRequest, ReleaseResult, ReserveRequest, SettleRequest, Settlement,
};

/// Page size when walking the audit trail.
const AUDIT_PAGE: usize = 1_000;

/// The deepest nesting of arrays and objects accepted in a call's arguments. Hashing,
/// classifying and storing a call recurse over its arguments; deeper input is
/// `INVALID_REQUEST` before any of that, never a stack overflow that aborts the process.
/// (The bindings refuse at 64 levels of the whole request; JSON the ledger stores must also
/// stay under serde_json's read limit of 128.)
pub const MAX_ARGS_DEPTH: usize = 64;

/// Refuses arguments nested deeper than [`MAX_ARGS_DEPTH`], without recursing.
fn check_args(call: &ToolCall) -> Result<()> {
    use serde_json::Value;
    let too_deep = || {
        CyclesError::invalid(
            "args",
            format!("nested deeper than {MAX_ARGS_DEPTH} levels"),
        )
    };
    // Scalars and flat containers (the usual arguments) allocate nothing.
    let mut stack: Vec<(&Value, usize)> = Vec::new();
    let mut next = Some((&call.args, 1usize));
    while let Some((v, depth)) = next.take().or_else(|| stack.pop()) {
        match v {
            Value::Array(items) => {
                if depth > MAX_ARGS_DEPTH {
                    return Err(too_deep());
                }
                stack.extend(
                    items
                        .iter()
                        .filter(|c| is_container(c))
                        .map(|c| (c, depth + 1)),
                );
            }
            Value::Object(map) => {
                if depth > MAX_ARGS_DEPTH {
                    return Err(too_deep());
                }
                stack.extend(
                    map.values()
                        .filter(|c| is_container(c))
                        .map(|c| (c, depth + 1)),
                );
            }
            _ => {}
        }
    }
    Ok(())
}

fn is_container(v: &serde_json::Value) -> bool {
    matches!(
        v,
        serde_json::Value::Array(_) | serde_json::Value::Object(_)
    )
}

struct Inner {
    ledger: Arc<dyn Ledger>,
    policy: CompiledPolicy,
    clock: Arc<dyn Clock>,
    owed: OwedQueue,
}

/// The runtime authority: the gate between a model's proposed tool call and its execution.
///
/// `Send + Sync` and cheap to clone (one `Arc`); share one per process.
///
/// ```
/// use cycles_core::*;
/// let policy = Policy::default()
///     .register("read_file", Tier::T0)
///     .register("railway.delete_volume", Tier::T4)
///     .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, 40));
/// let auth = Authority::builder().policy(policy).build().unwrap();
/// let bot = Subject::new().agent("bot");
///
/// let read = ReserveRequest::new(bot.clone(), ToolCall::new("read_file", serde_json::json!({"path": "a"})));
/// let r = auth.reserve(&read).unwrap();
/// auth.commit(&r.reservation_id, &CommitRequest::default()).unwrap();
///
/// let wipe = ReserveRequest::new(bot, ToolCall::new("railway.delete_volume", serde_json::json!({"id": "vol-1"})));
/// let err = auth.reserve(&wipe).unwrap_err();
/// assert_eq!(err.code(), "BUDGET_EXCEEDED"); // 50 points > 40 allocated
/// ```
#[derive(Clone)]
pub struct Authority {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("ledger", &self.inner.ledger.describe())
            .finish()
    }
}

/// Builds an [`Authority`].
#[derive(Default)]
pub struct AuthorityBuilder {
    ledger: Option<Arc<dyn Ledger>>,
    policy: Option<Policy>,
    clock: Option<Arc<dyn Clock>>,
}

impl AuthorityBuilder {
    /// The ledger (default: a fresh [`MemoryLedger`]).
    pub fn ledger(mut self, ledger: impl Ledger + 'static) -> Self {
        self.ledger = Some(Arc::new(ledger));
        self
    }
    /// A shared ledger.
    pub fn shared_ledger(mut self, ledger: Arc<dyn Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }
    /// The policy (default: [`Policy::default`], which registers nothing).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = Some(policy);
        self
    }
    /// The clock (default: the system clock).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// Validates the policy, creates its budgets where the ledger lacks them, and starts.
    /// An invalid policy is an error: the authority never starts on a silent default.
    pub fn build(self) -> Result<Authority> {
        let policy = self.policy.unwrap_or_default().compile()?;
        let ledger = self.ledger.unwrap_or_else(|| Arc::new(MemoryLedger::new()));
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let now = clock.now_ms();
        if !policy.policy().budgets.is_empty() {
            write_with(ledger.as_ref(), |txn| {
                for spec in &policy.policy().budgets {
                    machine::set_budget(txn, now, spec, true)?;
                }
                Ok(())
            })?;
        }
        Ok(Authority {
            inner: Arc::new(Inner {
                ledger,
                policy,
                clock,
                owed: OwedQueue::default(),
            }),
        })
    }
}

/// A ledger failure on the gate path becomes a DENY, never an ALLOW.
fn fail_closed(prepared: &Prepared<'_>, e: CyclesError) -> CyclesError {
    match e {
        CyclesError::LedgerUnavailable(msg) | CyclesError::LedgerCorrupt(msg) => {
            let c = &prepared.assessment.classification;
            let mut d = Decision::deny(
                ReasonCode::LedgerUnavailable,
                c.tier,
                prepared.assessment.risk_points,
            );
            d.rules.clone_from(&c.rules);
            d.message = Some(msg);
            CyclesError::Denied(Box::new(d))
        }
        other => other,
    }
}

impl Authority {
    /// A builder.
    pub fn builder() -> AuthorityBuilder {
        AuthorityBuilder::default()
    }

    /// The compiled policy.
    pub fn policy(&self) -> &CompiledPolicy {
        &self.inner.policy
    }

    /// The ledger.
    pub fn ledger(&self) -> &Arc<dyn Ledger> {
        &self.inner.ledger
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            policy: &self.inner.policy,
            now_ms: self.inner.clock.now_ms(),
        }
    }

    /// Would this call be allowed now? Holds nothing; the decision is recorded.
    /// A ledger failure answers DENY `LEDGER_UNAVAILABLE`.
    pub fn decide(&self, req: &DecideRequest) -> Result<Decision> {
        req.validate()?;
        check_args(&req.call)?;
        let prepared = Prepared::new(&self.inner.policy, &req.subject, &req.call, &req.estimate)?;
        let ctx = self.ctx();
        match write_with(self.inner.ledger.as_ref(), |txn| {
            machine::decide(txn, &ctx, &prepared)
        }) {
            Ok(d) => {
                self.ledger_answered();
                Ok(d)
            }
            Err(e) => match fail_closed(&prepared, e) {
                CyclesError::Denied(d) => Ok(*d),
                other => Err(other),
            },
        }
    }

    /// Reserves the call's risk points and estimate on every budgeted scope, or fails with
    /// [`CyclesError::Denied`] (the denial is recorded). Replays with the same idempotency key
    /// return the original outcome, a denial included.
    pub fn reserve(&self, req: &ReserveRequest) -> Result<Reservation> {
        req.validate()?;
        check_args(&req.call)?;
        let prepared = Prepared::new(&self.inner.policy, &req.subject, &req.call, &req.estimate)?;
        let ctx = self.ctx();
        let id = format!("rsv_{}", uuid::Uuid::now_v7().simple());
        let outcome = write_with(self.inner.ledger.as_ref(), |txn| {
            machine::reserve(txn, &ctx, &prepared, req, &id)
        })
        .map_err(|e| fail_closed(&prepared, e))?;
        self.ledger_answered();
        match outcome {
            ReserveOutcome::Reserved { reservation } => Ok(*reservation),
            ReserveOutcome::Denied { decision } => Err(CyclesError::Denied(decision)),
        }
    }

    /// An approval request by id (see [`crate::approval`]).
    pub fn approval(&self, request_id: &str) -> Result<ApprovalRequest> {
        read_with(self.inner.ledger.as_ref(), |txn| {
            approval::load(txn, request_id)
        })?
        .ok_or_else(|| CyclesError::NotFound(format!("approval request {request_id}")))
    }

    /// Approval requests, optionally with one status, oldest first. A `PENDING` request past
    /// its `expires_at_ms` is listed as stored; it turns `EXPIRED` when next touched.
    pub fn approvals(&self, status: Option<ApprovalStatus>) -> Result<Vec<ApprovalRequest>> {
        read_with(self.inner.ledger.as_ref(), |txn| {
            approval::list(txn, status)
        })
    }

    /// Records an approver's signed answer for request `request_id`: a grant (the request
    /// becomes `GRANTED`), a denial (`DENIED`; it revokes an unused grant) or `Pending`
    /// (nothing changes). The signature must verify against a public key of the policy; a bad
    /// answer is [`CyclesError::ApprovalInvalid`] with its sub-reason and changes nothing but a
    /// lazily noticed expiry. Returns the request as stored afterwards.
    pub fn record_approval(
        &self,
        request_id: &str,
        response: &ApprovalResponse,
    ) -> Result<ApprovalRequest> {
        let ctx = self.ctx();
        write_with(self.inner.ledger.as_ref(), |txn| {
            approval::record(txn, ctx.policy, ctx.now_ms, request_id, response)
        })?
    }

    /// Asks `approver` about request `request_id` (outside any ledger transaction), then
    /// records its answer with [`Authority::record_approval`].
    pub fn ask_approver(
        &self,
        request_id: &str,
        approver: &dyn Approver,
    ) -> Result<ApprovalRequest> {
        let request = self.approval(request_id)?;
        let response = approver.request(&request)?;
        self.record_approval(request_id, &response)
    }

    /// Reserves; when the answer is `APPROVAL_REQUIRED`, asks `approver`, records its answer
    /// and, if it granted, reserves again presenting the grant. The retry uses the idempotency
    /// key `<key>:grant` when the request has a key, so it is not answered by the recorded
    /// denial. Still pending or denied: the `APPROVAL_REQUIRED` denial is returned.
    pub fn reserve_with_approver(
        &self,
        req: &ReserveRequest,
        approver: &dyn Approver,
    ) -> Result<Reservation> {
        let decision = match self.reserve(req) {
            Err(CyclesError::Denied(d)) if d.reason_code == Some(ReasonCode::ApprovalRequired) => d,
            other => return other,
        };
        let id = decision.approval_request_id.clone().ok_or_else(|| {
            CyclesError::LedgerCorrupt("APPROVAL_REQUIRED without a request".into())
        })?;
        let request = self.ask_approver(&id, approver)?;
        match (request.status, request.grant) {
            (ApprovalStatus::Granted, Some(grant)) => {
                let mut retry = req.clone();
                retry.grant = Some(serde_json::to_value(grant).expect("grants serialize"));
                retry.idempotency_key = req.idempotency_key.as_ref().map(|k| format!("{k}:grant"));
                self.reserve(&retry)
            }
            _ => Err(CyclesError::Denied(decision)),
        }
    }

    /// Commits a reservation with the actual amounts (units not listed are charged as held).
    pub fn commit(&self, reservation_id: &str, req: &CommitRequest) -> Result<CommitResult> {
        req.validate()?;
        if let Some(ran) = &req.ran {
            check_args(ran)?;
        }
        let ctx = self.ctx();
        let result = write_with(self.inner.ledger.as_ref(), |txn| {
            machine::commit(txn, &ctx, reservation_id, req)
        })?;
        self.ledger_answered();
        result
    }

    /// Releases a reservation's hold without charge.
    pub fn release(&self, reservation_id: &str, req: &ReleaseRequest) -> Result<ReleaseResult> {
        req.validate()?;
        let ctx = self.ctx();
        let result = write_with(self.inner.ledger.as_ref(), |txn| {
            machine::release(txn, &ctx, reservation_id, req)
        })?;
        self.ledger_answered();
        result
    }

    /// Finishes a reservation by how its call ended: a completed call is committed with its
    /// actual amounts, an interrupted one is charged what was held (both also after the hold
    /// lapsed, see [`CommitRequest::charge_if_expired`]), a call that never started is
    /// released, and a failed one is released or charged as the policy's
    /// `[defaults] on_failure` says ([`FailurePolicy`](crate::FailurePolicy)). Every binding
    /// and integration finishes its calls through here, so one policy file means the same
    /// charges everywhere.
    ///
    /// ```
    /// use cycles_core::*;
    /// let mut policy = Policy::default()
    ///     .register("migrate", Tier::T3)
    ///     .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, 1_000));
    /// policy.defaults.on_failure = FailurePolicy::Charge;
    /// let auth = Authority::builder().policy(policy).build().unwrap();
    /// let call = ToolCall::new("migrate", serde_json::json!({}));
    /// let r = auth.reserve(&ReserveRequest::new(Subject::new().agent("bot"), call)).unwrap();
    /// // The migration raised after it had started: with `on_failure = "CHARGE"` it is paid for.
    /// let s = auth.settle(&r.reservation_id, &SettleRequest::new(CallOutcome::Failed)).unwrap();
    /// assert!(matches!(s, Settlement::Committed(_)));
    /// ```
    pub fn settle(&self, reservation_id: &str, req: &SettleRequest) -> Result<Settlement> {
        req.validate()?;
        if self.inner.policy.charges(req.outcome) {
            self.commit(reservation_id, &req.as_commit())
                .map(Settlement::Committed)
        } else {
            self.release(reservation_id, &req.as_release())
                .map(Settlement::Released)
        }
    }

    /// [`settle`](Self::settle), except that a settlement the ledger cannot take now
    /// (`LEDGER_UNAVAILABLE`) is kept owed instead of lost: `Ok(None)`. The authority makes it
    /// as soon as the ledger answers again (after the next operation that reaches it), or on
    /// [`retry_owed`](Self::retry_owed); see [`owed_settlements`](Self::owed_settlements).
    /// Every other outcome is `settle`'s. Integrations finish their calls through this, so a
    /// call that ran during a ledger outage is still paid for once the ledger is back.
    ///
    /// Owed settlements live in this process's memory (shared by the authority's clones): call
    /// `retry_owed` before the process exits and report what it returns.
    ///
    /// ```
    /// use cycles_core::*;
    /// let policy = Policy::default()
    ///     .register("deploy", Tier::T2)
    ///     .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, 100));
    /// let auth = Authority::builder().policy(policy).build().unwrap();
    /// let call = ToolCall::new("deploy", serde_json::json!({}));
    /// let r = auth.reserve(&ReserveRequest::new(Subject::new().agent("bot"), call)).unwrap();
    /// let done = auth.settle_or_owe(&r.reservation_id, &SettleRequest::new(CallOutcome::Completed)).unwrap();
    /// assert!(matches!(done, Some(Settlement::Committed(_))));
    /// assert!(auth.owed_settlements().is_empty());
    /// ```
    pub fn settle_or_owe(
        &self,
        reservation_id: &str,
        req: &SettleRequest,
    ) -> Result<Option<Settlement>> {
        match self.settle(reservation_id, req) {
            Ok(s) => Ok(Some(s)),
            Err(CyclesError::LedgerUnavailable(msg)) => {
                self.inner.owed.push(OwedSettlement {
                    reservation_id: reservation_id.to_string(),
                    request: req.clone(),
                    attempts: 1,
                    last_error: msg,
                    since_ms: self.inner.clock.now_ms(),
                });
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The settlements still owed ([`settle_or_owe`](Self::settle_or_owe)), oldest first.
    pub fn owed_settlements(&self) -> Vec<OwedSettlement> {
        self.inner.owed.list()
    }

    /// Tries each owed settlement once, oldest first, stopping at the first the ledger still
    /// refuses as unavailable; returns what is still owed (entries another thread's retry is
    /// trying included). An entry the ledger answers otherwise is done, never made twice:
    /// settled; already finished (finalized, a release of a hold that expired meanwhile, a
    /// reservation the ledger no longer has); or, when the ledger refuses the amounts or the
    /// call the request names (`actual`, `ran`: a unit the reservation does not hold, an
    /// overage `REJECT` refuses, checks the ledger makes only now), settled by its outcome
    /// alone: the call ran, so it is charged what was held if its outcome is charged. Returns
    /// at once (with the list) while another retry is under way.
    pub fn retry_owed(&self) -> Vec<OwedSettlement> {
        self.inner.owed.retry(|o| {
            let id = o.reservation_id.as_str();
            match self.settle(id, &o.request) {
                Err(e @ CyclesError::LedgerUnavailable(_)) => Err(e),
                Ok(_)
                | Err(
                    CyclesError::ReservationFinalized(_)
                    | CyclesError::ReservationExpired(_)
                    | CyclesError::NotFound(_),
                ) => Ok(()),
                Err(_) if !o.request.actual.is_empty() || o.request.ran.is_some() => {
                    let plain = SettleRequest {
                        actual: Vec::new(),
                        ran: None,
                        ..o.request.clone()
                    };
                    match self.settle(id, &plain) {
                        Err(e @ CyclesError::LedgerUnavailable(_)) => Err(e),
                        _ => Ok(()),
                    }
                }
                Err(_) => Ok(()),
            }
        })
    }

    /// After an operation the ledger answered: make what is owed, if anything is.
    fn ledger_answered(&self) {
        if !self.inner.owed.is_empty() {
            self.retry_owed();
        }
    }

    /// Extends a reservation from its current expiry (at most 10 times, never after expiry).
    pub fn extend(&self, reservation_id: &str, req: &ExtendRequest) -> Result<Reservation> {
        req.validate()?;
        let ctx = self.ctx();
        let result = write_with(self.inner.ledger.as_ref(), |txn| {
            machine::extend(txn, &ctx, reservation_id, req)
        })?;
        self.ledger_answered();
        result
    }

    /// Charges usage directly, without a reservation.
    pub fn event(&self, req: &EventRequest) -> Result<EventResult> {
        req.validate()?;
        check_args(&req.call)?;
        let prepared = Prepared::new(&self.inner.policy, &req.subject, &req.call, &[])?;
        let ctx = self.ctx();
        let id = format!("evt_{}", uuid::Uuid::new_v4().simple());
        let result = write_with(self.inner.ledger.as_ref(), |txn| {
            machine::event(txn, &ctx, &prepared, req, &id)
        });
        if !matches!(result, Err(CyclesError::LedgerUnavailable(_))) {
            self.ledger_answered();
        }
        result
    }

    /// Expires every reservation past its expiry plus grace; returns how many.
    pub fn sweep_expired(&self) -> Result<usize> {
        let now = self.inner.clock.now_ms();
        write_with(self.inner.ledger.as_ref(), |txn| {
            machine::sweep(txn, now, usize::MAX)
        })
    }

    /// Creates or changes a budget (recorded in the audit trail).
    pub fn set_budget(&self, spec: &BudgetSpec) -> Result<Balance> {
        spec.validate()?;
        let now = self.inner.clock.now_ms();
        write_with(self.inner.ledger.as_ref(), |txn| {
            machine::set_budget(txn, now, spec, false)
        })
        .map(|b| b.expect("set_budget always writes"))
    }

    /// Repays overdraft debt on a budget (the funder adds `amount` to the allocation and it pays
    /// the debt). Until a scope's debt is repaid, reservations on it are `DEBT_OUTSTANDING`.
    ///
    /// ```
    /// use cycles_core::*;
    /// let auth = Authority::builder().build().unwrap();
    /// auth.set_budget(&BudgetSpec::new("tenant:acme", Unit::Credits, 10)).unwrap();
    /// let err = auth.repay_debt("tenant:acme", Unit::Credits, 1).unwrap_err();
    /// assert_eq!(err.code(), "INVALID_REQUEST"); // there is no debt to repay
    /// ```
    pub fn repay_debt(&self, scope: &str, unit: crate::Unit, amount: i64) -> Result<Balance> {
        crate::model::validate_scope(scope)?;
        crate::model::Amount::new(unit, amount).validate("repay")?;
        let now = self.inner.clock.now_ms();
        write_with(self.inner.ledger.as_ref(), |txn| {
            machine::repay_debt(txn, now, scope, unit, amount)
        })
    }

    /// Balances of every budget, or of `scope` and the scopes below it.
    pub fn balances(&self, scope: Option<&str>) -> Result<Vec<Balance>> {
        read_with(self.inner.ledger.as_ref(), |txn| {
            Ok(txn.budgets(scope)?.iter().map(|b| b.balance()).collect())
        })
    }

    /// A reservation by id.
    pub fn reservation(&self, reservation_id: &str) -> Result<Reservation> {
        read_with(self.inner.ledger.as_ref(), |txn| {
            txn.reservation(reservation_id)
        })?
        .ok_or_else(|| CyclesError::NotFound(format!("reservation {reservation_id}")))
    }

    /// The reservation a `reserve` with this idempotency key made, as it stands now (ACTIVE,
    /// COMMITTED, ...); `None` when no reserve used the key or its answer was a denial. One
    /// lookup, however long the ledger's history: how a caller that reserved under a key it can
    /// rebuild (the Claude Code hook: session and tool use) finds its reservation later.
    ///
    /// ```
    /// use cycles_core::*;
    /// let auth = Authority::builder()
    ///     .policy(Policy::default()
    ///         .register("read_file", Tier::T0)
    ///         .budget(BudgetSpec::new("agent:bot", Unit::RiskPoints, 10)))
    ///     .build()
    ///     .unwrap();
    /// let mut req = ReserveRequest::new(Subject::new().agent("bot"), ToolCall::new("read_file", serde_json::json!({})));
    /// req.idempotency_key = Some("call-1".into());
    /// let r = auth.reserve(&req).unwrap();
    /// assert_eq!(auth.reservation_by_key("call-1").unwrap().unwrap().reservation_id, r.reservation_id);
    /// assert!(auth.reservation_by_key("call-2").unwrap().is_none());
    /// ```
    pub fn reservation_by_key(&self, idempotency_key: &str) -> Result<Option<Reservation>> {
        read_with(self.inner.ledger.as_ref(), |txn| {
            machine::reserved_under_key(txn, idempotency_key)
        })
    }

    /// Reservations, optionally with one status, oldest first.
    pub fn reservations(
        &self,
        status: Option<ReservationStatus>,
        limit: usize,
    ) -> Result<Vec<Reservation>> {
        read_with(self.inner.ledger.as_ref(), |txn| {
            txn.reservations(status, limit)
        })
    }

    /// Audit records matching `query`, in chain order.
    pub fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>> {
        let limit = query.limit.unwrap_or(usize::MAX);
        let mut out = Vec::new();
        self.walk_audit(query.after_seq.unwrap_or(0), |page| {
            out.extend(page.iter().filter(|r| query.matches(r)).cloned());
            out.len() < limit
        })?;
        out.truncate(limit);
        Ok(out)
    }

    /// Walks the chain page by page until `f` returns false.
    fn walk_audit(&self, after: u64, mut f: impl FnMut(&[AuditRecord]) -> bool) -> Result<()> {
        let mut after = after;
        loop {
            let page = read_with(self.inner.ledger.as_ref(), |txn| {
                txn.audit_page(after, AUDIT_PAGE)
            })?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.seq;
            if !f(&page) {
                return Ok(());
            }
        }
    }

    /// Walks the whole chain; the report names the first broken record.
    pub fn verify(&self) -> Result<VerifyReport> {
        self.verify_with_anchors(&[])
    }

    /// The head of the audit chain as an anchor to keep outside the ledger (`None` while the
    /// trail is empty); see [`AuditAnchor`].
    pub fn audit_anchor(&self) -> Result<Option<AuditAnchor>> {
        let head = read_with(self.inner.ledger.as_ref(), |txn| txn.audit_head())?;
        Ok(head.map(|(seq, hash)| AuditAnchor { seq, hash }))
    }

    /// [`Authority::verify`], and each anchor's record must still be in the chain with the
    /// anchored hash: removed last records or a rebuilt chain are reported as broken.
    ///
    /// ```
    /// use cycles_core::{Authority, DecideRequest, Policy, Subject, Tier, ToolCall};
    /// let auth = Authority::builder()
    ///     .policy(Policy::default().register("read_file", Tier::T0))
    ///     .build()
    ///     .unwrap();
    /// let call = || DecideRequest::new(Subject::new().agent("bot"), ToolCall::new("read_file", serde_json::json!({})));
    /// auth.decide(&call()).unwrap();
    /// let anchor = auth.audit_anchor().unwrap().unwrap();
    /// auth.decide(&call()).unwrap();
    /// assert!(auth.verify_with_anchors(&[anchor]).unwrap().ok);
    /// ```
    pub fn verify_with_anchors(&self, anchors: &[AuditAnchor]) -> Result<VerifyReport> {
        // Budgets, active reservations, approval requests, idempotent results and the head in
        // one snapshot: the chain up to that head
        // must account for exactly that state, however many records are appended meanwhile.
        let snapshot = read_with(self.inner.ledger.as_ref(), |txn| {
            Ok(LedgerSnapshot {
                head_seq: txn.audit_head()?.map_or(0, |(seq, _)| seq),
                budgets: txn.budgets(None)?,
                active_reservations: txn
                    .reservations(Some(ReservationStatus::Active), usize::MAX)?
                    .into_iter()
                    .map(|r| r.reservation_id)
                    .collect(),
                approvals: txn.kv_list(crate::approval::APPROVAL_NS)?,
                idempotency: txn.idempotency_entries()?,
                caps: txn.kv_list(crate::policy::CAPS_NS)?,
            })
        })?;
        let mut v = ChainVerifier::with_anchors(anchors.to_vec()).with_state(snapshot);
        let mut last_fed = 0;
        let walked = self.walk_audit(0, |page| {
            page.iter().all(|r| {
                last_fed = r.seq;
                v.feed(r)
            })
        });
        match walked {
            Ok(()) => {}
            // A page holds a record that cannot be read: go on one record at a time, so the
            // report names that record and not the first one of its page.
            Err(CyclesError::LedgerCorrupt(_)) => loop {
                match read_with(self.inner.ledger.as_ref(), |txn| {
                    txn.audit_page(last_fed, 1)
                }) {
                    Ok(page) => match page.first() {
                        Some(r) if v.feed(r) => last_fed = r.seq,
                        _ => break,
                    },
                    Err(CyclesError::LedgerCorrupt(msg)) => {
                        v.unreadable(msg);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            },
            Err(e) => return Err(e),
        }
        Ok(v.finish())
    }

    /// Writes the audit records matching `query` as JSON Lines; returns how many.
    pub fn export_jsonl<W: Write>(&self, query: &AuditQuery, out: &mut W) -> Result<usize> {
        let records = self.audit(query)?;
        write_jsonl(out, &records)?;
        Ok(records.len())
    }

    /// The current time on the authority's clock.
    pub fn now_ms(&self) -> i64 {
        self.inner.clock.now_ms()
    }
}
