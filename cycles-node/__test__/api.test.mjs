// The binding's surface: lifecycle through Reservation objects and by id, errors and their
// fields, idempotency, the clock, the audit trail, and the JS idioms (guard, iterAudit).
import test from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'

import { cycles, tempDir, TOOLS_BY_TIER } from './support.mjs'

const { Authority, ManualClock, guard, isCyclesError } = cycles

const POLICY = {
  tools: TOOLS_BY_TIER,
  budgets: [
    { scope: 'tenant:acme', unit: 'RISK_POINTS', allocated: 40 },
    { scope: 'tenant:acme', unit: 'USD_MICROCENTS', allocated: 1000 },
  ],
}
const SUBJECT = { tenant: 'acme', agent: 'bot' }
const call = (tool, extra = {}) => ({ subject: SUBJECT, tool, args: {}, ...extra })
const remaining = (auth, unit = 'RISK_POINTS') =>
  auth.balancesSync('tenant:acme').find((b) => b.unit === unit).remaining

test('decide holds nothing and is recorded', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const d = await auth.decide(call('deploy'))
  assert.equal(d.decision, 'ALLOW')
  assert.equal(d.tier, 3)
  assert.equal(d.riskPoints, 20)
  assert.deepEqual(d.rules, ['tool:deploy'])
  assert.equal(remaining(auth), 40)
  const deny = auth.decideSync(call('railway.delete_volume'))
  assert.equal(deny.decision, 'DENY')
  assert.equal(deny.reasonCode, 'BUDGET_EXCEEDED')
  assert.equal(deny.scope, 'tenant:acme')
  assert.deepEqual(
    auth.auditSync().map((r) => [r.kind, r.decision]),
    [
      ['budget_set', undefined],
      ['budget_set', undefined],
      ['decide', 'ALLOW'],
      ['decide', 'DENY'],
    ],
  )
})

test('reserve, commit with actuals, and the reservation object follows its status', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const r = await auth.reserve(call('send_email', { estimate: [{ unit: 'USD_MICROCENTS', amount: 300 }] }))
  assert.match(r.reservationId, /^rsv_/)
  assert.equal(r.status, 'ACTIVE')
  assert.equal(r.tier, 2)
  assert.deepEqual(
    r.toJSON().holds.map((h) => [h.unit, h.amount]).sort(),
    [
      ['RISK_POINTS', 5],
      ['USD_MICROCENTS', 300],
    ],
  )
  assert.equal(remaining(auth, 'USD_MICROCENTS'), 700)
  const c = await r.commit({ actual: [{ unit: 'USD_MICROCENTS', amount: 120 }] })
  assert.equal(c.status, 'COMMITTED')
  assert.deepEqual(
    c.charged.map((a) => [a.unit, a.amount]).sort(),
    [
      ['RISK_POINTS', 5],
      ['USD_MICROCENTS', 120],
    ],
  )
  assert.equal(r.status, 'COMMITTED')
  assert.equal(remaining(auth, 'USD_MICROCENTS'), 880)
  assert.equal(remaining(auth), 35)
  await assert.rejects(r.commit(), (e) => e.code === 'RESERVATION_FINALIZED' && e.kind === 'Conflict')
  assert.equal(JSON.parse(JSON.stringify(r)).status, 'COMMITTED')
})

test('release, extend and lookups by id', async () => {
  const clock = new ManualClock(1_000_000)
  const auth = Authority.inMemory({ policy: POLICY, clock })
  const r = auth.reserveSync(call('deploy', { ttlMs: 10_000 }))
  assert.equal(r.expiresAtMs, 1_010_000)
  const e1 = await r.extend(5_000)
  assert.equal(e1.expiresAtMs, 1_015_000)
  assert.equal(r.expiresAtMs, 1_015_000, 'the object sees its new expiry')
  const e2 = auth.extendSync(r.reservationId, { byMs: 1_000n })
  assert.equal(e2.expiresAtMs, 1_016_000)
  assert.equal(e2.extensions, 2)

  const again = await auth.getReservation(r.reservationId)
  assert.equal(again.expiresAtMs, 1_016_000)
  const rel = await again.release({ reason: 'plan changed' })
  assert.equal(rel.status, 'RELEASED')
  assert.deepEqual(rel.released.map((a) => a.amount), [20])
  assert.equal(remaining(auth), 40)
  await assert.rejects(auth.getReservation('rsv_missing'), (e) => e.code === 'NOT_FOUND' && e.kind === 'NotFound')

  const late = auth.reserveSync(call('write_file', { ttlMs: 1_000, gracePeriodMs: 0 }))
  clock.advance(1_001)
  assert.throws(() => auth.commitSync(late.reservationId), (e) => e.code === 'RESERVATION_EXPIRED')
  assert.equal(auth.getReservationSync(late.reservationId).status, 'EXPIRED')
})

