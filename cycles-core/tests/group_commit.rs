//! Group commit in `SqliteLedger` (issue 8).
//!
//! - `batched_run_equals_its_serial_replay`: random operation sequences run concurrently on a
//!   group-commit ledger; a wrapper ledger records the order in which the operations' closures
//!   ran (the order they were applied in). The same operations are then run one by one, in that
//!   order, on an unbatched ledger: every operation's result, the final balances and the audit
//!   chain (ids and hashes aside) must be identical. Batching must be equivalent to serial
//!   execution in the order the chain records.
//! - `failures_in_a_batch_fail_only_themselves`: one deterministic batch of real gate
//!   operations (the first operation holds the transaction until every other caller is queued)
//!   where some fail (REJECT overage, unit mismatch, idempotency mismatch) and some are denied
//!   BUDGET_EXCEEDED: the others commit, the failed ones change nothing, nothing overspends,
//!   the chain verifies, and the result survives reopening the file.
//! - `errors_and_panics_roll_back_only_their_savepoint` and
//!   `a_failing_first_operation_does_not_take_the_batch_down`: the same at the `Ledger` level,
//!   with closures that fail or panic after writing.
//! - `readers_among_batched_writers_see_only_whole_committed_operations`: readers that find a
//!   batch open commit it and wake its callers; they never see a failed operation's writes,
//!   committed state only grows, and no writer is left waiting.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cycles_core::*;
use serde_json::{Value, json};

const START_MS: i64 = 1_700_000_000_000;
const TENANT: &str = "tenant:acme";

fn open_ledger(path: &Path, group_commit: bool) -> Arc<SqliteLedger> {
    Arc::new(
        SqliteLedger::open_with(
            path,
            SqliteOptions {
                // Durability is not what these tests look at; the crash test runs FULL.
                synchronous: Synchronous::Normal,
                group_commit,
                ..SqliteOptions::default()
            },
        )
        .unwrap(),
    )
}

/// xorshift64*: deterministic sequences without another dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

// ---------------------------------------------------------------------------------------------
// Equivalence with a serial replay
// ---------------------------------------------------------------------------------------------

const AGENTS: usize = 3;

fn replay_policy() -> Policy {
    let mut p = Policy::default()
        .register("read_file", Tier::T0)
        .register("write_file", Tier::T1)
        .register("send_email", Tier::T2)
        .budget(BudgetSpec::new(TENANT, Unit::RiskPoints, 600))
        .budget(BudgetSpec::new(TENANT, Unit::UsdMicrocents, 80_000));
    // Agent 0 has its own money budget with an overdraft, agent 1 only its risk points,
    // agent 2 only the tenant's budgets.
    p = p
        .budget(BudgetSpec {
            overdraft_limit: 4_000,
            ..BudgetSpec::new("tenant:acme/agent:a0", Unit::UsdMicrocents, 25_000)
        })
        .budget(BudgetSpec::new(
            "tenant:acme/agent:a1",
            Unit::RiskPoints,
            150,
        ));
    p
}

fn agent(i: usize) -> Subject {
    Subject::new().tenant("acme").agent(format!("a{i}"))
}

const TOOLS: [&str; 3] = ["read_file", "write_file", "send_email"];
const POLICIES: [CommitOveragePolicy; 3] = [
    CommitOveragePolicy::Reject,
    CommitOveragePolicy::AllowIfAvailable,
    CommitOveragePolicy::AllowWithOverdraft,
];

#[derive(Debug, Clone)]
enum Op {
    Decide {
        agent: usize,
        tool: usize,
        usd: i64,
    },
    Reserve {
        agent: usize,
        tool: usize,
        usd: i64,
        overage: usize,
        /// From a small pool shared by every thread: replays and mismatches across threads.
        key: Option<String>,
    },
    Commit {
        /// Index of one of this thread's own earlier `Reserve` operations.
        target: usize,
        usd: i64,
        wrong_unit: bool,
    },
    Release {
        target: usize,
    },
    Extend {
        target: usize,
    },
    Event {
        agent: usize,
        usd: i64,
        overage: usize,
    },
    /// A negative estimate: rejected before the ledger is touched.
    Invalid {
        agent: usize,
    },
}

