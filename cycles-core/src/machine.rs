//! The reserve/commit state machine, written once over [`LedgerTxn`].
//!
//! Every operation runs inside one ledger transaction: the state change and its audit record
//! commit together or not at all. Operations return `Result<Settled<T>>`: the outer error aborts
//! the transaction (nothing changes), the inner one is an outcome that is committed with the
//! transaction (a lazily expired reservation is persisted as EXPIRED, then reported).

use std::borrow::Cow;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::approval::{self, Grant};
use crate::audit::{AuditKind, AuditRecord, RecordView, canonical_json, sha256_hex};
use crate::error::{CyclesError, Result};
use crate::ledger::{IdempotencyEntry, LedgerTxn};
use crate::model::{
    Amount, Balance, Budget, BudgetStatus, CommitOveragePolicy, Decision, DecisionKind, Hold,
    MAX_EXTENSIONS, ReasonCode, Reservation, ReservationStatus, Subject, Tier, ToolCall, Unit, add,
    sub,
};
use crate::policy::{Assessment, CompiledPolicy};
use crate::request::{
    BudgetSpec, CommitRequest, CommitResult, EventRequest, EventResult, ExtendRequest,
    ReleaseRequest, ReleaseResult, ReserveRequest,
};

/// An outcome committed with its transaction.
pub(crate) type Settled<T> = Result<T>;

/// How many expired reservations one sweep pass handles inside a transaction.
const SWEEP_BATCH: usize = 256;

/// What an operation needs besides the transaction.
pub(crate) struct Ctx<'a> {
    pub policy: &'a CompiledPolicy,
    pub now_ms: i64,
}

/// A call already validated and classified (outside the transaction: it is pure).
pub(crate) struct Prepared<'a> {
    pub subject: &'a Subject,
    pub call: &'a ToolCall,
    pub scopes: Vec<String>,
    pub assessment: Assessment,
    /// SHA-256 of the canonical call, computed once.
    pub call_digest: String,
    /// One entry per unit: the tier's risk points plus any estimate.
    pub amounts: Vec<Amount>,
}

impl<'a> Prepared<'a> {
    pub(crate) fn new(
        policy: &CompiledPolicy,
        subject: &'a Subject,
        call: &'a ToolCall,
        estimate: &[Amount],
    ) -> Result<Self> {
        // Callers validate the request (subject included) before preparing it.
        let scopes = subject.scopes_of_valid();
        let assessment = policy.assess(call, &scopes);
        let mut amounts = Vec::with_capacity(estimate.len() + 1);
        let extra_risk = estimate
            .iter()
            .find(|a| a.unit == Unit::RiskPoints)
            .map_or(0, |a| a.amount);
        amounts.push(Amount::new(
            Unit::RiskPoints,
            add(assessment.risk_points, extra_risk, "risk points")?,
        ));
        amounts.extend(estimate.iter().filter(|a| a.unit != Unit::RiskPoints));
        Ok(Prepared {
            subject,
            call,
            scopes,
            assessment,
            call_digest: call.digest(),
            amounts,
        })
    }

    /// The call's action as recorded: the registration's kind over the caller's (see `audit`).
    fn action(&self) -> crate::model::Action {
        let mut action = self.call.action.clone();
        if let Some(kind) = &self.assessment.classification.kind {
            action.kind = Some(kind.clone());
        }
        action
    }

    fn base_decision(&self, kind: DecisionKind) -> Decision {
        let c = &self.assessment.classification;
        let mut d = Decision::allow(c.tier, self.assessment.risk_points);
        d.decision = kind;
        d.rules.clone_from(&c.rules);
        d
    }

    /// The audit record of this call, borrowing its subject, scopes, action and digest.
    pub(crate) fn audit(&self, kind: AuditKind, now_ms: i64) -> RecordView<'_> {
        let mut r = RecordView::new(kind, now_ms);
        r.subject = Some(self.subject);
        r.scopes = &self.scopes;
        let mut action = self.call.action.view();
        // The registration's kind, when it has one, over the caller's: the caller (the agent's
        // side) could label a DROP as `fs.read` in the audit trail otherwise.
        if let Some(kind) = self.assessment.classification.kind.as_deref() {
            action.kind = Some(kind);
        }
        r.action = Some(action);
        r.call_digest = Some(&self.call_digest);
        r.tier = Some(self.assessment.classification.tier);
        r
    }
}

/// Seals `record` after the current head and appends it.
pub(crate) fn append(txn: &mut dyn LedgerTxn, record: AuditRecord) -> Result<()> {
    append_view(txn, record.view())
}

/// Seals a borrowed record after the current head and appends it.
pub(crate) fn append_view(txn: &mut dyn LedgerTxn, record: RecordView<'_>) -> Result<()> {
    // Budgets written so far belong to the operation's own record (reserve, commit, ...), not
    // to a record it appends on the way (an approval consumed before its reservation's record).
    let budgets = if record.kind.changes_budgets() {
        txn.take_written_budgets()
    } else {
        Vec::new()
    };
    // Caps counters advance only with a reservation, written just before its record.
    let caps = if record.kind == AuditKind::Reserve {
        txn.take_written_caps()
    } else {
        Vec::new()
    };
    let record = RecordView {
        budgets: &budgets,
        caps: &caps,
        ..record
    };
    let head = txn.audit_head()?;
    txn.append_audit(record.seal_after(head))
}

