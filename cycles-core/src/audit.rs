//! The audit trail: an append-only, hash-chained record of everything the gate did.
//!
//! Each record's `hash` is SHA-256 over the canonical JSON of the record without its `hash`
//! field (object keys sorted, no whitespace), and its `prev_hash` is the previous record's hash,
//! so editing, removing or reordering any record breaks the chain at that point.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::approval::{ApprovalRequest, ApprovalStatus};
use crate::error::{CyclesError, Result};
use crate::ledger::IdempotencyEntry;
use crate::machine::ReserveOutcome;
use crate::model::{
    Action, ActionView, Amount, Budget, BudgetStatus, DecisionKind, ReasonCode, Reservation,
    Subject, Tier, Unit,
};
use crate::request::{CommitResult, EventResult, ReleaseResult};

/// `prev_hash` of the first record.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What a record is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditKind {
    /// A preflight decision (allow or deny).
    Decide,
    /// A reservation was refused.
    Denial,
    /// A reservation was made.
    Reserve,
    /// A reservation was committed.
    Commit,
    /// A reservation was released.
    Release,
    /// A reservation was extended.
    Extend,
    /// A reservation expired and its hold was returned.
    Expire,
    /// A direct charge.
    Event,
    /// A budget was created or changed.
    BudgetSet,
    /// An approval was requested.
    ApprovalRequested,
    /// An approval was granted.
    ApprovalGranted,
    /// An approval was denied by its approver.
    ApprovalDenied,
    /// An approval request expired.
    ApprovalExpired,
    /// A grant was consumed by a reservation.
    ApprovalConsumed,
}

impl AuditKind {
    /// Whether records of this kind come from operations that change budgets (and so carry
    /// them as they stand after: [`AuditRecord::budgets`]).
    ///
    /// ```
    /// use cycles_core::AuditKind;
    /// assert!(AuditKind::Commit.changes_budgets());
    /// assert!(!AuditKind::Decide.changes_budgets());
    /// ```
    pub fn changes_budgets(self) -> bool {
        matches!(
            self,
            AuditKind::Reserve
                | AuditKind::Commit
                | AuditKind::Release
                | AuditKind::Expire
                | AuditKind::Event
                | AuditKind::BudgetSet
        )
    }

    /// The serialized name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditKind::Decide => "decide",
            AuditKind::Denial => "denial",
            AuditKind::Reserve => "reserve",
            AuditKind::Commit => "commit",
            AuditKind::Release => "release",
            AuditKind::Extend => "extend",
            AuditKind::Expire => "expire",
            AuditKind::Event => "event",
            AuditKind::BudgetSet => "budget_set",
            AuditKind::ApprovalRequested => "approval_requested",
            AuditKind::ApprovalGranted => "approval_granted",
            AuditKind::ApprovalDenied => "approval_denied",
            AuditKind::ApprovalExpired => "approval_expired",
            AuditKind::ApprovalConsumed => "approval_consumed",
        }
    }
}

/// One audit record. Call arguments never appear here, only their digest.
///
/// It serializes through `RecordView` (crate-private), the one definition of a record's
/// canonical JSON.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// On what.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<Action>,
    /// Amounts held, charged or released.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amounts: Vec<Amount>,
    /// The budgets this record's operation changed, as they stand after it. `verify` checks
    /// that the ledger's budgets are what the chain says, so a budget edited outside the state
    /// machine (a row updated in SQL, say) is reported even though the chain itself is intact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub budgets: Vec<Budget>,
    /// SHA-256 of the canonical call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub call_digest: Option<String>,
    /// The caps counters (`[[caps]]` rules: steps counted, cooldown) this record's reservation
    /// advanced, as they stand after it; `verify` checks the ledger's counters against them,
    /// so a counter reset outside the state machine is reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub caps: Vec<CapsCounter>,
    /// The decision, for decide and denial records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionKind>,
    /// Anything else worth keeping (rule ids, reasons, budget settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    /// SHA-256 of this record's canonical JSON without `hash`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hash: String,
    /// What happened.
    pub kind: AuditKind,
    /// Hash of the previous record.
    pub prev_hash: String,
    /// The reason code of a denial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<ReasonCode>,
    /// The reservation concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<String>,
    /// Ids of the rules that determined the decision.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<String>,
    /// The scopes concerned (budgeted scopes for holds and charges).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Position in the chain, from 1.
    pub seq: u64,
    /// Who.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// The call's tier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    /// Ledger time.
    pub time_ms: i64,
}

impl AuditRecord {
    /// A record of `kind` at `time_ms`, not yet chained.
    pub fn new(kind: AuditKind, time_ms: i64) -> Self {
        AuditRecord {
            seq: 0,
            time_ms,
            kind,
            subject: None,
            scopes: Vec::new(),
            action: None,
            call_digest: None,
            caps: Vec::new(),
            decision: None,
            reason_code: None,
            tier: None,
            amounts: Vec::new(),
            budgets: Vec::new(),
            reservation_id: None,
            rules: Vec::new(),
            detail: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// The hash this record should carry: SHA-256 of its canonical JSON without `hash`.
    pub fn compute_hash(&self) -> String {
        let mut view = self.view();
        view.hash = "";
        sha256_json_hex(&view)
    }

    /// Places the record after `(seq, hash)` of the head and seals it.
    pub fn chain_after(&mut self, head: Option<(u64, String)>) {
        let (seq, prev) = head.unwrap_or((0, GENESIS_HASH.to_string()));
        self.seq = seq + 1;
        self.prev_hash = prev;
        self.hash.clear();
        self.hash = self.compute_hash();
    }

    /// Places the record after `(seq, hash)` of the head and seals it, giving the JSON a
    /// ledger stores, built from the very bytes that were hashed (one serialization).
    ///
    /// ```
    /// use cycles_core::{AuditKind, AuditRecord};
    /// let sealed = AuditRecord::new(AuditKind::Decide, 1_000).seal_after(None);
    /// assert_eq!(sealed.seq(), 1);
    /// let back: AuditRecord = serde_json::from_str(sealed.json()).unwrap();
    /// assert_eq!(back.hash, sealed.hash());
    /// ```
    pub fn seal_after(&self, head: Option<(u64, String)>) -> SealedRecord {
        self.view().seal_after(head)
    }

    /// The record as a borrowed view (what it serializes as).
    pub(crate) fn view(&self) -> RecordView<'_> {
        RecordView {
            action: self.action.as_ref().map(Action::view),
            amounts: &self.amounts,
            budgets: &self.budgets,
            call_digest: self.call_digest.as_deref(),
            caps: &self.caps,
            decision: self.decision,
            detail: self.detail.as_ref(),
            hash: &self.hash,
            kind: self.kind,
            prev_hash: &self.prev_hash,
            reason_code: self.reason_code,
            reservation_id: self.reservation_id.as_deref(),
            rules: &self.rules,
            scopes: &self.scopes,
            seq: self.seq,
            subject: self.subject.as_ref(),
            tier: self.tier,
            time_ms: self.time_ms,
        }
    }
}

impl Serialize for AuditRecord {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.view().serialize(s)
    }
}

