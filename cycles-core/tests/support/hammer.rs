//! The reserve/commit/release loop shared by `concurrency.rs` and `multiprocess.rs`: many
//! workers draw on one tenant budget; each keeps an exact tally of what it was granted and
//! charged, so the test can compare the sum of all tallies with the ledger.

// Each test binary that includes this module uses a different part of it.
#![allow(dead_code)]

use cycles_core::*;

/// The budgeted scope every worker draws on.
pub const TENANT: &str = "tenant:acme";
/// Money on the shared budget: far less than the workers ask for in total.
pub const USD_ALLOCATED: i64 = 3_000;
/// Risk points on the shared budget: each call (tier 1) costs one.
pub const RP_ALLOCATED: i64 = 100_000;

/// The policy every worker and the checking side use.
pub fn policy() -> Policy {
    Policy::default()
        .register("write_row", Tier::T1)
        .budget(BudgetSpec::new(TENANT, Unit::UsdMicrocents, USD_ALLOCATED))
        .budget(BudgetSpec::new(TENANT, Unit::RiskPoints, RP_ALLOCATED))
}

/// What one worker did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Reservations attempted.
    pub attempts: u64,
    /// Reservations granted.
    pub granted: u64,
    /// Reservations denied with BUDGET_EXCEEDED.
    pub denied: u64,
    /// Reservations committed.
    pub committed: u64,
    /// Reservations released.
    pub released: u64,
    /// USD charged by this worker's commits, as the commits reported it.
    pub charged_usd: i64,
    /// Risk points charged by this worker's commits.
    pub charged_rp: i64,
}

impl Tally {
    /// Adds another worker's tally.
    pub fn add(&mut self, o: &Tally) {
        self.attempts += o.attempts;
        self.granted += o.granted;
        self.denied += o.denied;
        self.committed += o.committed;
        self.released += o.released;
        self.charged_usd += o.charged_usd;
        self.charged_rp += o.charged_rp;
    }

    /// One line for a child process to print.
    pub fn to_line(self) -> String {
        format!(
            "TALLY {} {} {} {} {} {} {}",
            self.attempts,
            self.granted,
            self.denied,
            self.committed,
            self.released,
            self.charged_usd,
            self.charged_rp
        )
    }

    /// Parses [`Tally::to_line`].
    pub fn from_line(line: &str) -> Option<Tally> {
        let rest = line.strip_prefix("TALLY ")?;
        let v: Vec<i64> = rest
            .split(' ')
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        (v.len() == 7).then(|| Tally {
            attempts: v[0] as u64,
            granted: v[1] as u64,
            denied: v[2] as u64,
            committed: v[3] as u64,
            released: v[4] as u64,
            charged_usd: v[5],
            charged_rp: v[6],
        })
    }
}

/// A small deterministic generator (xorshift64*), so a worker's requests depend on its seed.
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    /// The next value in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Runs `iterations` reserve → commit/release rounds as agent `w{worker}` of the tenant.
/// Any outcome other than a grant or a BUDGET_EXCEEDED denial fails the test.
pub fn work(auth: &Authority, worker: u64, iterations: u64) -> Tally {
    let mut rng = Rng::new(worker + 1);
    let mut t = Tally::default();
    let subject = Subject::new().tenant("acme").agent(format!("w{worker}"));
    for i in 0..iterations {
        t.attempts += 1;
        let estimate = 10 + rng.below(50) as i64;
        let mut req = ReserveRequest::new(
            subject.clone(),
            ToolCall::new("write_row", serde_json::json!({ "worker": worker, "i": i })),
        );
        req.estimate = vec![Amount::new(Unit::UsdMicrocents, estimate)];
        let r = match auth.reserve(&req) {
            Ok(r) => r,
            Err(e) if e.code() == "BUDGET_EXCEEDED" => {
                t.denied += 1;
                continue;
            }
            Err(e) => panic!("worker {worker}: unexpected reserve outcome {e:?}"),
        };
        t.granted += 1;
        if rng.below(4) == 0 {
            auth.release(&r.reservation_id, &ReleaseRequest::default())
                .unwrap_or_else(|e| panic!("worker {worker}: release failed: {e:?}"));
            t.released += 1;
            continue;
        }
        // Sometimes more than estimated: the default ALLOW_IF_AVAILABLE caps it at what is left.
        let actual = rng.below((estimate * 3 / 2) as u64 + 1) as i64;
        let c = auth
            .commit(
                &r.reservation_id,
                &CommitRequest {
                    actual: vec![Amount::new(Unit::UsdMicrocents, actual)],
                    ran: None,
                    charge_if_expired: false,
                    idempotency_key: None,
                },
            )
            .unwrap_or_else(|e| panic!("worker {worker}: commit failed: {e:?}"));
        t.committed += 1;
        for a in &c.charged {
            match a.unit {
                Unit::UsdMicrocents => t.charged_usd += a.amount,
                Unit::RiskPoints => t.charged_rp += a.amount,
                other => panic!("charged an unexpected unit {other}"),
            }
        }
    }
    t
}

/// Checks the ledger against the sum of every worker's tally: spent equals what was charged,
/// never more than allocated, nothing left held, every attempt accounted for, chain intact and
/// holding exactly one record per outcome.
pub fn check(auth: &Authority, total: &Tally) {
    assert_eq!(
        total.attempts,
        total.granted + total.denied,
        "every attempt is a grant or a denial: {total:?}"
    );
    assert_eq!(total.granted, total.committed + total.released, "{total:?}");
    assert!(
        total.denied > 0,
        "the budget was never exhausted: {total:?}"
    );
    let balances = auth.balances(Some(TENANT)).unwrap();
    let usd = balances
        .iter()
        .find(|b| b.unit == Unit::UsdMicrocents)
        .unwrap();
    let rp = balances
        .iter()
        .find(|b| b.unit == Unit::RiskPoints)
        .unwrap();
    for b in [usd, rp] {
        assert_eq!(b.reserved, 0, "a hold was leaked: {b:?}");
        assert_eq!(b.debt, 0, "{b:?}");
        assert!(b.spent <= b.allocated, "overspent: {b:?}");
        assert_eq!(b.remaining, b.allocated - b.spent - b.reserved - b.debt);
    }
    assert_eq!(usd.spent, total.charged_usd, "spent vs sum of charges");
    assert_eq!(rp.spent, total.charged_rp, "spent vs sum of charges");
    assert_eq!(
        rp.spent as u64, total.committed,
        "one risk point per commit"
    );

    let report = auth.verify().unwrap();
    assert!(report.ok, "audit chain broken: {report:?}");
    let records = auth.audit(&AuditQuery::default()).unwrap();
    let count = |k: AuditKind| records.iter().filter(|r| r.kind == k).count() as u64;
    assert_eq!(count(AuditKind::BudgetSet), 2, "each budget created once");
    assert_eq!(count(AuditKind::Reserve), total.granted);
    assert_eq!(count(AuditKind::Denial), total.denied);
    assert_eq!(count(AuditKind::Commit), total.committed);
    assert_eq!(count(AuditKind::Release), total.released);
    assert_eq!(report.records, records.len() as u64);
    assert_eq!(
        report.records,
        2 + total.attempts + total.committed + total.released,
        "no other records"
    );
}