/// Appends the record of a decision about this call (decide, denial or reserve): the call,
/// the decision with its approval detail, `amounts`, and the reservation made, if any.
fn append_decision(
    txn: &mut dyn LedgerTxn,
    prepared: &Prepared<'_>,
    kind: AuditKind,
    now_ms: i64,
    d: &Decision,
    amounts: &[Amount],
    reservation_id: Option<&str>,
) -> Result<()> {
    let detail = approval::decision_detail(d);
    let mut r = prepared.audit(kind, now_ms);
    r.decision = Some(d.decision);
    r.reason_code = d.reason_code;
    r.rules = &d.rules;
    r.detail = detail.as_ref();
    r.amounts = amounts;
    r.reservation_id = reservation_id;
    append_view(txn, r)
}

/// Budgets of `scopes` in `unit` (only those that exist).
fn budgets_for(txn: &mut dyn LedgerTxn, scopes: &[String], unit: Unit) -> Result<Vec<Budget>> {
    let mut out = Vec::new();
    for s in scopes {
        if let Some(b) = txn.budget(s, unit)? {
            out.push(b);
        }
    }
    Ok(out)
}

/// Checks every budgeted scope for every amount. Returns the denial, if any, and the balances.
/// The outcome of checking budgets: the first denial (reason, scope or unit), the balances seen,
/// and the budgets of each amount's unit (in `Prepared::amounts` order).
type BudgetCheck = (Option<(ReasonCode, String)>, Vec<Balance>, Vec<Vec<Budget>>);

fn check_budgets(txn: &mut dyn LedgerTxn, prepared: &Prepared<'_>) -> Result<BudgetCheck> {
    let mut balances = Vec::new();
    let mut per_unit = Vec::with_capacity(prepared.amounts.len());
    let mut denial = None;
    for amount in &prepared.amounts {
        let budgets = budgets_for(txn, &prepared.scopes, amount.unit)?;
        if budgets.is_empty() && denial.is_none() {
            denial = Some((ReasonCode::BudgetNotFound, amount.unit.to_string()));
        }
        for b in &budgets {
            balances.push(b.balance());
            if denial.is_some() {
                continue;
            }
            let reason = match b.status {
                BudgetStatus::Closed => Some(ReasonCode::BudgetClosed),
                BudgetStatus::Frozen => Some(ReasonCode::BudgetFrozen),
                BudgetStatus::Active if b.debt > b.overdraft_limit => {
                    Some(ReasonCode::OverdraftLimitExceeded)
                }
                BudgetStatus::Active if b.debt > 0 => Some(ReasonCode::DebtOutstanding),
                BudgetStatus::Active if b.remaining() < amount.amount => {
                    Some(ReasonCode::BudgetExceeded)
                }
                BudgetStatus::Active => None,
            };
            if let Some(r) = reason {
                denial = Some((r, b.scope.clone()));
            }
        }
        per_unit.push(budgets);
    }
    Ok((denial, balances, per_unit))
}

/// Evaluates a prepared call against policy and budgets. A budget shortfall first returns
/// the holds of expired reservations, so a stale hold never causes a denial.
fn evaluate(
    txn: &mut dyn LedgerTxn,
    ctx: &Ctx<'_>,
    prepared: &Prepared<'_>,
) -> Result<(Decision, Vec<Vec<Budget>>)> {
    if let Some((reason, message)) = &prepared.assessment.deny {
        let mut d = prepared.base_decision(DecisionKind::Deny);
        d.reason_code = Some(*reason);
        d.message = Some(message.clone());
        return Ok((d, Vec::new()));
    }
    let mut checked = check_budgets(txn, prepared)?;
    if matches!(checked.0, Some((ReasonCode::BudgetExceeded, _)))
        && sweep(txn, ctx.now_ms, usize::MAX)? > 0
    {
        checked = check_budgets(txn, prepared)?;
    }
    let (denial, balances, per_unit) = checked;
    let mut d = prepared.base_decision(DecisionKind::Allow);
    d.balances = balances;
    if let Some((reason, at)) = denial {
        d.decision = DecisionKind::Deny;
        d.reason_code = Some(reason);
        if reason == ReasonCode::BudgetNotFound {
            d.message = Some(format!("no scope of the subject has a {at} budget"));
        } else {
            d.message = Some(format!("{} on {at}", reason.as_str()));
            d.scope = Some(at);
        }
    }
    // ALLOW_WITH_CAPS rules (policy.rs): caps while a scope's budget is low, enforced here.
    ctx.policy.apply_caps(
        txn,
        &mut d,
        &prepared.scopes,
        &prepared.call.action.name,
        prepared.assessment.classification.tier,
        &prepared.amounts,
        &per_unit,
        ctx.now_ms,
    )?;
    Ok((d, per_unit))
}

/// `decide`: evaluates and records the decision; holds nothing.
pub(crate) fn decide(
    txn: &mut dyn LedgerTxn,
    ctx: &Ctx<'_>,
    prepared: &Prepared<'_>,
) -> Result<Decision> {
    let (mut decision, _) = evaluate(txn, ctx, prepared)?;
    // Approvals (approval.rs): decide records the request too, so a preflight already gives
    // the operator something to approve; it never takes or consumes a grant.
    if decision.is_allowed()
        && approval::needed(ctx.policy, prepared.assessment.classification.tier)
    {
        approval::require(txn, ctx.policy, ctx.now_ms, prepared, &mut decision)?;
    }
    append_decision(
        txn,
        prepared,
        AuditKind::Decide,
        ctx.now_ms,
        &decision,
        &prepared.amounts,
        None,
    )?;
    Ok(decision)
}

/// An operation's idempotency, when the caller gave a key: the name its result is remembered
/// under (`reserve`, `commit:<id>`, ...), the key, and the digest of the request without it.
struct Idempotency<'a> {
    keyed: Option<(Cow<'static, str>, &'a str, String)>,
}