/// A record borrowing what it names: the operation's subject, scopes, call and decision are
/// serialized and hashed where they already are, never copied into a record first (the hot
/// path of every decide). Its serialization is the canonical JSON of [`AuditRecord`].
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecordView<'a> {
    // Fields in alphabetical order (and nested types likewise), so that serde_json's output
    // is canonical JSON without a detour through `Value`: hashing stays cheap on the hot path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<ActionView<'a>>,
    #[serde(skip_serializing_if = "no_items")]
    pub amounts: &'a [Amount],
    #[serde(skip_serializing_if = "no_items", serialize_with = "canonical_budgets")]
    pub budgets: &'a [Budget],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub call_digest: Option<&'a str>,
    #[serde(skip_serializing_if = "no_items")]
    pub caps: &'a [CapsCounter],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decision: Option<DecisionKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'a serde_json::Value>,
    #[serde(skip_serializing_if = "no_text")]
    pub hash: &'a str,
    pub kind: AuditKind,
    pub prev_hash: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason_code: Option<ReasonCode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<&'a str>,
    #[serde(skip_serializing_if = "no_items")]
    pub rules: &'a [String],
    #[serde(skip_serializing_if = "no_items")]
    pub scopes: &'a [String],
    pub seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject: Option<&'a Subject>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tier: Option<Tier>,
    pub time_ms: i64,
}

/// A caps counter of the ledger (`[[caps]]` rule `id` watching `scope`, key `<id>@<scope>`) as a
/// reservation left it: the steps counted while the caps applied, the allocation they were
/// counted against, and the end of the cooldown.
///
/// ```
/// use cycles_core::CapsCounter;
/// let c = CapsCounter { allocated: 100, cooldown_until_ms: 2_000, key: "low@tenant:acme".into(), steps: 1 };
/// // Fields in alphabetical order: the record's JSON is canonical as serde writes it.
/// assert!(serde_json::to_string(&c).unwrap().starts_with("{\"allocated\":100,\"cooldown_until_ms\""));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CapsCounter {
    /// The budget's allocation when the steps started counting (a new one restarts them).
    pub allocated: i64,
    /// No reservation of the scope before this ledger time while the caps apply.
    pub cooldown_until_ms: i64,
    /// `<rule id>@<scope>`, as in the decision's rule `caps:<id>@<scope>`.
    pub key: String,
    /// Reservations made while the caps applied.
    pub steps: i64,
}

/// A budget's fields in alphabetical order: [`Budget`] declares them in reading order, and a
/// record's JSON must be canonical as serde writes it.
#[derive(Serialize)]
struct BudgetView<'a> {
    allocated: i64,
    debt: i64,
    is_over_limit: bool,
    overdraft_limit: i64,
    reserved: i64,
    scope: &'a str,
    spent: i64,
    status: BudgetStatus,
    unit: Unit,
}

fn canonical_budgets<S: serde::Serializer>(
    budgets: &&[Budget],
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    s.collect_seq(budgets.iter().map(|b| BudgetView {
        allocated: b.allocated,
        debt: b.debt,
        is_over_limit: b.is_over_limit,
        overdraft_limit: b.overdraft_limit,
        reserved: b.reserved,
        scope: &b.scope,
        spent: b.spent,
        status: b.status,
        unit: b.unit,
    }))
}

fn no_items<T>(v: &&[T]) -> bool {
    v.is_empty()
}

fn no_text(v: &&str) -> bool {
    v.is_empty()
}

impl<'a> RecordView<'a> {
    /// A record of `kind` at `time_ms` naming nothing yet.
    pub(crate) fn new(kind: AuditKind, time_ms: i64) -> Self {
        RecordView {
            action: None,
            amounts: &[],
            budgets: &[],
            call_digest: None,
            caps: &[],
            decision: None,
            detail: None,
            hash: "",
            kind,
            prev_hash: "",
            reason_code: None,
            reservation_id: None,
            rules: &[],
            scopes: &[],
            seq: 0,
            subject: None,
            tier: None,
            time_ms,
        }
    }

    /// Places the record after `(seq, hash)` of the head and seals it (see
    /// [`AuditRecord::seal_after`]).
    pub(crate) fn seal_after(self, head: Option<(u64, String)>) -> SealedRecord {
        let (seq, prev) = head.unwrap_or((0, GENESIS_HASH.to_string()));
        let view = RecordView {
            seq: seq + 1,
            prev_hash: &prev,
            hash: "",
            ..self
        };
        let (hash, json) = with_json_buffer(&view, |canonical| {
            let hash = sha256_hex(canonical);
            // The canonical text without `hash`, with `"hash":"..."` appended as the last key:
            // valid JSON for the same record (stored bodies are parsed, never hashed as text).
            let body = &canonical[..canonical.len() - 1];
            let tail = [",\"hash\":\"", hash.as_str(), "\"}"];
            let mut json =
                String::with_capacity(body.len() + tail.iter().map(|t| t.len()).sum::<usize>());
            json.push_str(std::str::from_utf8(body).expect("serde_json writes UTF-8"));
            tail.iter().for_each(|t| json.push_str(t));
            debug_assert_eq!(
                json.len(),
                json.capacity(),
                "sized exactly: no reallocation"
            );
            (hash, json)
        });
        SealedRecord {
            seq: view.seq,
            time_ms: view.time_ms,
            kind: view.kind,
            hash,
            json,
        }
    }
}

/// An audit record sealed into the chain, as a ledger stores it: its JSON with every field,
/// `hash` included, and the columns a ledger indexes. Ledgers store [`SealedRecord::json`]
/// instead of serializing the record again.
#[derive(Debug, Clone, PartialEq)]
pub struct SealedRecord {
    seq: u64,
    time_ms: i64,
    kind: AuditKind,
    hash: String,
    json: String,
}

impl SealedRecord {
    /// Position in the chain.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Ledger time.
    pub fn time_ms(&self) -> i64 {
        self.time_ms
    }

    /// What the record is about.
    pub fn kind(&self) -> AuditKind {
        self.kind
    }

    /// The record's hash.
    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// The record as JSON, `hash` included (not canonical: `hash` is the last key).
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The JSON, owned.
    pub fn into_json(self) -> String {
        self.json
    }

    /// The hash and the JSON, owned (a ledger keeping the head moves the hash there).
    pub(crate) fn into_hash_and_json(self) -> (String, String) {
        (self.hash, self.json)
    }

    /// The record, parsed back from its JSON.
    pub fn to_record(&self) -> Result<AuditRecord> {
        parse_stored(self.seq, &self.json)
    }
}

/// A stored record's JSON parsed back; unreadable JSON is `LEDGER_CORRUPT` naming `seq`.
pub(crate) fn parse_stored(seq: u64, json: &str) -> Result<AuditRecord> {
    serde_json::from_str(json)
        .map_err(|e| CyclesError::LedgerCorrupt(format!("audit record {seq}: {e}")))
}

/// SHA-256 of bytes, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex_digest(&Sha256::digest(bytes))
}

/// SHA-256 (lowercase hex) of a value's serde_json serialization. For types whose fields are
/// declared in sorted order (and `Value` maps, which are sorted), that is canonical JSON.
pub(crate) fn sha256_json_hex<T: Serialize + ?Sized>(value: &T) -> String {
    with_json_buffer(value, sha256_hex)
}