test('denials carry code, reasonCode and the decision', async () => {
  const auth = Authority.inMemory({ policy: { ...POLICY, unknown_tool: { action: 'deny' } } })
  const err = await auth.reserve(call('railway.delete_volume')).then(
    () => assert.fail('a tier-4 call on 40 points must be denied'),
    (e) => e,
  )
  assert.ok(err instanceof Error)
  assert.ok(isCyclesError(err))
  assert.equal(err.name, 'CyclesError')
  assert.equal(err.code, 'BUDGET_EXCEEDED')
  assert.equal(err.reasonCode, 'BUDGET_EXCEEDED')
  assert.equal(err.kind, 'Denied')
  assert.equal(err.decision.decision, 'DENY')
  assert.equal(err.decision.tier, 4)
  assert.equal(err.decision.riskPoints, 50)
  assert.match(err.message, /BUDGET_EXCEEDED/)
  assert.throws(() => auth.reserveSync(call('rm_rf')), (e) => e.code === 'TOOL_UNKNOWN' && e.decision.decision === 'DENY')
  assert.equal(isCyclesError(new Error('x')), false)
})

test('idempotency: a replay returns the original outcome, a denial stays denied', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const a = await auth.reserve(call('deploy', { idempotencyKey: 'k1' }))
  const b = await auth.reserve(call('deploy', { idempotencyKey: 'k1' }))
  assert.equal(a.reservationId, b.reservationId)
  assert.equal(remaining(auth), 20, 'held once')
  await assert.rejects(auth.reserve(call('write_file', { idempotencyKey: 'k1' })), (e) => e.code === 'IDEMPOTENCY_MISMATCH')
  const denied = (e) => e.code === 'BUDGET_EXCEEDED'
  await auth.reserve(call('deploy', { idempotencyKey: 'k2' })) // the other 20 points
  await assert.rejects(auth.reserve(call('write_file', { idempotencyKey: 'k3' })), denied)
  auth.setBudgetSync({ scope: 'tenant:acme', unit: 'RISK_POINTS', allocated: 1000 })
  await assert.rejects(auth.reserve(call('write_file', { idempotencyKey: 'k3' })), denied, 'the replay of a denial is still a denial')
  assert.equal((await auth.reserve(call('write_file', { idempotencyKey: 'k4' }))).status, 'ACTIVE', 'a new attempt takes a new key')
})

test('events and budgets', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const ev = await auth.event({ subject: SUBJECT, tool: 'read_file', actual: [{ unit: 'USD_MICROCENTS', amount: 250 }] })
  assert.match(ev.eventId, /^evt_/)
  assert.equal(remaining(auth, 'USD_MICROCENTS'), 750)
  const b = await auth.setBudget({ scope: 'tenant:acme', unit: 'USD_MICROCENTS', allocated: 2000, status: 'FROZEN' })
  assert.equal(b.allocated, 2000)
  assert.equal(b.spent, 250, 'set_budget keeps spending')
  assert.equal(b.status, 'FROZEN')
  assert.throws(
    () => auth.reserveSync(call('read_file', { estimate: [{ unit: 'USD_MICROCENTS', amount: 1 }] })),
    (e) => e.reasonCode === 'BUDGET_FROZEN',
  )
})