impl<'a> Idempotency<'a> {
    /// The idempotency of `req` under the name `op` gives (built only when there is a key),
    /// and the remembered result when this is a replay of it. The same key with a different
    /// request is `IDEMPOTENCY_MISMATCH`.
    fn check<R: Serialize, T: DeserializeOwned, N: Into<Cow<'static, str>>>(
        txn: &mut dyn LedgerTxn,
        op: impl FnOnce() -> N,
        key: Option<&'a str>,
        req: &R,
    ) -> Result<(Self, Option<T>)> {
        let Some(key) = key else {
            return Ok((Idempotency { keyed: None }, None));
        };
        let op = op().into();
        let digest = request_digest(&op, req);
        let prev = match txn.idempotency(&op, key)? {
            None => None,
            Some(e) if e.request_digest != digest => {
                return Err(CyclesError::IdempotencyMismatch(key.to_string()));
            }
            Some(e) => Some(serde_json::from_value(e.result).map_err(|e| {
                CyclesError::LedgerCorrupt(format!("idempotency entry {key}: {e}"))
            })?),
        };
        let idempotency = Idempotency {
            keyed: Some((op, key, digest)),
        };
        Ok((idempotency, prev))
    }

    /// Remembers `result` for replays (when the caller gave a key).
    fn remember<T: Serialize>(&self, txn: &mut dyn LedgerTxn, result: &T) -> Result<()> {
        let Some((op, key, digest)) = &self.keyed else {
            return Ok(());
        };
        let entry = IdempotencyEntry {
            request_digest: digest.clone(),
            result: serde_json::to_value(result)
                .map_err(|e| CyclesError::LedgerCorrupt(format!("idempotency result: {e}")))?,
        };
        txn.put_idempotency(op, key, &entry)
    }
}

/// Digest of a request for idempotency, without its key.
pub(crate) fn request_digest<T: Serialize>(scope: &str, req: &T) -> String {
    let mut v = serde_json::to_value(req).expect("requests serialize");
    if let serde_json::Value::Object(m) = &mut v {
        m.remove("idempotency_key");
        m.insert("__op".into(), serde_json::Value::String(scope.into()));
    }
    sha256_hex(&canonical_json(&v))
}

/// A reservation's outcome as remembered for replays.
#[derive(Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "outcome")]
pub(crate) enum ReserveOutcome {
    Reserved { reservation: Box<Reservation> },
    Denied { decision: Box<Decision> },
}

/// `reserve`: holds every amount on every budgeted scope, or records the denial.
pub(crate) fn reserve(
    txn: &mut dyn LedgerTxn,
    ctx: &Ctx<'_>,
    prepared: &Prepared<'_>,
    req: &ReserveRequest,
    reservation_id: &str,
) -> Result<ReserveOutcome> {
    let (idempotency, prev) =
        Idempotency::check(txn, || "reserve", req.idempotency_key.as_deref(), req)?;
    if let Some(prev) = prev {
        replayable(txn, prepared, &prev)?;
        return Ok(prev);
    }
    // A malformed grant is bad input: the error aborts the transaction, nothing changes.
    let grant = req.grant.as_ref().map(Grant::from_value).transpose()?;
    let (mut decision, per_unit) = evaluate(txn, ctx, prepared)?;
    // Approvals are looked at only once policy and budgets allow the call: a grant never
    // bypasses a budget. A grant for a call below the threshold is ignored (not consumed).
    let mut approved = None;
    if decision.is_allowed()
        && approval::needed(ctx.policy, prepared.assessment.classification.tier)
    {
        // A grant an approver recorded for this exact call and subject serves as if presented
        // (checked the same way): retrying the call after `cycles approve` just works.
        let recorded = match &grant {
            None => approval::recorded_grant(txn, ctx.now_ms, prepared)?,
            Some(_) => None,
        };
        match grant.or(recorded) {
            None => approval::require(txn, ctx.policy, ctx.now_ms, prepared, &mut decision)?,
            Some(g) => {
                approved = approval::check_grant(
                    txn,
                    ctx.policy,
                    ctx.now_ms,
                    prepared,
                    &g,
                    &mut decision,
                )?
                .map(|request| (request, g));
            }
        }
    }
    if !decision.is_allowed() {
        append_decision(
            txn,
            prepared,
            AuditKind::Denial,
            ctx.now_ms,
            &decision,
            &prepared.amounts,
            None,
        )?;
        let out = ReserveOutcome::Denied {
            decision: Box::new(decision),
        };
        idempotency.remember(txn, &out)?;
        return Ok(out);
    }
    let defaults = &ctx.policy.policy().defaults;
    let mut holds = Vec::with_capacity(prepared.amounts.len());
    for (amount, budgets) in prepared.amounts.iter().zip(per_unit) {
        let mut scopes = Vec::with_capacity(budgets.len());
        for mut b in budgets {
            b.reserved = add(b.reserved, amount.amount, "reserved")?;
            txn.put_budget(&b)?;
            scopes.push(b.scope);
        }
        holds.push(Hold {
            unit: amount.unit,
            amount: amount.amount,
            scopes,
        });
    }
    let ttl = req.ttl_ms.unwrap_or(defaults.ttl_ms);
    decision.balances = balances_of(txn, &holds)?;
    let reservation = Reservation {
        reservation_id: reservation_id.to_string(),
        status: ReservationStatus::Active,
        subject: prepared.subject.clone(),
        action: prepared.action(),
        call_digest: prepared.call_digest.clone(),
        tier: prepared.assessment.classification.tier,
        holds,
        decision,
        created_at_ms: ctx.now_ms,
        expires_at_ms: add(ctx.now_ms, ttl, "expires_at_ms")?,
        grace_ms: req.grace_period_ms.unwrap_or(defaults.grace_period_ms),
        extensions: 0,
        overage_policy: req.overage_policy.unwrap_or(defaults.overage_policy),
        charged: Vec::new(),
        finalized_at_ms: None,
    };
    txn.put_reservation(&reservation)?;
    // The grant is spent in the reservation's own transaction: single use, or no reservation.
    if let Some((request, g)) = approved {
        approval::consume(txn, ctx.now_ms, request, &g, reservation_id)?;
    }
    // Caps state (steps, cooldown) commits with the reservation or not at all.
    ctx.policy
        .record_caps(txn, &reservation.decision, ctx.now_ms)?;
    append_decision(
        txn,
        prepared,
        AuditKind::Reserve,
        ctx.now_ms,
        &reservation.decision,
        &reservation.reserved(),
        Some(&reservation.reservation_id),
    )?;
    let out = ReserveOutcome::Reserved {
        reservation: Box::new(reservation),
    };
    idempotency.remember(txn, &out)?;
    Ok(out)
}