/// Runs `f` over the serde_json serialization of `value`.
fn with_json_buffer<T: Serialize + ?Sized, R>(value: &T, f: impl FnOnce(&[u8]) -> R) -> R {
    // Every decide serializes and hashes a ~500-byte record: reuse one buffer per thread
    // instead of allocating and regrowing a fresh Vec each time.
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(1024));
    }
    let fresh = || serde_json::to_vec(value).expect("serializable to JSON");
    BUF.with(|buf| match buf.try_borrow_mut() {
        Ok(mut buf) => {
            buf.clear();
            serde_json::to_writer(&mut *buf, value).expect("serializable to JSON");
            f(&buf)
        }
        // Re-entered from inside a serializer: use a fresh buffer.
        Err(_) => f(&fresh()),
    })
}

/// Lowercase hex of a digest, by table lookup into a fixed array (`hex::encode` goes through
/// a char iterator and showed up in profiles).
fn hex_digest(digest: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in digest.iter().take(32).enumerate() {
        out[2 * i] = HEX[(b >> 4) as usize];
        out[2 * i + 1] = HEX[(b & 15) as usize];
    }
    std::str::from_utf8(&out[..2 * digest.len().min(32)])
        .expect("hex is ASCII")
        .to_owned()
}

/// Canonical JSON: object keys sorted, no whitespace.
pub fn canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    // serde_json::Value keeps object keys in a BTreeMap (sorted), which is what makes this
    // canonical for our records: integers and strings only, no floats.
    let v = serde_json::to_value(value).expect("serializable");
    serde_json::to_vec(&v).expect("json values serialize")
}

/// A filter over the audit trail. Empty fields match everything.
///
/// ```
/// use cycles_core::{AuditKind, AuditQuery};
/// let q = AuditQuery { scope: Some("tenant:acme".into()), kinds: vec![AuditKind::Denial], ..Default::default() };
/// assert!(q.kinds.contains(&AuditKind::Denial));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Records touching this scope or a scope below it.
    #[serde(default)]
    pub scope: Option<String>,
    /// Only these kinds.
    #[serde(default)]
    pub kinds: Vec<AuditKind>,
    /// At or after this time.
    #[serde(default)]
    pub since_ms: Option<i64>,
    /// Before this time.
    #[serde(default)]
    pub until_ms: Option<i64>,
    /// Only records with a greater sequence number.
    #[serde(default)]
    pub after_seq: Option<u64>,
    /// At most this many.
    #[serde(default)]
    pub limit: Option<usize>,
}

impl AuditQuery {
    /// Whether a record passes the filter.
    pub fn matches(&self, r: &AuditRecord) -> bool {
        if !self.kinds.is_empty() && !self.kinds.contains(&r.kind) {
            return false;
        }
        if self.since_ms.is_some_and(|t| r.time_ms < t)
            || self.until_ms.is_some_and(|t| r.time_ms >= t)
        {
            return false;
        }
        if let Some(scope) = &self.scope {
            let under = |s: &String| {
                s == scope
                    || (s.starts_with(scope.as_str())
                        && s.as_bytes().get(scope.len()) == Some(&b'/'))
            };
            if !r.scopes.iter().any(under) {
                return false;
            }
        }
        true
    }
}

/// The outcome of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VerifyReport {
    /// True when every record is intact and linked.
    pub ok: bool,
    /// Records checked.
    pub records: u64,
    /// The hash of the last intact record.
    pub head_hash: String,
    /// The first broken record, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_broken: Option<BrokenRecord>,
    /// Where the ledger's budgets, active reservations, approval requests and stored
    /// idempotent results differ from what an intact chain says they are (a row edited, added
    /// or deleted outside the state machine). Checked only when the chain itself is intact;
    /// empty when everything agrees.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub state_mismatches: Vec<StateMismatch>,
}

/// A budget, reservation, approval request or idempotent result whose stored state is not
/// what the audit chain says.
///
/// ```
/// use cycles_core::{Authority, BudgetSpec, Policy, Unit};
/// let auth = Authority::builder()
///     .policy(Policy::default().budget(BudgetSpec::new("tenant:acme", Unit::RiskPoints, 10)))
///     .build()
///     .unwrap();
/// // A write that goes around the state machine, as a row edited in SQL would.
/// auth.ledger()
///     .write(&mut |txn| {
///         let mut b = txn.budget("tenant:acme", Unit::RiskPoints)?.unwrap();
///         b.allocated = 1_000_000;
///         txn.put_budget(&b)
///     })
///     .unwrap();
/// let report = auth.verify().unwrap();
/// assert!(!report.ok && report.first_broken.is_none());
/// assert_eq!(report.state_mismatches[0].item, "budget tenant:acme RISK_POINTS");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateMismatch {
    /// What differs: `budget SCOPE UNIT`, `reservation ID`, `approval REQUEST_ID` or
    /// `idempotency OP KEY`.
    pub item: String,
    /// How it differs.
    pub reason: String,
}

/// Where and why the chain breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokenRecord {
    /// The sequence number expected at this position.
    pub seq: u64,
    /// What is wrong.
    pub reason: String,
}

/// A point of the audit chain written down outside the ledger: a record's sequence number and
/// hash, as `SEQ:HASH`. A hash chain shows any edit of the records it holds, but not the
/// removal of its last records, nor a chain rebuilt from scratch by someone who can write the
/// ledger; an anchor taken earlier and kept elsewhere (a ticket, a log shipper, another
/// machine) shows both when the chain is verified against it.
///
/// ```
/// use cycles_core::AuditAnchor;
/// let a: AuditAnchor = format!("42:{}", "ab".repeat(32)).parse().unwrap();
/// assert_eq!(a.seq, 42);
/// assert_eq!(a.to_string(), format!("42:{}", "ab".repeat(32)));
/// assert!("42:xyz".parse::<AuditAnchor>().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditAnchor {
    /// The record's sequence number (from 1).
    pub seq: u64,
    /// The record's hash, 64 lowercase hex characters.
    pub hash: String,
}

impl std::fmt::Display for AuditAnchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.seq, self.hash)
    }
}

impl std::str::FromStr for AuditAnchor {
    type Err = CyclesError;

    fn from_str(text: &str) -> Result<Self> {
        let bad =
            || CyclesError::invalid("anchor", "SEQ:HASH, a record number and its 64-hex hash");
        let (seq, hash) = text.trim().split_once(':').ok_or_else(bad)?;
        let seq: u64 = seq.parse().map_err(|_| bad())?;
        let hex = hash.len() == 64 && hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if seq == 0 || !hex {
            return Err(bad());
        }
        Ok(AuditAnchor {
            seq,
            hash: hash.to_string(),
        })
    }
}

/// Walks records in order and checks numbering, links, hashes and anchors.
#[derive(Debug)]
pub(crate) struct ChainVerifier {
    expected_seq: u64,
    prev_hash: String,
    broken: Option<BrokenRecord>,
    anchors: Vec<AuditAnchor>,
    state: Option<StateTracker>,
}

/// The ledger's state as it stood at one chain head, read in one snapshot, to be compared with
/// what the chain up to that head says.
#[derive(Debug)]
pub(crate) struct LedgerSnapshot {
    /// Sequence number of the head when the snapshot was read (0: empty chain).
    pub head_seq: u64,
    /// Every budget.
    pub budgets: Vec<Budget>,
    /// Ids of the ACTIVE reservations.
    pub active_reservations: Vec<String>,
    /// Every stored approval request, `(request id, value)` (namespace
    /// [`crate::approval::APPROVAL_NS`]).
    pub approvals: Vec<(String, serde_json::Value)>,
    /// Every stored idempotent result, `(op, key, entry)`.
    pub idempotency: Vec<(String, String, IdempotencyEntry)>,
    /// Every stored caps counter, `(key, value)` (namespace `caps`).
    pub caps: Vec<(String, serde_json::Value)>,
}