fn gen_ops(seed: u64, n: usize) -> Vec<Op> {
    let mut rng = Rng::new(seed);
    let mut ops = Vec::with_capacity(n);
    let mut reserves: Vec<usize> = Vec::new();
    for i in 0..n {
        let agent = rng.below(AGENTS as u64) as usize;
        let roll = rng.below(100);
        let op = if reserves.is_empty() || roll < 35 {
            reserves.push(i);
            Op::Reserve {
                agent,
                tool: rng.below(3) as usize,
                usd: rng.below(6_000) as i64,
                overage: rng.below(3) as usize,
                key: (rng.below(4) == 0).then(|| format!("k{}", rng.below(6))),
            }
        } else {
            let target = reserves[rng.below(reserves.len() as u64) as usize];
            match roll {
                35..=59 => Op::Commit {
                    target,
                    usd: rng.below(9_000) as i64,
                    wrong_unit: rng.below(12) == 0,
                },
                60..=69 => Op::Release { target },
                70..=76 => Op::Extend { target },
                77..=86 => Op::Decide {
                    agent,
                    tool: rng.below(3) as usize,
                    usd: rng.below(6_000) as i64,
                },
                87..=96 => Op::Event {
                    agent,
                    usd: rng.below(3_000) as i64,
                    overage: rng.below(3) as usize,
                },
                _ => Op::Invalid { agent },
            }
        };
        ops.push(op);
    }
    ops
}

fn err_value(e: &CyclesError) -> Value {
    json!({ "err": e.code(), "decision": e.decision() })
}

fn outcome<T: serde::Serialize>(r: Result<T>) -> Value {
    match r {
        Ok(v) => json!({ "ok": v }),
        Err(e) => err_value(&e),
    }
}

/// Runs one operation; `ids` maps this thread's reserve operations to the ids they returned.
fn exec(auth: &Authority, op: &Op, index: usize, ids: &mut HashMap<usize, String>) -> Value {
    let target_id = |t: &usize, ids: &HashMap<usize, String>| {
        ids.get(t)
            .cloned()
            .unwrap_or_else(|| "rsv_never_granted".into())
    };
    match op {
        Op::Decide {
            agent: a,
            tool,
            usd,
        } => {
            let mut req = DecideRequest::new(agent(*a), ToolCall::new(TOOLS[*tool], json!({})));
            req.estimate = vec![Amount::new(Unit::UsdMicrocents, *usd)];
            outcome(auth.decide(&req))
        }
        Op::Reserve {
            agent: a,
            tool,
            usd,
            overage,
            key,
        } => {
            let mut req = ReserveRequest::new(
                agent(*a),
                ToolCall::new(TOOLS[*tool], json!({ "n": index })),
            );
            req.estimate = vec![Amount::new(Unit::UsdMicrocents, *usd)];
            req.overage_policy = Some(POLICIES[*overage]);
            req.idempotency_key.clone_from(key);
            let r = auth.reserve(&req);
            if let Ok(r) = &r {
                ids.insert(index, r.reservation_id.clone());
            }
            outcome(r)
        }
        Op::Commit {
            target,
            usd,
            wrong_unit,
        } => {
            let unit = if *wrong_unit {
                Unit::Credits
            } else {
                Unit::UsdMicrocents
            };
            let req = CommitRequest {
                actual: vec![Amount::new(unit, *usd)],
                ran: None,
                charge_if_expired: false,
                idempotency_key: None,
            };
            outcome(auth.commit(&target_id(target, ids), &req))
        }
        Op::Release { target } => {
            outcome(auth.release(&target_id(target, ids), &ReleaseRequest::default()))
        }
        Op::Extend { target } => outcome(auth.extend(
            &target_id(target, ids),
            &ExtendRequest {
                extend_by_ms: 1_000,
                idempotency_key: None,
            },
        )),
        Op::Event {
            agent: a,
            usd,
            overage,
        } => {
            let req = EventRequest {
                subject: agent(*a),
                call: ToolCall::new("send_email", json!({ "n": index })),
                actual: vec![Amount::new(Unit::UsdMicrocents, *usd)],
                overage_policy: Some(POLICIES[*overage]),
                idempotency_key: None,
            };
            outcome(auth.event(&req))
        }
        Op::Invalid { agent: a } => {
            let mut req = ReserveRequest::new(agent(*a), ToolCall::new("read_file", json!({})));
            req.estimate = vec![Amount::new(Unit::UsdMicrocents, -1)];
            outcome(auth.reserve(&req))
        }
    }
}