/// A replayed reservation must be one the ledger holds, made for this call and subject: an
/// outcome planted under a key a client will use (hooks' keys are predictable) would otherwise
/// hand out a reservation nobody held, and the gate would allow. One read, on replays only.
fn replayable(
    txn: &mut dyn LedgerTxn,
    prepared: &Prepared<'_>,
    prev: &ReserveOutcome,
) -> Result<()> {
    let ReserveOutcome::Reserved { reservation: r } = prev else {
        return Ok(());
    };
    if held_as_stored(txn, r)?.is_some() && r.call_digest == prepared.call_digest {
        return Ok(());
    }
    Err(CyclesError::LedgerCorrupt(format!(
        "the stored outcome of this reserve names reservation {}, which the ledger does not \
         hold for this call",
        r.reservation_id
    )))
}

/// The reservation a keyed `reserve` made under `key`, as the ledger holds it now; `None` when
/// no reserve used the key or it was denied. A stored outcome naming a reservation the ledger
/// does not hold as reserved is `LEDGER_CORRUPT` (see [`replayable`]).
pub(crate) fn reserved_under_key(
    txn: &mut dyn LedgerTxn,
    key: &str,
) -> Result<Option<Reservation>> {
    let Some(entry) = txn.idempotency("reserve", key)? else {
        return Ok(None);
    };
    let outcome: ReserveOutcome = serde_json::from_value(entry.result)
        .map_err(|e| CyclesError::LedgerCorrupt(format!("idempotency entry {key}: {e}")))?;
    let ReserveOutcome::Reserved { reservation: r } = outcome else {
        return Ok(None);
    };
    match held_as_stored(txn, &r)? {
        Some(h) => Ok(Some(h)),
        None => Err(CyclesError::LedgerCorrupt(format!(
            "the stored outcome of reserve key {key} names reservation {}, which the ledger \
             does not hold as reserved",
            r.reservation_id
        ))),
    }
}

/// The reservation the ledger holds under `stored`'s id, if it is the one a stored reserve
/// outcome names (same call, subject, tier and creation time): a planted outcome names one the
/// ledger does not hold, or holds for another call.
fn held_as_stored(txn: &mut dyn LedgerTxn, stored: &Reservation) -> Result<Option<Reservation>> {
    Ok(txn.reservation(&stored.reservation_id)?.filter(|h| {
        h.call_digest == stored.call_digest
            && h.subject == stored.subject
            && h.tier == stored.tier
            && h.created_at_ms == stored.created_at_ms
    }))
}

/// Balances of every scope a reservation holds, after its change.
fn balances_of(txn: &mut dyn LedgerTxn, holds: &[Hold]) -> Result<Vec<Balance>> {
    let mut out = Vec::new();
    for h in holds {
        for s in &h.scopes {
            if let Some(b) = txn.budget(s, h.unit)? {
                out.push(b.balance());
            }
        }
    }
    Ok(out)
}

fn reservation_record(kind: AuditKind, r: &Reservation, now_ms: i64) -> AuditRecord {
    let mut rec = AuditRecord::new(kind, now_ms);
    rec.subject = Some(r.subject.clone());
    rec.scopes = r
        .decision
        .balances
        .iter()
        .map(|b| b.scope.clone())
        .collect();
    rec.scopes.dedup();
    rec.action = Some(r.action.clone());
    rec.call_digest = Some(r.call_digest.clone());
    rec.tier = Some(r.tier);
    rec.reservation_id = Some(r.reservation_id.clone());
    rec
}

/// Returns a reservation's holds to its budgets.
fn return_holds(txn: &mut dyn LedgerTxn, r: &Reservation) -> Result<()> {
    for h in &r.holds {
        for s in &h.scopes {
            let mut b = txn.budget(s, h.unit)?.ok_or_else(|| {
                CyclesError::LedgerCorrupt(format!("budget {s} {} vanished", h.unit))
            })?;
            b.reserved = sub(b.reserved, h.amount, "reserved")?;
            if b.reserved < 0 {
                return Err(CyclesError::LedgerCorrupt(format!(
                    "budget {s} {} would hold a negative reservation",
                    h.unit
                )));
            }
            txn.put_budget(&b)?;
        }
    }
    Ok(())
}

/// Marks an ACTIVE reservation EXPIRED and returns its hold.
fn expire(txn: &mut dyn LedgerTxn, mut r: Reservation, now_ms: i64) -> Result<()> {
    return_holds(txn, &r)?;
    r.status = ReservationStatus::Expired;
    r.finalized_at_ms = Some(now_ms);
    txn.put_reservation(&r)?;
    let mut rec = reservation_record(AuditKind::Expire, &r, now_ms);
    rec.amounts = r.reserved();
    append(txn, rec)
}