/// Replays what records say about state: each budget's last recorded post-state, and the
/// reservations still active.
#[derive(Debug)]
struct StateTracker {
    snapshot: LedgerSnapshot,
    /// `(scope, unit)` → the budget after the last record that changed it, and that record.
    budgets: HashMap<(String, Unit), (Budget, u64)>,
    /// Scopes changed by records that do not carry post-states (written before records did),
    /// with the last such record: their budgets cannot be checked until a later record says.
    unknown: HashMap<String, u64>,
    /// Each reservation active by the records (reserved, not yet committed, released or
    /// expired), as its reserve record opened it.
    opened: HashMap<String, Opened>,
    /// Post-states that do not follow from the one before by what their record did.
    transitions: Vec<StateMismatch>,
    /// Each approval request the records created, as the last record about it left it.
    approvals: HashMap<String, ApprovalSeen>,
    /// Reservation ids and event ids that stored idempotent results name: only these are
    /// followed through the chain (the ledger's own list bounds what is kept).
    watched: HashSet<String>,
    /// What the records did to each watched reservation or event.
    done: HashMap<String, Done>,
    /// Caps key → the counter after the last reserve record that advanced it, and that record.
    caps: HashMap<String, (CapsCounter, u64)>,
    /// Caps keys counted by reserve records that carry no counters (written before records
    /// did), with the last such record: not checked until a later record says.
    caps_unknown: HashMap<String, u64>,
}

/// What the records say about one approval request: its creating record's call, subject and
/// deadline, and the last record about it.
#[derive(Debug)]
struct ApprovalSeen {
    created: u64,
    call_digest: Option<String>,
    subject: Option<Subject>,
    scopes: Vec<String>,
    tier: Option<Tier>,
    expires_at_ms: Option<i64>,
    last: AuditKind,
    last_seq: u64,
    reservation_id: Option<String>,
}

/// The records about one watched reservation or event: the reserve (or event) record's seq
/// and what it names, then each commit, release and extend.
#[derive(Debug, Default)]
struct Done {
    reserved: Option<Opened>,
    committed: Option<Vec<Amount>>,
    released: Option<Vec<Amount>>,
    /// `(extensions, expires_at_ms)` of each extend record.
    extended: Vec<(Option<i64>, Option<i64>)>,
    evented: Option<Vec<Amount>>,
}

/// What a reservation's reserve record says about it.
#[derive(Debug)]
struct Opened {
    seq: u64,
    holds: Vec<Amount>,
    call_digest: Option<String>,
    subject: Option<Subject>,
    tier: Option<Tier>,
}

impl StateTracker {
    fn feed(&mut self, r: &AuditRecord) {
        for b in &r.budgets {
            let key = (b.scope.clone(), b.unit);
            // The post-state before this one, unless a record without post-states changed the
            // budget since (then there is nothing to compare with).
            let before = match self.budgets.get(&key) {
                Some((p, seq)) if self.unknown.get(&b.scope).is_none_or(|u| u <= seq) => {
                    Some(Some((p, *seq)))
                }
                None if !self.unknown.contains_key(&b.scope) => Some(None),
                _ => None,
            };
            if let Some(before) = before
                && let Some(reason) = self.transition(r, before, b)
            {
                self.transitions.push(StateMismatch {
                    item: format!("budget {} {}", b.scope, b.unit),
                    reason,
                });
            }
            self.budgets.insert(key, (b.clone(), r.seq));
        }
        if r.kind.changes_budgets() && r.budgets.is_empty() {
            let set_scope = r
                .detail
                .as_ref()
                .and_then(|d| d.get("scope"))
                .and_then(|s| s.as_str());
            for scope in r.scopes.iter().map(String::as_str).chain(set_scope) {
                self.unknown.insert(scope.to_string(), r.seq);
            }
        }
        self.feed_caps(r);
        self.feed_approval(r);
        self.feed_watched(r);
        if let Some(id) = &r.reservation_id {
            match r.kind {
                AuditKind::Reserve => {
                    let opened = Opened {
                        seq: r.seq,
                        holds: r.amounts.clone(),
                        call_digest: r.call_digest.clone(),
                        subject: r.subject.clone(),
                        tier: r.tier,
                    };
                    self.opened.insert(id.clone(), opened);
                }
                AuditKind::Commit | AuditKind::Release | AuditKind::Expire | AuditKind::Extend => {
                    // Only a reservation a reserve record left active can be finished or
                    // extended: one planted in the ledger (a reservation row, or a replayed
                    // idempotent result naming it) and then committed is reported here even
                    // once the planted rows are gone.
                    // These records carry the reservation row as it stood: its call, subject
                    // and tier must be the ones reserved (an edited digest would let another
                    // call pass for it at commit, `CommitRequest::ran`).
                    if let Some(o) = self.opened.get(id) {
                        let differs = [
                            (o.call_digest != r.call_digest, "call"),
                            (o.subject != r.subject, "subject"),
                            (o.tier != r.tier, "tier"),
                        ];
                        for (_, what) in differs.iter().filter(|d| d.0) {
                            self.transitions.push(StateMismatch {
                                item: format!("reservation {id}"),
                                reason: format!(
                                    "record {} ({}) names another {what} than its reserve record {}: \
                                     the reservation was changed outside the state machine",
                                    r.seq,
                                    r.kind.as_str(),
                                    o.seq
                                ),
                            });
                        }
                    } else {
                        self.transitions.push(StateMismatch {
                            item: format!("reservation {id}"),
                            reason: format!(
                                "record {} ({}) names it but no reserve record left it active",
                                r.seq,
                                r.kind.as_str()
                            ),
                        });
                    }
                    if r.kind != AuditKind::Extend {
                        self.opened.remove(id);
                    }
                }
                _ => {}
            }
        }
    }