test('a file ledger persists across authorities; sweepExpired returns holds', async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const path = join(tmp.dir, 'ledger.db')
  const clock = new ManualClock(5_000_000)
  const a = await Authority.open(path, { policy: POLICY, clock, synchronous: 'NORMAL' })
  assert.equal(a.ledger.startsWith('sqlite'), true)
  await a.reserve(call('deploy', { ttlMs: 1_000, gracePeriodMs: 0 }))
  const b = Authority.openSync(path, { policy: POLICY, clock })
  assert.equal(remaining(b), 20, 'the second authority sees the hold')
  clock.advance(1_001)
  assert.equal(await b.sweepExpired(), 1)
  assert.equal(remaining(a), 40)
  await assert.rejects(Authority.open(join(tmp.dir, 'missing-dir', 'x', 'ledger.db')), (e) => e.kind === 'Ledger')
  await assert.rejects(Authority.open(path, { synchronous: 'SOMETIMES' }), (e) => e.field === 'options.synchronous')
})

test('iterAudit walks the chain page by page, in order, with filters', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  for (let i = 0; i < 7; i++) auth.reserveSync(call('read_file', { args: { i } })).commitSync()
  auth.decideSync(call('railway.delete_volume'))
  const all = auth.auditSync()
  const walked = []
  for await (const r of auth.iterAudit(undefined, 3)) walked.push(r)
  assert.deepEqual(walked, all)
  const commits = []
  for await (const r of auth.iterAudit({ kinds: ['commit'], limit: 5 }, 2)) commits.push(r.seq)
  assert.deepEqual(commits, all.filter((r) => r.kind === 'commit').slice(0, 5).map((r) => r.seq))
  const [deny] = await auth.audit({ kinds: ['decide'], scope: 'tenant:acme' })
  assert.equal(deny.reasonCode, 'BUDGET_EXCEEDED')
  assert.match(deny.callDigest, /^[0-9a-f]{64}$/)
  assert.equal(all.at(-1).prevHash, all.at(-2).hash)
})

test('guard: reserve before, commit after, release on throw, never run on deny', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const ran = []
  const sendEmail = guard(
    async ({ to }) => {
      ran.push(to)
      return `sent to ${to}`
    },
    {
      authority: auth,
      subject: SUBJECT,
      tool: 'send_email',
      estimate: [{ unit: 'USD_MICROCENTS', amount: 100 }],
      actual: () => [{ unit: 'USD_MICROCENTS', amount: 40 }],
    },
  )
  assert.equal(await sendEmail({ to: 'a@example.com' }), 'sent to a@example.com')
  assert.equal(remaining(auth), 35)
  assert.equal(remaining(auth, 'USD_MICROCENTS'), 960, 'charged the actual, not the estimate')
  const commit = auth.auditSync({ kinds: ['commit'] })[0]
  assert.equal(commit.action.name, 'send_email')

  const wipe = auth.guard(async function wipe() {
    ran.push('wipe')
  }, { subject: SUBJECT, tool: 'railway.delete_volume' })
  await assert.rejects(wipe(), (e) => e.code === 'BUDGET_EXCEEDED')
  assert.deepEqual(ran, ['a@example.com'], 'the denied function never ran')

  const boom = new Error('smtp down')
  const failing = auth.guard(async () => {
    ran.push('failing')
    throw boom
  }, { subject: SUBJECT, tool: 'send_email' })
  await assert.rejects(failing({ to: 'b@example.com' }), (e) => e === boom)
  assert.equal(remaining(auth), 35, 'the failed call was released, not charged')
  assert.equal(auth.auditSync({ kinds: ['release'] }).length, 1)
  assert.equal(auth.balancesSync('tenant:acme').every((b) => b.reserved === 0), true)

  // Positional arguments are classified as { arguments: [...] }; the tool defaults to fn.name.
  const readFile = auth.guard(async function read_file(path, enc) {
    return `${path}:${enc}`
  }, { subject: SUBJECT })
  assert.equal(await readFile('a.txt', 'utf8'), 'a.txt:utf8')
  assert.equal(auth.auditSync({ kinds: ['reserve'] }).at(-1).action.name, 'read_file')

  assert.throws(() => guard(() => 1, { subject: SUBJECT }), TypeError)
  assert.throws(() => guard(async () => 1, { authority: auth, subject: SUBJECT }), /tool is required/)
})