/// Expires up to `max` reservations past expiry plus grace. Returns how many.
pub(crate) fn sweep(txn: &mut dyn LedgerTxn, now_ms: i64, max: usize) -> Result<usize> {
    let mut n = 0;
    loop {
        let ids = txn.expired_reservation_ids(now_ms, SWEEP_BATCH.min(max - n))?;
        if ids.is_empty() {
            return Ok(n);
        }
        for id in ids {
            if let Some(r) = txn.reservation(&id)? {
                expire(txn, r, now_ms)?;
                n += 1;
            }
        }
        if n >= max {
            return Ok(n);
        }
    }
}

/// Loads an ACTIVE reservation, expiring it lazily when past `deadline`.
/// `Ok(Err(..))` reports a committed expiry or a finalized reservation.
fn load_active(
    txn: &mut dyn LedgerTxn,
    id: &str,
    now_ms: i64,
    past_deadline: impl Fn(&Reservation) -> bool,
) -> Result<Settled<Reservation>> {
    let r = txn
        .reservation(id)?
        .ok_or_else(|| CyclesError::NotFound(format!("reservation {id}")))?;
    match r.status {
        ReservationStatus::Committed | ReservationStatus::Released => {
            Ok(Err(CyclesError::ReservationFinalized(id.to_string())))
        }
        ReservationStatus::Expired => Ok(Err(CyclesError::ReservationExpired(id.to_string()))),
        ReservationStatus::Active if r.expires_at_ms.saturating_add(r.grace_ms) < now_ms => {
            expire(txn, r, now_ms)?;
            Ok(Err(CyclesError::ReservationExpired(id.to_string())))
        }
        ReservationStatus::Active if past_deadline(&r) => {
            Ok(Err(CyclesError::ReservationExpired(id.to_string())))
        }
        ReservationStatus::Active => Ok(Ok(r)),
    }
}

/// How a charge of `actual` against a held `held` lands on one budget.
struct Charge {
    spent: i64,
    debt: i64,
    capped: bool,
}

/// Computes the charge on one budget after its hold was removed. Errors change nothing.
fn charge_on(b: &Budget, held: i64, actual: i64, policy: CommitOveragePolicy) -> Result<Charge> {
    if actual <= held {
        return Ok(Charge {
            spent: actual,
            debt: 0,
            capped: false,
        });
    }
    let over = actual - held;
    // The hold is already returned, so `remaining` includes it; the overage needs room beyond it.
    let available = sub(b.remaining(), held, "remaining")?.max(0);
    match policy {
        CommitOveragePolicy::Reject if over > available => Err(CyclesError::BudgetExceeded {
            scope: b.scope.clone(),
            unit: b.unit.to_string(),
        }),
        CommitOveragePolicy::Reject => Ok(Charge {
            spent: actual,
            debt: 0,
            capped: false,
        }),
        CommitOveragePolicy::AllowIfAvailable => {
            let extra = over.min(available);
            Ok(Charge {
                spent: add(held, extra, "charge")?,
                debt: 0,
                capped: extra < over,
            })
        }
        CommitOveragePolicy::AllowWithOverdraft => {
            let extra = over.min(available);
            let debt = over - extra;
            if add(b.debt, debt, "debt")? > b.overdraft_limit {
                return Err(CyclesError::OverdraftLimitExceeded {
                    scope: b.scope.clone(),
                    unit: b.unit.to_string(),
                });
            }
            Ok(Charge {
                spent: add(held, extra, "charge")?,
                debt,
                capped: false,
            })
        }
    }
}

/// Applies a charge of `actual` (held `held`) to every budget in `budgets`.
/// `ALLOW_IF_AVAILABLE` charges every scope the same capped amount.
/// Returns `(charged, debt_incurred)`.
fn apply_charge(
    txn: &mut dyn LedgerTxn,
    budgets: Vec<Budget>,
    held: i64,
    actual: i64,
    policy: CommitOveragePolicy,
) -> Result<(i64, i64)> {
    let mut charges = Vec::with_capacity(budgets.len());
    for b in &budgets {
        charges.push(charge_on(b, held, actual, policy)?);
    }
    // Same charge on every scope: the smallest one any scope could take.
    let charged = charges
        .iter()
        .map(|c| add(c.spent, c.debt, "charge"))
        .collect::<Result<Vec<_>>>()?
        .into_iter()
        .min()
        .unwrap_or(actual);
    let capped = charges.iter().any(|c| c.capped);
    let mut max_debt = 0;
    for (mut b, c) in budgets.into_iter().zip(charges) {
        let (spent, debt) = if capped {
            (charged, 0)
        } else {
            (c.spent, c.debt)
        };
        b.spent = add(b.spent, spent, "spent")?;
        b.debt = add(b.debt, debt, "debt")?;
        // Only a scope that could not cover the whole overage is over its limit (protocol
        // v0.1.24); a wider scope that had room only follows the smaller charge.
        if c.capped {
            b.is_over_limit = true;
        }
        max_debt = max_debt.max(debt);
        txn.put_budget(&b)?;
    }
    Ok((charged, max_debt))
}

/// A call that ran instead of the one reserved, as the commit record names it.
#[derive(Serialize)]
struct RanOtherwise {
    call_digest: String,
    risk_points: i64,
    rules: Vec<String>,
    tier: Tier,
    tool: String,
}

/// What `ran` is, when it is not the reserved call: rated by the policy for the reservation's
/// subject (its tier's points are what it costs).
fn ran_otherwise(
    ctx: &Ctx<'_>,
    r: &Reservation,
    ran: Option<&ToolCall>,
) -> Result<Option<RanOtherwise>> {
    let Some(call) = ran else {
        return Ok(None);
    };
    let call_digest = call.digest();
    if call_digest == r.call_digest {
        return Ok(None);
    }
    let assessment = ctx.policy.assess(call, &r.subject.scopes()?);
    Ok(Some(RanOtherwise {
        call_digest,
        risk_points: assessment.risk_points,
        rules: assessment.classification.rules,
        tier: assessment.classification.tier,
        tool: call.action.name.clone(),
    }))
}