    /// Follows approval records: the request each names (`detail.approval_request_id`).
    fn feed_approval(&mut self, r: &AuditRecord) {
        if !matches!(
            r.kind,
            AuditKind::ApprovalRequested
                | AuditKind::ApprovalGranted
                | AuditKind::ApprovalDenied
                | AuditKind::ApprovalExpired
                | AuditKind::ApprovalConsumed
        ) {
            return;
        }
        let detail = r.detail.as_ref();
        let Some(id) = detail
            .and_then(|d| d.get("approval_request_id"))
            .and_then(|v| v.as_str())
        else {
            return;
        };
        if r.kind == AuditKind::ApprovalRequested {
            let expires_at_ms = detail
                .and_then(|d| d.get("expires_at_ms"))
                .and_then(|v| v.as_i64());
            let seen = ApprovalSeen {
                created: r.seq,
                call_digest: r.call_digest.clone(),
                subject: r.subject.clone(),
                scopes: r.scopes.clone(),
                tier: r.tier,
                expires_at_ms,
                last: r.kind,
                last_seq: r.seq,
                reservation_id: None,
            };
            self.approvals.insert(id.to_string(), seen);
            return;
        }
        match self.approvals.get_mut(id) {
            Some(seen) => {
                // A request is decided only while open (requested or granted), and a grant is
                // consumed only once recorded: a record that follows anything else shows the
                // request was reopened outside the state machine (a consumed grant set back
                // to GRANTED, used again, and consumed anew would otherwise look recorded).
                let open = matches!(
                    seen.last,
                    AuditKind::ApprovalRequested | AuditKind::ApprovalGranted
                );
                if !open
                    || (r.kind == AuditKind::ApprovalConsumed
                        && seen.last != AuditKind::ApprovalGranted)
                {
                    self.transitions.push(StateMismatch {
                        item: format!("approval {id}"),
                        reason: format!(
                            "record {} ({}) follows record {} ({}): the state machine never \
                             does one after the other, so the request was changed outside it",
                            r.seq,
                            r.kind.as_str(),
                            seen.last_seq,
                            seen.last.as_str()
                        ),
                    });
                }
                seen.last = r.kind;
                seen.last_seq = r.seq;
                if r.kind == AuditKind::ApprovalConsumed {
                    seen.reservation_id.clone_from(&r.reservation_id);
                }
            }
            None => self.transitions.push(StateMismatch {
                item: format!("approval {id}"),
                reason: format!(
                    "record {} ({}) names it but no record created it",
                    r.seq,
                    r.kind.as_str()
                ),
            }),
        }
    }

    /// Follows the records about reservations and events that stored idempotent results name.
    fn feed_watched(&mut self, r: &AuditRecord) {
        if self.watched.is_empty() {
            return;
        }
        let id = match r.kind {
            AuditKind::Reserve | AuditKind::Commit | AuditKind::Release | AuditKind::Extend => {
                r.reservation_id.as_deref()
            }
            AuditKind::Event => r
                .detail
                .as_ref()
                .and_then(|d| d.get("event_id"))
                .and_then(|v| v.as_str()),
            _ => None,
        };
        let Some(id) = id.filter(|id| self.watched.contains(*id)) else {
            return;
        };
        let done = self.done.entry(id.to_string()).or_default();
        let detail_i64 = |k: &str| {
            r.detail
                .as_ref()
                .and_then(|d| d.get(k))
                .and_then(|v| v.as_i64())
        };
        match r.kind {
            AuditKind::Reserve => {
                done.reserved = Some(Opened {
                    seq: r.seq,
                    holds: r.amounts.clone(),
                    call_digest: r.call_digest.clone(),
                    subject: r.subject.clone(),
                    tier: r.tier,
                });
            }
            AuditKind::Commit => done.committed = Some(r.amounts.clone()),
            AuditKind::Release => done.released = Some(r.amounts.clone()),
            AuditKind::Extend => done
                .extended
                .push((detail_i64("extensions"), detail_i64("expires_at_ms"))),
            AuditKind::Event => done.evented = Some(r.amounts.clone()),
            _ => {}
        }
    }

    /// Why `after`, the post-state `r` carries, cannot follow from `before` (the post-state of
    /// the last record that changed the budget, and that record) by what `r` did; `None` when
    /// it can. The next legitimate operation on a budget edited outside the state machine
    /// carries the edit in its post-state: this is what keeps such an edit reported.
    fn transition(
        &self,
        r: &AuditRecord,
        before: Option<(&Budget, u64)>,
        after: &Budget,
    ) -> Option<String> {
        let kind = r.kind.as_str();
        let amount = |list: &[Amount]| {
            list.iter()
                .find(|a| a.unit == after.unit)
                .map(|a| i128::from(a.amount))
        };
        // Every record of the state machine names an amount in each unit whose budgets it
        // writes; one that does not was made by hand (through the raw ledger API, as tests of
        // the backends do): its post-state is taken as it is.
        let recorded = amount(&r.amounts)?;
        let Some((b, seq)) = before else {
            return (r.kind != AuditKind::BudgetSet).then(|| {
                format!(
                    "record {} ({kind}) changed it but no record created it",
                    r.seq
                )
            });
        };
        // What the reservation held, from its reserve record (the reservation row could have
        // been edited since; the record cannot).
        let hold = r
            .reservation_id
            .as_ref()
            .and_then(|id| self.opened.get(id))
            .and_then(|o| amount(&o.holds));
        let d = |x: i64, y: i64| i128::from(y) - i128::from(x);
        let reserved = d(b.reserved, after.reserved);
        let spent = d(b.spent, after.spent);
        let debt = d(b.debt, after.debt);
        let settings = b.allocated == after.allocated
            && b.overdraft_limit == after.overdraft_limit
            && b.status == after.status;
        let follows = match r.kind {
            AuditKind::Reserve => {
                settings
                    && spent == 0
                    && debt == 0
                    && b.is_over_limit == after.is_over_limit
                    && reserved == recorded
            }
            AuditKind::Release | AuditKind::Expire => {
                settings
                    && spent == 0
                    && debt == 0
                    && b.is_over_limit == after.is_over_limit
                    && hold.is_none_or(|h| reserved == -h)
            }
            // A charge lands on spent and debt, never lowers either; a capped one may set the
            // over-limit flag, nothing but a budget_set clears it.
            AuditKind::Commit | AuditKind::Event => {
                let returned = match r.kind {
                    AuditKind::Event => Some(0),
                    _ => hold,
                };
                settings
                    && spent >= 0
                    && debt >= 0
                    && (after.is_over_limit || !b.is_over_limit)
                    && spent + debt == recorded
                    && returned.is_none_or(|h| reserved == -h)
            }
            AuditKind::BudgetSet => {
                let repaid = r
                    .detail
                    .as_ref()
                    .and_then(|d| d.get("operation"))
                    .is_some_and(|o| o == "REPAY_DEBT");
                let paid = if repaid { recorded } else { 0 };
                reserved == 0
                    && spent == paid
                    && debt == -paid
                    && after.is_over_limit == (after.debt > after.overdraft_limit)
                    && (!repaid
                        || (d(b.allocated, after.allocated) == paid
                            && b.overdraft_limit == after.overdraft_limit
                            && b.status == after.status))
            }
            _ => true,
        };
        (!follows).then(|| {
            format!(
                "record {} ({kind}) left {} but record {seq} left {}: {kind} cannot make one of \
                 the other, so it was changed outside the state machine in between",
                r.seq,
                budget_state(after),
                budget_state(b)
            )
        })
    }