thread_local! {
    /// The operation this thread is running: `(thread, index)`.
    static CURRENT: Cell<Option<(usize, usize)>> = const { Cell::new(None) };
}

/// Delegates to a SQLite ledger and records the order in which operations' closures run.
/// The closure runs with the connection held, so that order is the order of application.
#[derive(Debug)]
struct Recording {
    inner: Arc<SqliteLedger>,
    order: Mutex<Vec<(usize, usize)>>,
}

impl Ledger for Recording {
    fn write(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        self.inner.write(&mut |txn| {
            if let Some(op) = CURRENT.with(|c| c.get()) {
                self.order.lock().unwrap().push(op);
            }
            f(txn)
        })
    }
    fn read(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        self.inner.read(f)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Replaces generated ids (`rsv_…`, `evt_…`) by labels given in order of first appearance,
/// and drops hashes (they cover the ids).
struct Normalizer(HashMap<String, String>);

impl Normalizer {
    fn label(&mut self, v: &mut Value) {
        match v {
            Value::String(s) if s.starts_with("rsv_") || s.starts_with("evt_") => {
                let n = self.0.len();
                *s = self
                    .0
                    .entry(s.clone())
                    .or_insert_with(|| format!("id{n}"))
                    .clone();
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.label(x)),
            Value::Object(m) => {
                m.remove("hash");
                m.remove("prev_hash");
                m.values_mut().for_each(|x| self.label(x));
            }
            _ => {}
        }
    }
}

fn audit_values(auth: &Authority) -> Vec<Value> {
    auth.audit(&AuditQuery::default())
        .unwrap()
        .into_iter()
        .map(|r| serde_json::to_value(r).unwrap())
        .collect()
}

fn build(ledger: Arc<dyn Ledger>) -> Authority {
    Authority::builder()
        .policy(replay_policy())
        .shared_ledger(ledger)
        .clock(ManualClock::new(START_MS))
        .build()
        .unwrap()
}

/// One seed: returns the batched ledger's group-commit stats.
fn batched_vs_serial(seed: u64, threads: usize, ops_per_thread: usize) -> (u64, u64) {
    let dir = tempfile::tempdir().unwrap();
    let plans: Vec<Vec<Op>> = (0..threads)
        .map(|t| gen_ops(seed * 1_000 + t as u64, ops_per_thread))
        .collect();

    // Concurrent, group commit on.
    let batched = open_ledger(&dir.path().join("batched.db"), true);
    let recording = Arc::new(Recording {
        inner: batched.clone(),
        order: Mutex::new(Vec::new()),
    });
    let auth = build(recording.clone());
    let barrier = std::sync::Barrier::new(threads);
    let results: Vec<Vec<Value>> = std::thread::scope(|s| {
        let handles: Vec<_> = plans
            .iter()
            .enumerate()
            .map(|(t, plan)| {
                let (auth, barrier) = (&auth, &barrier);
                s.spawn(move || {
                    let mut ids = HashMap::new();
                    barrier.wait();
                    plan.iter()
                        .enumerate()
                        .map(|(i, op)| {
                            CURRENT.with(|c| c.set(Some((t, i))));
                            let v = exec(auth, op, i, &mut ids);
                            CURRENT.with(|c| c.set(None));
                            v
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let order = recording.order.lock().unwrap().clone();
    let stats = batched.group_commit_stats();
    assert!(auth.verify().unwrap().ok, "seed {seed}: batched chain");

    // Every operation's closure ran at most once; operations that never reached the ledger
    // (invalid input) go last in the replay, where their (state-free) results must match too.
    let mut seen = HashSet::new();
    for op in &order {
        assert!(seen.insert(*op), "seed {seed}: {op:?} applied twice");
    }
    let mut replay_order = order.clone();
    for (t, plan) in plans.iter().enumerate() {
        for (i, op) in plan.iter().enumerate() {
            if !seen.contains(&(t, i)) {
                assert!(
                    matches!(op, Op::Invalid { .. }),
                    "seed {seed}: ({t}, {i}) {op:?} never reached the ledger"
                );
                replay_order.push((t, i));
            }
        }
    }

    // Serial, group commit off, in the recorded order.
    let serial_auth = build(open_ledger(&dir.path().join("serial.db"), false));
    let mut serial_ids: Vec<HashMap<usize, String>> = vec![HashMap::new(); threads];
    let mut serial_results: BTreeMap<(usize, usize), Value> = BTreeMap::new();
    for &(t, i) in &replay_order {
        let v = exec(&serial_auth, &plans[t][i], i, &mut serial_ids[t]);
        serial_results.insert((t, i), v);
    }

    // Same result for every operation, labels assigned in application order on both sides.
    let (mut nb, mut ns) = (Normalizer(HashMap::new()), Normalizer(HashMap::new()));
    for &(t, i) in &replay_order {
        let mut b = results[t][i].clone();
        let mut s = serial_results[&(t, i)].clone();
        nb.label(&mut b);
        ns.label(&mut s);
        assert_eq!(
            b, s,
            "seed {seed}: operation ({t}, {i}) {:?} differs between the batched run and its serial replay",
            plans[t][i]
        );
    }
    assert_eq!(
        auth.balances(None).unwrap(),
        serial_auth.balances(None).unwrap(),
        "seed {seed}: balances"
    );
    let (mut chain_b, mut chain_s) = (audit_values(&auth), audit_values(&serial_auth));
    assert_eq!(chain_b.len(), chain_s.len(), "seed {seed}: chain length");
    for (b, s) in chain_b.iter_mut().zip(chain_s.iter_mut()) {
        nb.label(b);
        ns.label(s);
        assert_eq!(b, s, "seed {seed}: audit records differ");
    }
    assert!(serial_auth.verify().unwrap().ok);
    // Something must have happened: grants, denials and failures all occur.
    let all: Vec<&Value> = results.iter().flatten().collect();
    assert!(all.iter().any(|v| v.get("ok").is_some()));
    assert!(
        all.iter()
            .any(|v| v.get("err") == Some(&json!("BUDGET_EXCEEDED")))
    );
    assert!(
        all.iter()
            .any(|v| v.get("err") == Some(&json!("RESERVATION_FINALIZED")))
    );
    (stats.transactions, stats.operations)
}

#[test]
fn batched_run_equals_its_serial_replay() {
    let (mut txns, mut ops) = (0, 0);
    for seed in 1..=6 {
        let (t, o) = batched_vs_serial(seed, 6, 60);
        txns += t;
        ops += o;
    }
    eprintln!("{ops} operations in {txns} transactions");
    // Otherwise this test would not have exercised batching at all.
    assert!(
        ops > txns,
        "no two operations ever shared a transaction ({ops} operations, {txns} transactions)"
    );
}

// ---------------------------------------------------------------------------------------------
// One deterministic batch
// ---------------------------------------------------------------------------------------------

thread_local! {
    /// Set on the thread whose operation opens the batch.
    static GATE: Cell<bool> = const { Cell::new(false) };
}

/// Delegates to a SQLite ledger; the gate thread's operation, once inside the transaction,
/// waits until `others` writers are queued for the connection, so they all join its batch.
#[derive(Debug)]
struct Gated {
    inner: Arc<SqliteLedger>,
    others: usize,
    entered: AtomicBool,
}

impl Gated {
    fn hold_until_queued(&self) {
        self.entered.store(true, Ordering::SeqCst);
        let deadline = Instant::now() + Duration::from_secs(120);
        while self.inner.waiting_writers() < self.others {
            assert!(
                Instant::now() < deadline,
                "the other writers never queued ({} of {})",
                self.inner.waiting_writers(),
                self.others
            );
            std::thread::yield_now();
        }
    }
}

impl Ledger for Gated {
    fn write(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        self.inner.write(&mut |txn| {
            if GATE.with(|g| g.get()) {
                self.hold_until_queued();
            }
            f(txn)
        })
    }
    fn read(&self, f: &mut dyn FnMut(&mut dyn LedgerTxn) -> Result<()>) -> Result<()> {
        self.inner.read(f)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Runs `gate` on one thread and each of `others` on its own thread, all in one batch.
fn one_batch<T: Send>(
    gated: &Gated,
    gate: impl FnOnce() -> T + Send,
    others: Vec<Box<dyn FnOnce() -> T + Send + '_>>,
) -> (std::thread::Result<T>, Vec<std::thread::Result<T>>) {
    assert_eq!(others.len(), gated.others);
    std::thread::scope(|s| {
        let g = s.spawn(|| {
            GATE.with(|c| c.set(true));
            gate()
        });
        while !gated.entered.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        let hs: Vec<_> = others.into_iter().map(|f| s.spawn(f)).collect();
        let rest = hs.into_iter().map(|h| h.join()).collect();
        (g.join(), rest)
    })
}

fn batch_policy() -> Policy {
    Policy::default()
        .register("write_file", Tier::T1)
        .register("read_file", Tier::T0)
        .budget(BudgetSpec::new(TENANT, Unit::UsdMicrocents, 10_000))
        .budget(BudgetSpec::new(TENANT, Unit::RiskPoints, 1_000))
}

fn batch_auth(ledger: Arc<dyn Ledger>) -> Authority {
    Authority::builder()
        .policy(batch_policy())
        .shared_ledger(ledger)
        .clock(ManualClock::new(START_MS))
        .build()
        .unwrap()
}

fn usd_reserve(usd: i64, overage: CommitOveragePolicy, key: Option<&str>) -> ReserveRequest {
    let mut r = ReserveRequest::new(
        Subject::new().tenant("acme").agent("bot"),
        ToolCall::new("write_file", json!({ "usd": usd })),
    );
    r.estimate = vec![Amount::new(Unit::UsdMicrocents, usd)];
    r.overage_policy = Some(overage);
    r.idempotency_key = key.map(str::to_string);
    r
}

fn usd(b: &[Balance]) -> &Balance {
    b.iter().find(|b| b.unit == Unit::UsdMicrocents).unwrap()
}

#[test]
fn failures_in_a_batch_fail_only_themselves() {
    use CommitOveragePolicy::*;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("batch.db");
    let sqlite = open_ledger(&path, true);
    const OTHERS: usize = 11;
    let gated = Arc::new(Gated {
        inner: sqlite.clone(),
        others: OTHERS,
        entered: AtomicBool::new(false),
    });
    let auth = batch_auth(gated.clone());

    // Before the batch: reservations the batch will commit or fail to commit.
    let over = auth.reserve(&usd_reserve(1_000, Reject, None)).unwrap();
    let wrong_unit = auth.reserve(&usd_reserve(1_000, Reject, None)).unwrap();
    let good = auth.reserve(&usd_reserve(1_000, Reject, None)).unwrap();
    let keyed = auth
        .reserve(&usd_reserve(1_000, Reject, Some("k1")))
        .unwrap();
    let released = auth.reserve(&usd_reserve(1_000, Reject, None)).unwrap();
    auth.release(&released.reservation_id, &ReleaseRequest::default())
        .unwrap();
    let before = sqlite.group_commit_stats();
    // 10,000 allocated, 4,000 held: the gate takes 500, then six callers ask 2,000 each.

    type Res = std::result::Result<Value, String>;
    let code = |r: Result<Value>| -> Res { r.map_err(|e| e.code().to_string()) };
    let a = &auth;
    let mut others: Vec<Box<dyn FnOnce() -> Res + Send + '_>> = Vec::new();
    for _ in 0..6 {
        others.push(Box::new(move || {
            code(
                a.reserve(&usd_reserve(2_000, Reject, None))
                    .map(|r| json!(r.reservation_id)),
            )
        }));
    }
    let (over_id, wu_id, good_id, rel_id) = (
        over.reservation_id.clone(),
        wrong_unit.reservation_id.clone(),
        good.reservation_id.clone(),
        released.reservation_id.clone(),
    );
    others.push(Box::new(move || {
        let req = CommitRequest {
            actual: vec![Amount::new(Unit::UsdMicrocents, 1_000_000)],
            ran: None,
            charge_if_expired: false,
            idempotency_key: None,
        };
        code(a.commit(&over_id, &req).map(|r| json!(r)))
    }));
    others.push(Box::new(move || {
        let req = CommitRequest {
            actual: vec![Amount::new(Unit::Tokens, 10)],
            ran: None,
            charge_if_expired: false,
            idempotency_key: None,
        };
        code(a.commit(&wu_id, &req).map(|r| json!(r)))
    }));
    others.push(Box::new(move || {
        let req = CommitRequest {
            actual: vec![Amount::new(Unit::UsdMicrocents, 800)],
            ran: None,
            charge_if_expired: false,
            idempotency_key: None,
        };
        code(a.commit(&good_id, &req).map(|r| json!(r)))
    }));
    others.push(Box::new(move || {
        // Same key, other payload.
        code(
            a.reserve(&usd_reserve(1_001, Reject, Some("k1")))
                .map(|r| json!(r)),
        )
    }));
    others.push(Box::new(move || {
        code(
            a.commit(&rel_id, &CommitRequest::default())
                .map(|r| json!(r)),
        )
    }));
    let (gate, rest) = one_batch(
        &gated,
        || code(a.reserve(&usd_reserve(500, Reject, None)).map(|r| json!(r))),
        others,
    );
    let gate = gate.unwrap();
    let rest: Vec<Res> = rest.into_iter().map(|r| r.unwrap()).collect();

    // Everything ran in one transaction; the three failed closures are not counted.
    let after = sqlite.group_commit_stats();
    assert_eq!(after.transactions - before.transactions, 1, "{rest:?}");
    assert_eq!(
        after.operations - before.operations,
        (1 + OTHERS - 3) as u64,
        "{rest:?}"
    );

    assert!(gate.is_ok(), "{gate:?}");
    let granted: Vec<String> = rest[..6]
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let denied = rest[..6]
        .iter()
        .filter(|r| r.as_ref().err().map(String::as_str) == Some("BUDGET_EXCEEDED"))
        .count();
    assert_eq!(granted.len() + denied, 6, "{rest:?}");
    // 5,500 left after the gate, 5,700 if the good commit (returning 200) ran first.
    assert_eq!(granted.len(), 2, "{rest:?}");
    assert_eq!(rest[6].as_ref().unwrap_err(), "BUDGET_EXCEEDED");
    assert_eq!(rest[7].as_ref().unwrap_err(), "UNIT_MISMATCH");
    assert!(rest[8].is_ok(), "{:?}", rest[8]);
    assert_eq!(rest[9].as_ref().unwrap_err(), "IDEMPOTENCY_MISMATCH");
    assert_eq!(rest[10].as_ref().unwrap_err(), "RESERVATION_FINALIZED");

    // The failed commits changed nothing: their reservations still hold.
    for id in [&over.reservation_id, &wrong_unit.reservation_id] {
        assert_eq!(
            auth.reservation(id).unwrap().status,
            ReservationStatus::Active
        );
    }
    assert_eq!(
        auth.reservation(&keyed.reservation_id).unwrap().status,
        ReservationStatus::Active
    );
    let good_now = auth.reservation(&good.reservation_id).unwrap();
    assert_eq!(good_now.status, ReservationStatus::Committed);
    assert_eq!(
        good_now.charged,
        vec![
            Amount::new(Unit::RiskPoints, 1),
            Amount::new(Unit::UsdMicrocents, 800)
        ]
    );

    let check = |auth: &Authority| {
        let b = auth.balances(Some(TENANT)).unwrap();
        let m = usd(&b);
        let active: i64 = auth
            .reservations(Some(ReservationStatus::Active), usize::MAX)
            .unwrap()
            .iter()
            .flat_map(|r| r.holds.iter())
            .filter(|h| h.unit == Unit::UsdMicrocents)
            .map(|h| h.amount)
            .sum();
        // over, wrong_unit, keyed (3,000) + gate 500 + two grants 4,000.
        assert_eq!(active, 7_500);
        assert_eq!(m.reserved, active);
        assert_eq!(m.spent, 800);
        assert!(m.spent + m.reserved <= m.allocated);
        assert_eq!(m.remaining, m.allocated - m.spent - m.reserved - m.debt);
        assert!(auth.verify().unwrap().ok);
        let records = auth.audit(&AuditQuery::default()).unwrap();
        let count = |k: AuditKind| records.iter().filter(|r| r.kind == k).count();
        // 5 before + gate + 2 grants; one commit; 4 denials; one release; 2 budgets.
        assert_eq!(count(AuditKind::Reserve), 8);
        assert_eq!(count(AuditKind::Commit), 1);
        assert_eq!(count(AuditKind::Denial), 4);
        assert_eq!(count(AuditKind::Release), 1);
        assert_eq!(count(AuditKind::BudgetSet), 2);
        assert_eq!(records.len(), 16);
    };
    check(&auth);
    drop(auth);
    drop(gated);
    drop(sqlite);
    // Durable: the same after reopening the file.
    check(&batch_auth(open_ledger(&path, true)));
}

// ---------------------------------------------------------------------------------------------
// Ledger level: errors and panics inside a batch
// ---------------------------------------------------------------------------------------------

fn kv_keys(ledger: &dyn Ledger) -> Vec<String> {
    let mut keys = Vec::new();
    ledger
        .read(&mut |txn| {
            keys = txn.kv_list("t")?.into_iter().map(|(k, _)| k).collect();
            Ok(())
        })
        .unwrap();
    keys
}

type Outcome = std::thread::Result<Result<()>>;

fn put_then(ledger: &Gated, key: &'static str, then: &'static str) -> Result<()> {
    ledger.write(&mut |txn| {
        txn.kv_put("t", key, &json!(key))?;
        match then {
            "ok" => Ok(()),
            "err" => Err(CyclesError::invalid("x", "refused after writing")),
            _ => panic!("closure panics after writing"),
        }
    })
}

fn run_raw_batch(gate: &'static str, others: &[(&'static str, &'static str)]) -> Vec<Outcome> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = open_ledger(&dir.path().join("raw.db"), true);
    let gated = Gated {
        inner: sqlite.clone(),
        others: others.len(),
        entered: AtomicBool::new(false),
    };
    let before = sqlite.group_commit_stats();
    let g = &gated;
    let boxed: Vec<Box<dyn FnOnce() -> Result<()> + Send + '_>> = others
        .iter()
        .map(|&(k, then)| {
            Box::new(move || put_then(g, k, then)) as Box<dyn FnOnce() -> Result<()> + Send>
        })
        .collect();
    let (gate_result, mut rest) = one_batch(&gated, || put_then(g, "gate", gate), boxed);
    let after = sqlite.group_commit_stats();
    assert_eq!(after.transactions - before.transactions, 1);
    let oks = others.iter().filter(|(_, t)| *t == "ok").count() + usize::from(gate == "ok");
    assert_eq!((after.operations - before.operations) as usize, oks);
    let mut expected: Vec<String> = others
        .iter()
        .filter(|(_, t)| *t == "ok")
        .map(|(k, _)| k.to_string())
        .collect();
    if gate == "ok" {
        expected.push("gate".into());
    }
    expected.sort();
    assert_eq!(kv_keys(sqlite.as_ref()), expected);
    rest.insert(0, gate_result);
    rest
}

#[test]
fn errors_and_panics_roll_back_only_their_savepoint() {
    let out = run_raw_batch(
        "ok",
        &[
            ("a", "ok"),
            ("b", "err"),
            ("c", "ok"),
            ("d", "panic"),
            ("e", "ok"),
            ("f", "err"),
        ],
    );
    let codes: Vec<String> = out
        .iter()
        .map(|o| match o {
            Ok(Ok(())) => "ok".into(),
            Ok(Err(e)) => e.code().into(),
            Err(_) => "panic".into(),
        })
        .collect();
    assert_eq!(
        codes,
        [
            "ok",
            "ok",
            "INVALID_REQUEST",
            "ok",
            "panic",
            "ok",
            "INVALID_REQUEST"
        ]
    );
}

#[test]
fn a_failing_first_operation_does_not_take_the_batch_down() {
    // The first operation of a batch runs without a savepoint: its failure rolls back the
    // transaction it opened, which held only its own writes; the queued writers then share
    // a new one.
    let out = run_raw_batch("err", &[("a", "ok"), ("b", "ok"), ("c", "ok")]);
    assert_eq!(
        out[0].as_ref().unwrap().as_ref().unwrap_err().code(),
        "INVALID_REQUEST"
    );
    assert!(out[1..].iter().all(|o| matches!(o, Ok(Ok(())))));
    let out = run_raw_batch("panic", &[("a", "ok"), ("b", "err")]);
    assert!(out[0].is_err(), "the panic reaches its own caller");
    assert!(matches!(out[1], Ok(Ok(()))));
    assert_eq!(
        out[2].as_ref().unwrap().as_ref().unwrap_err().code(),
        "INVALID_REQUEST"
    );
}

#[test]
fn readers_among_batched_writers_see_only_whole_committed_operations() {
    // Readers that take the connection while a batch is open commit it first (and wake its
    // callers). Writers put a key then fail every third time; a reader must never see a key of
    // a failed operation, must see the count of keys only grow, and nobody may be left waiting.
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_ledger(&dir.path().join("rw.db"), true);
    const WRITERS: usize = 6;
    const PER_WRITER: usize = 150;
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..WRITERS {
            let ledger = &ledger;
            s.spawn(move || {
                for i in 0..PER_WRITER {
                    let key = format!("{w}-{i}");
                    let fail = i % 3 == 2;
                    let r = ledger.write(&mut |txn| {
                        txn.kv_put("t", &key, &json!(fail))?;
                        if fail {
                            return Err(CyclesError::invalid("x", "refused after writing"));
                        }
                        Ok(())
                    });
                    assert_eq!(r.is_err(), fail, "{key}: {r:?}");
                }
            });
        }
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (ledger, done) = (&ledger, &done);
                s.spawn(move || {
                    let (mut last, mut reads) = (0, 0u64);
                    while !done.load(Ordering::SeqCst) {
                        let mut entries = Vec::new();
                        ledger
                            .read(&mut |txn| {
                                entries = txn.kv_list("t")?;
                                Ok(())
                            })
                            .unwrap();
                        assert!(
                            entries.iter().all(|(_, v)| *v == json!(false)),
                            "a reader saw a failed operation's write"
                        );
                        assert!(entries.len() >= last, "committed state went backwards");
                        last = entries.len();
                        reads += 1;
                    }
                    reads
                })
            })
            .collect();
        // The writers are the scope's other threads; wait for them by polling the result.
        let expected = WRITERS * (PER_WRITER - PER_WRITER / 3);
        let deadline = Instant::now() + Duration::from_secs(120);
        while kv_keys(ledger.as_ref()).len() < expected {
            if Instant::now() > deadline {
                // Writers stuck waiting for a batch outcome cannot be joined: a panic here
                // would hang in the scope, so end the test process with a failure instead.
                eprintln!("writers never finished: a batch outcome was never published");
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        done.store(true, Ordering::SeqCst);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    });
    assert_eq!(
        kv_keys(ledger.as_ref()).len(),
        WRITERS * (PER_WRITER - PER_WRITER / 3)
    );
    let stats = ledger.group_commit_stats();
    assert_eq!(
        stats.operations,
        (WRITERS * (PER_WRITER - PER_WRITER / 3)) as u64
    );
}