/// `commit`: charges the actual amounts, returns the rest.
/// `commit` (and, with `req.charge_if_expired`, [`charge_expired`]).
pub(crate) fn commit(
    txn: &mut dyn LedgerTxn,
    ctx: &Ctx<'_>,
    id: &str,
    req: &CommitRequest,
) -> Result<Settled<CommitResult>> {
    let (idempotency, prev) = Idempotency::check(
        txn,
        || format!("commit:{id}"),
        req.idempotency_key.as_deref(),
        req,
    )?;
    if let Some(prev) = prev {
        return Ok(Ok(prev));
    }
    let mut r = match load_active(txn, id, ctx.now_ms, |_| false)? {
        Ok(r) => r,
        Err(CyclesError::ReservationExpired(_)) if req.charge_if_expired => {
            return charge_expired(txn, ctx, id, req, &idempotency);
        }
        Err(e) => return Ok(Err(e)),
    };
    check_units(&r, &req.actual)?;
    let ran = ran_otherwise(ctx, &r, req.ran.as_ref())?;
    return_holds(txn, &r)?;
    let mut charged = Vec::with_capacity(r.holds.len());
    let mut released = Vec::with_capacity(r.holds.len());
    let mut debt_incurred = Vec::new();
    for h in &r.holds {
        let mut actual = requested(req, h);
        let mut raised_by_ran = false;
        if let Some(ran) = &ran
            && h.unit == Unit::RiskPoints
            && ran.risk_points > actual
        {
            actual = ran.risk_points;
            raised_by_ran = true;
        }
        let budgets = hold_budgets(txn, h)?;
        // A charge `ran` raised past what the overage policy lets the budget take is charged as
        // far as it can be (ALLOW_IF_AVAILABLE), never refused: the call already ran, and a
        // refused commit leaves the reservation to expire, which returns the hold uncharged.
        let fallback = raised_by_ran.then(|| budgets.clone());
        // `charge_on` sees budgets with the hold already returned: pass held = h.amount so the
        // part up to the hold is always covered. Its errors change nothing, so retrying is safe.
        let (c, debt) = match apply_charge(txn, budgets, h.amount, actual, r.overage_policy) {
            Err(
                CyclesError::BudgetExceeded { .. } | CyclesError::OverdraftLimitExceeded { .. },
            ) if fallback.is_some() => {
                let budgets = fallback.expect("checked above");
                let policy = CommitOveragePolicy::AllowIfAvailable;
                apply_charge(txn, budgets, h.amount, actual, policy)?
            }
            other => other?,
        };
        charged.push(Amount::new(h.unit, c));
        released.push(Amount::new(h.unit, (h.amount - c).max(0)));
        if debt > 0 {
            debt_incurred.push(Amount::new(h.unit, debt));
        }
    }
    r.status = ReservationStatus::Committed;
    r.finalized_at_ms = Some(ctx.now_ms);
    let detail = serde_json::json!({
        "released": released,
        "debt_incurred": debt_incurred,
        "overage_policy": r.overage_policy,
    });
    let settlement = Settlement {
        kind: AuditKind::Commit,
        charged,
        released,
        debt_incurred,
        detail,
        event_id: None,
    };
    record_settlement(txn, ctx, &idempotency, r, settlement, ran)
}

/// What a commit, or a charge after expiry, charged: recorded by [`record_settlement`].
struct Settlement {
    /// `Commit`, or `Event` for a charge after expiry.
    kind: AuditKind,
    charged: Vec<Amount>,
    released: Vec<Amount>,
    debt_incurred: Vec<Amount>,
    detail: serde_json::Value,
    event_id: Option<String>,
}

/// Stores the reservation with what was charged, appends the record (naming the call that
/// ran, when another one did) and remembers the result for replays.
fn record_settlement(
    txn: &mut dyn LedgerTxn,
    ctx: &Ctx<'_>,
    idempotency: &Idempotency<'_>,
    mut r: Reservation,
    s: Settlement,
    ran: Option<RanOtherwise>,
) -> Result<Settled<CommitResult>> {
    r.charged.clone_from(&s.charged);
    txn.put_reservation(&r)?;
    let mut rec = reservation_record(s.kind, &r, ctx.now_ms);
    rec.amounts.clone_from(&s.charged);
    let mut detail = s.detail;
    if let Some(ran) = ran {
        detail["ran"] = serde_json::json!(ran);
    }
    rec.detail = Some(detail);
    append(txn, rec)?;
    let result = CommitResult {
        reservation_id: r.reservation_id.clone(),
        status: r.status,
        charged: s.charged,
        released: s.released,
        debt_incurred: s.debt_incurred,
        balances: balances_of(txn, &r.holds)?,
        event_id: s.event_id,
    };
    idempotency.remember(txn, &result)?;
    Ok(Ok(result))
}

/// What a commit asks to charge for a hold: its actual amount, or what was held.
fn requested(req: &CommitRequest, h: &Hold) -> i64 {
    req.actual
        .iter()
        .find(|a| a.unit == h.unit)
        .map_or(h.amount, |a| a.amount)
}

/// The budgets a hold is on (each must exist: the hold was taken on it).
fn hold_budgets(txn: &mut dyn LedgerTxn, h: &Hold) -> Result<Vec<Budget>> {
    let mut budgets = Vec::with_capacity(h.scopes.len());
    for s in &h.scopes {
        budgets.push(txn.budget(s, h.unit)?.ok_or_else(|| {
            CyclesError::LedgerCorrupt(format!("budget {s} {} vanished", h.unit))
        })?);
    }
    Ok(budgets)
}