    /// Follows the caps counters a reserve record carries: each must be one of the caps rules
    /// its decision counted (`caps:<key>` among its rules), one step on from the counter
    /// before (a new allocation restarts the count), its cooldown unchanged or running from
    /// the record's time.
    fn feed_caps(&mut self, r: &AuditRecord) {
        let counted: Vec<&str> = if r.kind == AuditKind::Reserve {
            r.rules
                .iter()
                .filter_map(|rule| rule.strip_prefix("caps:"))
                .collect()
        } else {
            Vec::new()
        };
        for after in &r.caps {
            let before = self.caps.get(&after.key);
            let checkable = match before {
                Some((_, seq)) => self.caps_unknown.get(&after.key).is_none_or(|u| u < seq),
                None => !self.caps_unknown.contains_key(&after.key),
            };
            let before = before.map(|(c, _)| c);
            let reason = if !counted.contains(&after.key.as_str()) {
                Some(format!(
                    "record {} ({}) changed it but its decision counted no step under this rule",
                    r.seq,
                    r.kind.as_str()
                ))
            } else if !checkable {
                None
            } else {
                let expected = match before {
                    Some(b) if b.allocated == after.allocated => b.steps.saturating_add(1),
                    _ => 1,
                };
                let cooldown_before = before.map_or(0, |b| b.cooldown_until_ms);
                if after.steps != expected {
                    Some(format!(
                        "record {} left {} steps where one reservation after {} makes {expected}",
                        r.seq,
                        after.steps,
                        before.map_or_else(|| "none".to_string(), |b| b.steps.to_string()),
                    ))
                } else if after.cooldown_until_ms != cooldown_before
                    && after.cooldown_until_ms < r.time_ms
                {
                    Some(format!(
                        "record {} set the cooldown to end at {} before its own time {}",
                        r.seq, after.cooldown_until_ms, r.time_ms
                    ))
                } else {
                    None
                }
            };
            if let Some(reason) = reason {
                self.transitions.push(StateMismatch {
                    item: format!("caps {}", after.key),
                    reason,
                });
            }
            self.caps.insert(after.key.clone(), (after.clone(), r.seq));
        }
        for key in counted {
            if !r.caps.iter().any(|c| c.key == key) {
                self.caps_unknown.insert(key.to_string(), r.seq);
            }
        }
    }

    fn caps_mismatches(&mut self, out: &mut Vec<StateMismatch>) {
        let unknown = |key: &str, since: u64, unknown: &HashMap<String, u64>| {
            unknown.get(key).is_some_and(|&u| u > since)
        };
        for (key, value) in &self.snapshot.caps {
            let item = format!("caps {key}");
            let stored = match crate::policy::caps_counter(key, value) {
                Ok(c) => c,
                Err(e) => {
                    out.push(StateMismatch {
                        item,
                        reason: format!("unreadable: {e}"),
                    });
                    continue;
                }
            };
            match self.caps.remove(key) {
                Some((_, seq)) if unknown(key, seq, &self.caps_unknown) => {}
                Some((recorded, _)) if recorded == stored => {}
                Some((recorded, seq)) => out.push(StateMismatch {
                    item,
                    reason: format!(
                        "the ledger holds {} but record {seq} left {}",
                        caps_state(&stored),
                        caps_state(&recorded)
                    ),
                }),
                None if unknown(key, 0, &self.caps_unknown) => {}
                None => out.push(StateMismatch {
                    item,
                    reason: format!(
                        "the ledger holds {} but no record counted it",
                        caps_state(&stored)
                    ),
                }),
            }
        }
        let mut removed: Vec<_> = self.caps.drain().collect();
        removed.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, (_, seq)) in removed {
            if !unknown(&key, seq, &self.caps_unknown) {
                out.push(StateMismatch {
                    item: format!("caps {key}"),
                    reason: format!(
                        "record {seq} counted it but the ledger no longer holds it (a missing \
                         counter starts again from zero)"
                    ),
                });
            }
        }
    }

    fn mismatches(mut self) -> Vec<StateMismatch> {
        let mut out = std::mem::take(&mut self.transitions);
        self.caps_mismatches(&mut out);
        let unknown = |scope: &str, since: u64, unknown: &HashMap<String, u64>| {
            unknown.get(scope).is_some_and(|&u| u > since)
        };
        for b in &self.snapshot.budgets {
            let item = format!("budget {} {}", b.scope, b.unit);
            match self.budgets.remove(&(b.scope.clone(), b.unit)) {
                Some((_, seq)) if unknown(&b.scope, seq, &self.unknown) => {}
                Some((recorded, _)) if &recorded == b => {}
                Some((recorded, seq)) => out.push(StateMismatch {
                    item,
                    reason: format!(
                        "the ledger holds {} but record {seq} left {}",
                        budget_state(b),
                        budget_state(&recorded)
                    ),
                }),
                None if unknown(&b.scope, 0, &self.unknown) => {}
                None => out.push(StateMismatch {
                    item,
                    reason: format!(
                        "the ledger holds {} but no record created it",
                        budget_state(b)
                    ),
                }),
            }
        }
        let mut removed: Vec<_> = self.budgets.into_iter().collect();
        removed.sort_by(|a, b| a.0.cmp(&b.0));
        for ((scope, unit), (_, seq)) in removed {
            if !unknown(&scope, seq, &self.unknown) {
                out.push(StateMismatch {
                    item: format!("budget {scope} {unit}"),
                    reason: format!("record {seq} changed it but the ledger no longer holds it"),
                });
            }
        }
        for id in &self.snapshot.active_reservations {
            if self.opened.remove(id).is_none() {
                out.push(StateMismatch {
                    item: format!("reservation {id}"),
                    reason: "ACTIVE in the ledger, but no record left it active".into(),
                });
            }
        }
        let mut missing: Vec<_> = self.opened.into_keys().collect();
        missing.sort();
        for id in missing {
            out.push(StateMismatch {
                item: format!("reservation {id}"),
                reason: "active by the records, but not ACTIVE in the ledger".into(),
            });
        }
        let approvals = std::mem::take(&mut self.snapshot.approvals);
        approval_mismatches(approvals, std::mem::take(&mut self.approvals), &mut out);
        let entries = std::mem::take(&mut self.snapshot.idempotency);
        for (op, key, entry) in &entries {
            if let Some(reason) = idempotency_mismatch(op, entry, &self.done) {
                out.push(StateMismatch {
                    item: format!("idempotency {op} {key}"),
                    reason,
                });
            }
        }
        out
    }
}

/// The status the last record about an approval request leaves it in.
fn approval_status_after(kind: AuditKind) -> Option<ApprovalStatus> {
    Some(match kind {
        AuditKind::ApprovalRequested => ApprovalStatus::Pending,
        AuditKind::ApprovalGranted => ApprovalStatus::Granted,
        AuditKind::ApprovalDenied => ApprovalStatus::Denied,
        AuditKind::ApprovalExpired => ApprovalStatus::Expired,
        AuditKind::ApprovalConsumed => ApprovalStatus::Consumed,
        _ => return None,
    })
}