test('the JSON fast path and the exact path give the same values', () => {
  const auth = Authority.inMemory({ policy: POLICY })
  // A bigint anywhere in a request sends it through the exact walker instead of JSON.
  const viaJson = auth.decideSync(call('send_email', { estimate: [{ unit: 'USD_MICROCENTS', amount: 5 }] }))
  const viaWalker = auth.decideSync(call('send_email', { estimate: [{ unit: 'USD_MICROCENTS', amount: 5n }] }))
  assert.deepEqual(viaWalker, viaJson)
  // A result holding an integer beyond 2^53 is built value by value; same keys, exact bigint.
  const small = auth.setBudgetSync({ scope: 'tenant:other', unit: 'TOKENS', allocated: 7 })
  const huge = auth.setBudgetSync({ scope: 'tenant:other', unit: 'TOKENS', allocated: 2n ** 60n })
  assert.deepEqual(Object.keys(huge).sort(), Object.keys(small).sort())
  assert.equal(huge.allocated, 2n ** 60n)
  assert.equal(huge.spent, 0)
  assert.deepEqual({ ...huge, allocated: 7, remaining: 7 }, small)
})

test('a tier-4 call within budget needs an approval: APPROVAL_REQUIRED with the request id', async () => {
  const auth = Authority.inMemory({
    policy: { ...POLICY, budgets: [{ scope: 'tenant:acme', unit: 'RISK_POINTS', allocated: 1000 }] },
  })
  const err = await auth.reserve(call('railway.delete_volume', { args: { volumeId: 'vol_prod' } })).then(
    () => assert.fail('a tier-4 call must wait for an approver'),
    (e) => e,
  )
  assert.equal(err.code, 'APPROVAL_REQUIRED')
  assert.equal(err.reasonCode, 'APPROVAL_REQUIRED')
  assert.equal(err.kind, 'Denied')
  assert.equal(typeof err.approvalRequestId, 'string')
  assert.equal(err.approvalRequestId, err.decision.approvalRequestId)
  assert.equal(remaining(auth), 1000, 'nothing is held while the approval is pending')
  const [denial] = auth.auditSync({ kinds: ['denial'] })
  assert.equal(denial.reasonCode, 'APPROVAL_REQUIRED')
})

test('explain rates a call by the policy alone and records nothing', () => {
  const auth = Authority.inMemory({
    policy: {
      tools: [{ name: 'run_sql', tier: 0, classifier: 'sql', arg: 'query' }],
      unknown_tool: { action: 'deny' },
      max_tier: [{ scope: 'tenant:acme/agent:intern', max_tier: 1 }],
    },
  })
  const e = auth.explain({ tool: 'run_sql', args: { query: 'DROP DATABASE prod' } })
  assert.equal(e.tier, 4)
  assert.equal(e.riskPoints, 50)
  assert.equal(e.unknown, false)
  assert.equal(e.approvalRequired, true)
  assert.equal(e.deny, undefined)
  assert.ok(e.rules.includes('sql.drop'), e.rules)
  assert.equal(auth.explain({ tool: 'run_sql', args: { query: 'SELECT 1' } }).tier, 0)
  const capped = auth.explain({
    tool: 'run_sql',
    args: { query: 'DELETE FROM t' },
    scope: 'tenant:acme/agent:intern',
  })
  assert.equal(capped.deny.reasonCode, 'TIER_NOT_PERMITTED')
  assert.equal(capped.approvalRequired, false)
  assert.equal(auth.explain({ tool: 'nope' }).deny.reasonCode, 'TOOL_UNKNOWN')
  for (const bad of [
    { tool: 'run_sql', scope: 'planet:earth' },
    { tool: 'bad name!' },
    { tool: 'run_sql', subject: { agent: 'bot' } },
  ]) {
    assert.throws(() => auth.explain(bad), (e) => e.code === 'INVALID_REQUEST', JSON.stringify(bad))
  }
  assert.deepEqual(auth.auditSync(), [])
})