/// `UNIT_MISMATCH` when `actual` names a unit the reservation does not hold.
fn check_units(r: &Reservation, actual: &[Amount]) -> Result<()> {
    for (i, a) in actual.iter().enumerate() {
        if !r.holds.iter().any(|h| h.unit == a.unit) {
            return Err(CyclesError::UnitMismatch(format!(
                "actual[{i}] is {} but the reservation holds {}",
                a.unit,
                r.holds
                    .iter()
                    .map(|h| h.unit.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
    }
    Ok(())
}

/// `commit` with `charge_if_expired` of a reservation that expired while its call ran (the
/// expiry returned its hold): the call is charged as a commit would charge it (the actual
/// amounts or what was held, raised by `ran`, whatever the budgets' status), but as new
/// spending, capped to what the budgets can take (or into the overdraft the reservation
/// allowed), never refused: it already ran. The record is an event naming the reservation, its
/// call and subject; the reservation stays EXPIRED, with what was charged. Once per
/// reservation: a second charge is `RESERVATION_FINALIZED`.
fn charge_expired(
    txn: &mut dyn LedgerTxn,
    ctx: &Ctx<'_>,
    id: &str,
    req: &CommitRequest,
    idempotency: &Idempotency<'_>,
) -> Result<Settled<CommitResult>> {
    // One charge per reservation, so its event id follows from the reservation's: no id is
    // drawn on every commit that merely asks for this.
    let event_id = format!("evt_{}", id.strip_prefix("rsv_").unwrap_or(id));
    let event_id = event_id.as_str();
    let r = txn
        .reservation(id)?
        .ok_or_else(|| CyclesError::NotFound(format!("reservation {id}")))?;
    if r.status != ReservationStatus::Expired || !r.charged.is_empty() {
        return Ok(Err(CyclesError::ReservationFinalized(id.to_string())));
    }
    check_units(&r, &req.actual)?;
    let ran = ran_otherwise(ctx, &r, req.ran.as_ref())?;
    let mut charged = Vec::with_capacity(r.holds.len());
    let mut debt_incurred = Vec::new();
    for h in &r.holds {
        let mut actual = requested(req, h);
        if let Some(ran) = &ran
            && h.unit == Unit::RiskPoints
        {
            actual = actual.max(ran.risk_points);
        }
        let budgets = hold_budgets(txn, h)?;
        let policy = match r.overage_policy {
            CommitOveragePolicy::AllowWithOverdraft => CommitOveragePolicy::AllowWithOverdraft,
            _ => CommitOveragePolicy::AllowIfAvailable,
        };
        let (c, debt) = match apply_charge(txn, budgets.clone(), 0, actual, policy) {
            // Past the overdraft limit: as much as the budgets can take.
            Err(CyclesError::OverdraftLimitExceeded { .. }) => apply_charge(
                txn,
                budgets,
                0,
                actual,
                CommitOveragePolicy::AllowIfAvailable,
            )?,
            other => other?,
        };
        charged.push(Amount::new(h.unit, c));
        if debt > 0 {
            debt_incurred.push(Amount::new(h.unit, debt));
        }
    }
    let detail = serde_json::json!({
        "event_id": event_id,
        "after_expiry": true,
        "requested": req.actual,
        "debt_incurred": debt_incurred,
    });
    let settlement = Settlement {
        kind: AuditKind::Event,
        charged,
        released: Vec::new(),
        debt_incurred,
        detail,
        event_id: Some(event_id.to_string()),
    };
    record_settlement(txn, ctx, idempotency, r, settlement, ran)
}

/// `release`: returns the whole hold without charge.
pub(crate) fn release(
    txn: &mut dyn LedgerTxn,
    ctx: &Ctx<'_>,
    id: &str,
    req: &ReleaseRequest,
) -> Result<Settled<ReleaseResult>> {
    let (idempotency, prev) = Idempotency::check(
        txn,
        || format!("release:{id}"),
        req.idempotency_key.as_deref(),
        req,
    )?;
    if let Some(prev) = prev {
        return Ok(Ok(prev));
    }
    let mut r = match load_active(txn, id, ctx.now_ms, |_| false)? {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    return_holds(txn, &r)?;
    r.status = ReservationStatus::Released;
    r.finalized_at_ms = Some(ctx.now_ms);
    txn.put_reservation(&r)?;
    let mut rec = reservation_record(AuditKind::Release, &r, ctx.now_ms);
    rec.amounts = r.reserved();
    if let Some(reason) = &req.reason {
        rec.detail = Some(serde_json::json!({ "reason": reason }));
    }
    append(txn, rec)?;
    let result = ReleaseResult {
        reservation_id: r.reservation_id.clone(),
        status: ReservationStatus::Released,
        released: r.reserved(),
        balances: balances_of(txn, &r.holds)?,
    };
    idempotency.remember(txn, &result)?;
    Ok(Ok(result))
}

/// `extend`: moves the expiry forward from the current expiry; never after expiry.
pub(crate) fn extend(
    txn: &mut dyn LedgerTxn,
    ctx: &Ctx<'_>,
    id: &str,
    req: &ExtendRequest,
) -> Result<Settled<Reservation>> {
    let (idempotency, prev) = Idempotency::check(
        txn,
        || format!("extend:{id}"),
        req.idempotency_key.as_deref(),
        req,
    )?;
    if let Some(prev) = prev {
        return Ok(Ok(prev));
    }
    let now = ctx.now_ms;
    let mut r = match load_active(txn, id, now, |r| r.expires_at_ms < now)? {
        Ok(r) => r,
        Err(e) => return Ok(Err(e)),
    };
    if r.extensions >= MAX_EXTENSIONS {
        return Err(CyclesError::MaxExtensionsExceeded(id.to_string()));
    }
    r.expires_at_ms = add(r.expires_at_ms, req.extend_by_ms, "expires_at_ms")?;
    r.extensions += 1;
    txn.put_reservation(&r)?;
    let mut rec = reservation_record(AuditKind::Extend, &r, now);
    rec.detail = Some(serde_json::json!({
        "extend_by_ms": req.extend_by_ms,
        "expires_at_ms": r.expires_at_ms,
        "extensions": r.extensions,
    }));
    append(txn, rec)?;
    idempotency.remember(txn, &r)?;
    Ok(Ok(r))
}

/// `event`: a direct charge without reservation.
pub(crate) fn event(
    txn: &mut dyn LedgerTxn,
    ctx: &Ctx<'_>,
    prepared: &Prepared<'_>,
    req: &EventRequest,
    event_id: &str,
) -> Result<EventResult> {
    let (idempotency, prev) =
        Idempotency::check(txn, || "event", req.idempotency_key.as_deref(), req)?;
    if let Some(prev) = prev {
        return Ok(prev);
    }
    let policy = req
        .overage_policy
        .unwrap_or(ctx.policy.policy().defaults.overage_policy);
    let mut charged = Vec::with_capacity(req.actual.len());
    let mut debt_incurred = Vec::new();
    let mut balances = Vec::new();
    for a in &req.actual {
        let budgets = budgets_for(txn, &prepared.scopes, a.unit)?;
        if budgets.is_empty() {
            return Err(CyclesError::NotFound(format!(
                "no scope of the subject has a {} budget",
                a.unit
            )));
        }
        for b in &budgets {
            match b.status {
                BudgetStatus::Frozen => return Err(CyclesError::BudgetFrozen(b.scope.clone())),
                BudgetStatus::Closed => return Err(CyclesError::BudgetClosed(b.scope.clone())),
                BudgetStatus::Active => {}
            }
        }
        let scopes: Vec<String> = budgets.iter().map(|b| b.scope.clone()).collect();
        let (c, debt) = apply_charge(txn, budgets, 0, a.amount, policy)?;
        charged.push(Amount::new(a.unit, c));
        if debt > 0 {
            debt_incurred.push(Amount::new(a.unit, debt));
        }
        for s in &scopes {
            if let Some(b) = txn.budget(s, a.unit)? {
                balances.push(b.balance());
            }
        }
    }
    let detail = serde_json::json!({
        "event_id": event_id,
        "requested": req.actual,
        "debt_incurred": debt_incurred,
    });
    let mut rec = prepared.audit(AuditKind::Event, ctx.now_ms);
    rec.amounts = &charged;
    rec.detail = Some(&detail);
    append_view(txn, rec)?;
    let result = EventResult {
        event_id: event_id.to_string(),
        charged,
        debt_incurred,
        balances,
    };
    idempotency.remember(txn, &result)?;
    Ok(result)
}

/// Creates or changes a budget; spending, holds and debt are kept.
pub(crate) fn set_budget(
    txn: &mut dyn LedgerTxn,
    now_ms: i64,
    spec: &BudgetSpec,
    only_if_absent: bool,
) -> Result<Option<Balance>> {
    let existing = txn.budget(&spec.scope, spec.unit)?;
    if only_if_absent && existing.is_some() {
        return Ok(None);
    }
    let mut b = existing.unwrap_or_else(|| Budget::new(&spec.scope, spec.unit, 0));
    b.allocated = spec.allocated;
    b.overdraft_limit = spec.overdraft_limit;
    b.status = spec.status;
    // A new allocation clears a capped commit's flag; debt past the limit keeps it.
    b.is_over_limit = b.debt > b.overdraft_limit;
    txn.put_budget(&b)?;
    let mut rec = AuditRecord::new(AuditKind::BudgetSet, now_ms);
    rec.scopes = vec![spec.scope.clone()];
    rec.amounts = vec![Amount::new(spec.unit, spec.allocated)];
    rec.detail = Some(serde_json::to_value(spec).expect("budget specs serialize"));
    append(txn, rec)?;
    Ok(Some(b.balance()))
}

/// Repays `amount` of a budget's overdraft debt: the funder adds `amount` to the allocation and it
/// is spent on the debt, so `remaining` rises by `amount` and `spent + reserved <= allocated`
/// keeps holding. Repaying more than the debt is refused (nothing changes).
pub(crate) fn repay_debt(
    txn: &mut dyn LedgerTxn,
    now_ms: i64,
    scope: &str,
    unit: Unit,
    amount: i64,
) -> Result<Balance> {
    let mut b = txn
        .budget(scope, unit)?
        .ok_or_else(|| CyclesError::NotFound(format!("budget {scope} {unit}")))?;
    if amount > b.debt {
        return Err(CyclesError::invalid(
            "amount",
            format!("{amount} is more than the debt of {} on {scope}", b.debt),
        ));
    }
    b.allocated = add(b.allocated, amount, "allocated")?;
    b.spent = add(b.spent, amount, "spent")?;
    b.debt -= amount;
    b.is_over_limit = b.debt > b.overdraft_limit;
    txn.put_budget(&b)?;
    let mut rec = AuditRecord::new(AuditKind::BudgetSet, now_ms);
    rec.scopes = vec![scope.to_string()];
    rec.amounts = vec![Amount::new(unit, amount)];
    rec.detail = Some(serde_json::json!({ "operation": "REPAY_DEBT", "debt_after": b.debt }));
    append(txn, rec)?;
    Ok(b.balance())
}