/// Compares the stored approval requests with what the records left them. A request due to
/// expire is moved to EXPIRED lazily, with its record, when next touched: until then both say
/// PENDING (or GRANTED), so a deadline passed is no mismatch.
fn approval_mismatches(
    stored: Vec<(String, serde_json::Value)>,
    mut seen: HashMap<String, ApprovalSeen>,
    out: &mut Vec<StateMismatch>,
) {
    for (id, value) in stored {
        let item = format!("approval {id}");
        let mut push = |reason: String| {
            out.push(StateMismatch {
                item: item.clone(),
                reason,
            })
        };
        let request: ApprovalRequest = match serde_json::from_value(value) {
            Ok(r) => r,
            Err(e) => {
                push(format!(
                    "the ledger holds something that is no request: {e}"
                ));
                continue;
            }
        };
        let status = request.status.as_str();
        let Some(s) = seen.remove(&id) else {
            push(format!(
                "the ledger holds it ({status}) but no record created it"
            ));
            continue;
        };
        if request.request_id != id {
            push(format!(
                "stored under its id, it names another: {}",
                request.request_id
            ));
        }
        if let Some(expected) = approval_status_after(s.last)
            && expected != request.status
        {
            push(format!(
                "the ledger holds it {status} but record {} ({}) left it {}",
                s.last_seq,
                s.last.as_str(),
                expected.as_str()
            ));
        }
        let created = s.created;
        let differs = [
            (
                s.call_digest.as_deref() != Some(request.call_digest.as_str()),
                "call digest",
            ),
            (request.call.digest() != request.call_digest, "call"),
            (s.subject.as_ref() != Some(&request.subject), "subject"),
            (s.scopes != request.scopes, "scopes"),
            (s.tier != Some(request.tier), "tier"),
            (
                s.expires_at_ms.is_some_and(|t| t != request.expires_at_ms),
                "deadline",
            ),
        ];
        for (_, what) in differs.iter().filter(|d| d.0) {
            let reason = if *what == "call" {
                "the stored call is not the one its call digest names".to_string()
            } else {
                format!("the ledger holds another {what} than its record {created} created")
            };
            push(reason);
        }
        if request.status == ApprovalStatus::Consumed
            && s.last == AuditKind::ApprovalConsumed
            && request.reservation_id != s.reservation_id
        {
            push(format!(
                "consumed by {} in the ledger but by {} in record {}",
                request.reservation_id.as_deref().unwrap_or("nothing"),
                s.reservation_id.as_deref().unwrap_or("nothing"),
                s.last_seq
            ));
        }
    }
    let mut removed: Vec<_> = seen.into_iter().collect();
    removed.sort_by(|a, b| a.0.cmp(&b.0));
    for (id, s) in removed {
        out.push(StateMismatch {
            item: format!("approval {id}"),
            reason: format!(
                "record {} ({}) left it {} but the ledger no longer holds it",
                s.last_seq,
                s.last.as_str(),
                approval_status_after(s.last).map_or("?", ApprovalStatus::as_str)
            ),
        });
    }
}

/// The reservation or event id a stored idempotent result names, when it names one.
fn idempotency_target(op: &str, entry: &IdempotencyEntry) -> Option<String> {
    let field = match op {
        "reserve" => {
            return entry
                .result
                .get("reservation")
                .and_then(|r| r.get("reservation_id"))
                .and_then(|v| v.as_str())
                .map(str::to_string);
        }
        "event" => "event_id",
        // A commit that charged a call after its reservation expired did so by an event.
        _ if op.starts_with("commit:") && entry.result.get("event_id").is_some() => "event_id",
        _ if op.starts_with("commit:") || op.starts_with("release:") => "reservation_id",
        _ => return op.strip_prefix("extend:").map(str::to_string),
    };
    entry
        .result
        .get(field)
        .and_then(|v| v.as_str())
        .map(str::to_string)
}

/// Why a stored idempotent result is not what the chain did, if it is not. A replay returns
/// it verbatim: a "Reserved" outcome planted under a key a client will use hands out a
/// reservation nobody held, a commit or event outcome one nothing charged.
fn idempotency_mismatch(
    op: &str,
    entry: &IdempotencyEntry,
    done: &HashMap<String, Done>,
) -> Option<String> {
    let bad = |e: serde_json::Error| Some(format!("the stored result is unreadable: {e}"));
    let none = Done::default();
    let of = |id: &str| done.get(id).unwrap_or(&none);
    let on = |op: &str, prefix: &str, id: &str| {
        (op.strip_prefix(prefix) != Some(id))
            .then(|| format!("stored under {op}, the result names {id}"))
    };
    if op == "reserve" {
        let outcome: ReserveOutcome = match serde_json::from_value(entry.result.clone()) {
            Ok(o) => o,
            Err(e) => return bad(e),
        };
        let ReserveOutcome::Reserved { reservation: rsv } = outcome else {
            // A replayed denial allows nothing.
            return None;
        };
        let id = &rsv.reservation_id;
        let Some(o) = &of(id).reserved else {
            return Some(format!(
                "names reservation {id}, which no reserve record made"
            ));
        };
        let seq = o.seq;
        let differs = [
            (
                o.call_digest.as_deref() != Some(rsv.call_digest.as_str()),
                "call",
            ),
            (o.subject.as_ref() != Some(&rsv.subject), "subject"),
            (o.tier != Some(rsv.tier), "tier"),
            (o.holds != rsv.reserved(), "hold"),
        ];
        let what: Vec<&str> = differs.iter().filter(|d| d.0).map(|d| d.1).collect();
        return (!what.is_empty()).then(|| {
            format!(
                "names reservation {id} with another {} than its reserve record {seq}",
                what.join(", ")
            )
        });
    }
    if op.starts_with("commit:") {
        let result: CommitResult = match serde_json::from_value(entry.result.clone()) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        let id = &result.reservation_id;
        if let Some(event) = &result.event_id {
            return on(op, "commit:", id).or_else(|| match &of(event).evented {
                None => Some(format!(
                    "names event {event} (a charge after expiry), which no event record made"
                )),
                Some(a) if *a != result.charged => Some(format!(
                    "charges otherwise than the record of event {event}"
                )),
                Some(_) => None,
            });
        }
        return on(op, "commit:", id).or_else(|| match &of(id).committed {
            None => Some(format!("no commit record finished reservation {id}")),
            Some(a) if *a != result.charged => Some(format!(
                "charges otherwise than the commit record of reservation {id}"
            )),
            Some(_) => None,
        });
    }
    if op.starts_with("release:") {
        let result: ReleaseResult = match serde_json::from_value(entry.result.clone()) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        let id = &result.reservation_id;
        return on(op, "release:", id).or_else(|| match &of(id).released {
            None => Some(format!("no release record finished reservation {id}")),
            Some(a) if *a != result.released => Some(format!(
                "releases otherwise than the release record of reservation {id}"
            )),
            Some(_) => None,
        });
    }
    if op.starts_with("extend:") {
        let r: Reservation = match serde_json::from_value(entry.result.clone()) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        let id = &r.reservation_id;
        let recorded = (Some(i64::from(r.extensions)), Some(r.expires_at_ms));
        return on(op, "extend:", id).or_else(|| {
            (!of(id).extended.contains(&recorded)).then(|| {
                format!(
                    "no extend record took reservation {id} to extension {} until {}",
                    r.extensions, r.expires_at_ms
                )
            })
        });
    }
    if op == "event" {
        let result: EventResult = match serde_json::from_value(entry.result.clone()) {
            Ok(r) => r,
            Err(e) => return bad(e),
        };
        let id = &result.event_id;
        return match &of(id).evented {
            None => Some(format!("names event {id}, which no event record made")),
            Some(a) if *a != result.charged => {
                Some(format!("charges otherwise than the record of event {id}"))
            }
            Some(_) => None,
        };
    }
    None
}

fn caps_state(c: &CapsCounter) -> String {
    format!(
        "steps {} (allocation {}) cooldown until {}",
        c.steps, c.allocated, c.cooldown_until_ms
    )
}

fn budget_state(b: &Budget) -> String {
    format!(
        "allocated {} spent {} reserved {} debt {} overdraft_limit {} {}{}",
        b.allocated,
        b.spent,
        b.reserved,
        b.debt,
        b.overdraft_limit,
        b.status.as_str(),
        if b.is_over_limit { " over limit" } else { "" }
    )
}

impl ChainVerifier {
    /// A verifier that also checks each anchor's record is there with the anchored hash.
    pub(crate) fn with_anchors(anchors: Vec<AuditAnchor>) -> Self {
        ChainVerifier {
            expected_seq: 1,
            prev_hash: GENESIS_HASH.to_string(),
            broken: None,
            anchors,
            state: None,
        }
    }

    /// Also compares `snapshot` with what the chain up to its head says.
    pub(crate) fn with_state(mut self, snapshot: LedgerSnapshot) -> Self {
        let watched = snapshot
            .idempotency
            .iter()
            .filter_map(|(op, _, e)| idempotency_target(op, e))
            .collect();
        self.state = Some(StateTracker {
            snapshot,
            budgets: HashMap::new(),
            unknown: HashMap::new(),
            opened: HashMap::new(),
            transitions: Vec::new(),
            approvals: HashMap::new(),
            watched,
            done: HashMap::new(),
            caps: HashMap::new(),
            caps_unknown: HashMap::new(),
        });
        self
    }

    /// Feeds the next record; returns false once the chain is broken.
    pub(crate) fn feed(&mut self, r: &AuditRecord) -> bool {
        if self.broken.is_some() {
            return false;
        }
        let reason = if r.seq != self.expected_seq {
            Some(format!(
                "expected sequence {} but found {}",
                self.expected_seq, r.seq
            ))
        } else if r.prev_hash != self.prev_hash {
            Some("prev_hash does not match the previous record's hash".to_string())
        } else if r.compute_hash() != r.hash {
            Some("hash does not match the record's content".to_string())
        } else if self
            .anchors
            .iter()
            .any(|a| a.seq == r.seq && a.hash != r.hash)
        {
            Some(
                "the record differs from the anchor taken earlier: the trail was rewritten"
                    .to_string(),
            )
        } else {
            None
        };
        match reason {
            Some(reason) => {
                self.broken = Some(BrokenRecord {
                    seq: self.expected_seq,
                    reason,
                });
                false
            }
            None => {
                if let Some(state) = &mut self.state
                    && r.seq <= state.snapshot.head_seq
                {
                    state.feed(r);
                }
                self.expected_seq += 1;
                self.prev_hash.clone_from(&r.hash);
                true
            }
        }
    }

    /// Reports a record that could not even be read.
    pub(crate) fn unreadable(&mut self, reason: String) {
        if self.broken.is_none() {
            self.broken = Some(BrokenRecord {
                seq: self.expected_seq,
                reason,
            });
        }
    }

    pub(crate) fn finish(mut self) -> VerifyReport {
        let last = self.expected_seq - 1;
        if self.broken.is_none()
            && let Some(a) = self
                .anchors
                .iter()
                .filter(|a| a.seq > last)
                .min_by_key(|a| a.seq)
        {
            self.broken = Some(BrokenRecord {
                seq: self.expected_seq,
                reason: format!(
                    "the trail ends at record {last} but an anchor names record {}: records were removed",
                    a.seq
                ),
            });
        }
        // State is compared only with an intact chain that reaches the snapshot's head: a broken
        // chain is reported as such, and what it says about state proves nothing.
        let state_mismatches = match self.state {
            Some(state) if self.broken.is_none() && last >= state.snapshot.head_seq => {
                state.mismatches()
            }
            _ => Vec::new(),
        };
        VerifyReport {
            ok: self.broken.is_none() && state_mismatches.is_empty(),
            records: self.expected_seq - 1,
            head_hash: self.prev_hash,
            first_broken: self.broken,
            state_mismatches,
        }
    }
}

/// Writes records as JSON Lines.
pub(crate) fn write_jsonl<W: Write>(out: &mut W, records: &[AuditRecord]) -> Result<()> {
    for r in records {
        serde_json::to_writer(&mut *out, r)
            .map_err(|e| CyclesError::LedgerUnavailable(format!("export: {e}")))?;
        out.write_all(b"\n")
            .map_err(|e| CyclesError::LedgerUnavailable(format!("export: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Amount, Unit};

    fn full_record() -> AuditRecord {
        let mut r = AuditRecord::new(AuditKind::Commit, 42);
        let mut subject = Subject::default()
            .tenant("acme")
            .workspace("w")
            .app("a")
            .workflow("f")
            .agent("bot")
            .toolset("t");
        subject.dimensions.insert("zone".into(), "eu".into());
        subject.dimensions.insert("env".into(), "prod".into());
        r.subject = Some(subject);
        r.scopes = vec!["tenant:acme".into()];
        r.action = Some(Action {
            kind: Some("db.admin".into()),
            name: "run_sql".into(),
            tags: vec!["x".into()],
        });
        r.call_digest = Some("d".into());
        r.decision = Some(DecisionKind::Deny);
        r.reason_code = Some(ReasonCode::BudgetExceeded);
        r.tier = Some(Tier::T4);
        r.amounts = vec![Amount::new(Unit::Tokens, 5)];
        r.reservation_id = Some("rsv_1".into());
        r.rules = vec!["tool:run_sql".into()];
        r.detail = Some(serde_json::json!({"z": 1, "a": [2]}));
        r.chain_after(None);
        r
    }

    #[test]
    fn direct_serialization_is_canonical() {
        // A field declared out of alphabetical order anywhere in the record breaks this.
        let r = full_record();
        assert_eq!(serde_json::to_vec(&r).unwrap(), canonical_json(&r));
    }

    #[test]
    fn hash_covers_every_field_and_excludes_itself() {
        let r = full_record();
        assert_eq!(r.compute_hash(), r.hash);
        let mut v = serde_json::to_value(&r).unwrap();
        v.as_object_mut().unwrap().remove("hash");
        assert_eq!(sha256_hex(&serde_json::to_vec(&v).unwrap()), r.hash);
        let mut changed = r.clone();
        changed.amounts[0].amount = 6;
        assert_ne!(changed.compute_hash(), r.hash);
    }

    #[test]
    fn sealing_hashes_like_chaining_and_stores_json_that_parses_back() {
        let chained = full_record();
        let mut unsealed = chained.clone();
        unsealed.hash.clear();
        unsealed.seq = 0;
        unsealed.prev_hash.clear();
        let sealed = unsealed.seal_after(None);
        assert_eq!(sealed.seq(), chained.seq);
        assert_eq!(sealed.hash(), chained.hash);
        assert_eq!(sealed.to_record().unwrap(), chained);
        // A second record chains onto the first.
        let next = AuditRecord::new(AuditKind::Event, 2)
            .seal_after(Some((chained.seq, chained.hash.clone())));
        let back = next.to_record().unwrap();
        assert_eq!((next.seq(), back.seq), (2, 2));
        assert_eq!(back.prev_hash, chained.hash);
        assert_eq!(back.compute_hash(), next.hash());
    }

    #[test]
    fn a_borrowed_record_serializes_exactly_like_the_owned_one() {
        // AuditRecord serializes through its view; Action likewise. Every optional field is set
        // in full_record, so a field the view forgot or misnamed changes these bytes.
        let r = full_record();
        let via_serde: serde_json::Value = serde_json::to_value(&r).unwrap();
        let keys: Vec<&String> = via_serde.as_object().unwrap().keys().collect();
        assert_eq!(
            keys.len(),
            16,
            "every field of AuditRecord is written: {keys:?}"
        );
        let back: AuditRecord = serde_json::from_value(via_serde).unwrap();
        assert_eq!(back, r);
    }
}
