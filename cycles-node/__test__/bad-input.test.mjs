// Bad input: every malformed value is a CyclesError with code INVALID_REQUEST (naming the
// field where there is one), thrown by the Sync form and rejected by the Promise form, and it
// changes nothing: balances and the audit trail are identical afterwards.
import test from 'node:test'
import assert from 'node:assert/strict'

import { cycles } from './support.mjs'

const { Authority, isCyclesError } = cycles

const POLICY = {
  tools: [
    { name: 'read_file', tier: 0 },
    { name: 'write_file', tier: 1 },
  ],
  budgets: [
    { scope: 'tenant:acme', unit: 'RISK_POINTS', allocated: 100 },
    { scope: 'tenant:acme', unit: 'USD_MICROCENTS', allocated: 1_000_000 },
  ],
}
const SUBJECT = { tenant: 'acme', agent: 'bot' }
const ok = { subject: SUBJECT, tool: 'write_file', args: { path: 'a' } }
const deep = (n) => (n === 0 ? 'leaf' : { d: deep(n - 1) })

/** [label, request, field the error should name (or null)] for reserve. */
const BAD_RESERVES = [
  ['fractional amount', { ...ok, estimate: [{ unit: 'USD_MICROCENTS', amount: 1.5 }] }, 'estimate[0].amount'],
  ['NaN amount', { ...ok, estimate: [{ unit: 'USD_MICROCENTS', amount: NaN }] }, 'estimate[0].amount'],
  ['infinite amount', { ...ok, estimate: [{ unit: 'USD_MICROCENTS', amount: Infinity }] }, 'estimate[0].amount'],
  ['number above 2^53', { ...ok, estimate: [{ unit: 'USD_MICROCENTS', amount: 2 ** 53 + 2 }] }, 'estimate[0].amount'],
  ['negative amount', { ...ok, estimate: [{ unit: 'USD_MICROCENTS', amount: -1 }] }, 'estimate[0].amount'],
  ['negative bigint', { ...ok, estimate: [{ unit: 'USD_MICROCENTS', amount: -1n }] }, 'estimate[0].amount'],
  ['bigint beyond i64', { ...ok, estimate: [{ unit: 'USD_MICROCENTS', amount: 2n ** 63n }] }, 'estimate[0].amount'],
  ['amount as a string', { ...ok, estimate: [{ unit: 'USD_MICROCENTS', amount: '5' }] }, null],
  ['unknown unit', { ...ok, estimate: [{ unit: 'DOLLARS', amount: 5 }] }, null],
  ['unit twice', { ...ok, estimate: [{ unit: 'TOKENS', amount: 1 }, { unit: 'TOKENS', amount: 2 }] }, null],
  ['empty subject', { ...ok, subject: {} }, null],
  ['subject id with a space', { ...ok, subject: { tenant: 'ac me' } }, null],
  ['subject id too long', { ...ok, subject: { tenant: 'a'.repeat(129) } }, null],
  ['subject not an object', { ...ok, subject: 'acme' }, null],
  ['unknown subject level', { ...ok, subject: { tenant: 'acme', team: 'x' } }, null],
  ['no tool', { subject: SUBJECT, args: {} }, null],
  ['tool not a string', { ...ok, tool: 42 }, null],
  ['args holding a function', { ...ok, args: { f() {} } }, 'args.f'],
  ['args holding NaN', { ...ok, args: { x: NaN } }, 'args.x'],
  ['args holding a symbol', { ...ok, args: { s: Symbol('s') } }, 'args.s'],
  ['args nested 100 deep', { ...ok, args: deep(100) }, null],
  ['misspelt field', { ...ok, ttl: 5000 }, 'ttl'],
  ['ttl below 1 s', { ...ok, ttlMs: 999 }, 'ttlMs'],
  ['fractional ttl', { ...ok, ttlMs: 1500.5 }, 'ttlMs'],
  ['grace above 60 s', { ...ok, gracePeriodMs: 60_001 }, 'gracePeriodMs'],
  ['unknown overage policy', { ...ok, overagePolicy: 'SOMETIMES' }, null],
  ['empty idempotency key', { ...ok, idempotencyKey: '' }, 'idempotencyKey'],
  ['request is null', null, null],
  ['request is a number', 42, null],
  ['request is an array', [ok], null],
]

const RESERVE_ONLY = ['ttlMs', 'gracePeriodMs', 'overagePolicy', 'idempotencyKey', 'grant']
const isReserveOnly = (req) => req !== null && typeof req === 'object' && RESERVE_ONLY.some((k) => k in req)

function snapshot(auth) {
  return { balances: auth.balancesSync(), audit: auth.auditSync().length }
}

function assertInvalid(err, field, label) {
  assert.ok(isCyclesError(err), `${label}: not a CyclesError: ${err}`)
  assert.equal(err.code, 'INVALID_REQUEST', `${label}: ${err.message}`)
  assert.equal(err.kind, 'InvalidInput', label)
  if (field !== null) assert.equal(err.field, field, `${label}: ${err.message}`)
  assert.equal(err.reasonCode, undefined, `${label}: bad input is not a denial`)
  return true
}

test('bad reserve requests are INVALID_REQUEST and change nothing (Sync and Promise forms)', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const held = auth.reserveSync(ok) // something live, so "nothing changed" covers holds too
  const before = snapshot(auth)
  for (const [label, req, field] of BAD_RESERVES) {
    assert.throws(() => auth.reserveSync(req), (e) => assertInvalid(e, field, `reserveSync: ${label}`))
    // decide takes no reservation options: for those it names the option as unknown instead.
    const decideField = isReserveOnly(req) ? null : field
    assert.throws(() => auth.decideSync(req), (e) => assertInvalid(e, decideField, `decideSync: ${label}`))
    let promise
    assert.doesNotThrow(() => (promise = auth.reserve(req)), `reserve: ${label} must reject, not throw`)
    await assert.rejects(promise, (e) => assertInvalid(e, field, `reserve: ${label}`))
    await assert.rejects(auth.decide(req), (e) => assertInvalid(e, decideField, `decide: ${label}`))
  }
  assert.deepEqual(snapshot(auth), before)
  assert.equal(held.status, 'ACTIVE')
  // The valid request still works afterwards.
  assert.equal(auth.reserveSync(ok).status, 'ACTIVE')
})

test('bad commit, release and extend arguments change nothing', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const r = auth.reserveSync({ ...ok, estimate: [{ unit: 'USD_MICROCENTS', amount: 100 }] })
  const before = snapshot(auth)
  const expires = r.expiresAtMs
  const cases = [
    ['commit: fractional actual', () => r.commitSync({ actual: [{ unit: 'USD_MICROCENTS', amount: 0.5 }] }), 'actual[0].amount'],
    ['commit: unknown field', () => r.commitSync({ actuals: [] }), 'actuals'],
    ['commit: options not an object', () => r.commitSync('all'), null],
    ['commit by id: id not a string', () => auth.commitSync(42), 'reservationId'],
    ['release: reason too long', () => r.releaseSync({ reason: 'x'.repeat(300) }), 'reason'],
    ['extend: fractional', () => r.extendSync(0.5), 'byMs'],
    ['extend: zero', () => r.extendSync(0), 'byMs'],
    ['extend: string', () => r.extendSync('1000'), null],
    ['extend: unknown option', () => r.extendSync({ by: 1000 }), 'by'],
  ]
  for (const [label, fn, field] of cases) {
    assert.throws(fn, (e) => assertInvalid(e, field, label))
  }
  await assert.rejects(r.commit({ actual: [{ unit: 'USD_MICROCENTS', amount: NaN }] }), (e) =>
    assertInvalid(e, 'actual[0].amount', 'commit (Promise): NaN'),
  )
  await assert.rejects(r.extend(2 ** 60), (e) => assertInvalid(e, 'byMs', 'extend (Promise): unsafe'))
  assert.deepEqual(snapshot(auth), before)
  assert.equal(r.status, 'ACTIVE')
  assert.equal(r.expiresAtMs, expires)
  // And the reservation still commits normally.
  assert.equal(r.commitSync().status, 'COMMITTED')
})

test('bad budgets, events and audit queries change nothing', () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const before = snapshot(auth)
  const cases = [
    ['setBudget: negative', () => auth.setBudgetSync({ scope: 'tenant:x', unit: 'TOKENS', allocated: -5 }), 'allocated'],
    ['setBudget: fractional', () => auth.setBudgetSync({ scope: 'tenant:x', unit: 'TOKENS', allocated: 0.5 }), 'allocated'],
    ['setBudget: bad scope', () => auth.setBudgetSync({ scope: 'nonsense', unit: 'TOKENS', allocated: 5 }), null],
    ['event: no amounts', () => auth.eventSync({ subject: SUBJECT, tool: 'read_file', actual: [] }), 'actual'],
    ['event: above 2^53', () => auth.eventSync({ subject: SUBJECT, tool: 'read_file', actual: [{ unit: 'TOKENS', amount: 1e300 }] }), 'actual[0].amount'],
    ['audit: unknown kind', () => auth.auditSync({ kinds: ['everything'] }), null],
    ['audit: fractional limit', () => auth.auditSync({ limit: 2.5 }), 'limit'],
    ['balances: scope not a string', () => auth.balancesSync(5), 'scope'],
  ]
  for (const [label, fn, field] of cases) {
    assert.throws(fn, (e) => assertInvalid(e, field, label))
  }
  assert.deepEqual(snapshot(auth), before)
})

test('a bad policy or bad options refuse to build an authority', () => {
  const policyInvalid = (e) => isCyclesError(e) && e.code === 'POLICY_INVALID' && e.kind === 'Policy'
  assert.throws(() => Authority.inMemory({ policy: { tools: [{ name: 'x', tier: 5 }] } }), policyInvalid)
  assert.throws(() => Authority.inMemory({ policy: { tool: [] } }), policyInvalid)
  assert.throws(() => Authority.inMemory({ policy: { budgets: [{ scope: 'tenant:a', unit: 'RISK_POINTS', allocated: -1 }] } }), policyInvalid)
  assert.throws(() => Authority.inMemory({ policy: '/nonexistent/policy.toml' }), (e) => policyInvalid(e) && /nonexistent/.test(e.message))
  assert.throws(() => Authority.inMemory({ policy: 42 }), (e) => assertInvalid(e, 'options.policy', 'policy: number'))
  assert.throws(() => Authority.inMemory({ polcy: {} }), (e) => assertInvalid(e, 'options.polcy', 'misspelt option'))
  assert.throws(() => Authority.inMemory({ clock: Date }), (e) => assertInvalid(e, 'options.clock', 'not a clock'))
  assert.throws(() => Authority.openSync(42), (e) => assertInvalid(e, 'path', 'path: number'))
  assert.throws(() => new cycles.ManualClock(0.5), (e) => assertInvalid(e, 'startMs', 'clock start'))
})

test('amounts beyond 2^53 cross exactly as bigints', () => {
  const huge = 2n ** 62n
  const auth = Authority.inMemory({
    policy: {
      tools: [{ name: 'transfer', tier: 0 }],
      budgets: [
        { scope: 'tenant:bank', unit: 'USD_MICROCENTS', allocated: huge },
        { scope: 'tenant:bank', unit: 'RISK_POINTS', allocated: 10 },
      ],
    },
  })
  const r = auth.reserveSync({
    subject: { tenant: 'bank' },
    tool: 'transfer',
    estimate: [{ unit: 'USD_MICROCENTS', amount: huge - 1n }],
  })
  const [hold] = r.toJSON().holds.filter((h) => h.unit === 'USD_MICROCENTS')
  assert.equal(hold.amount, huge - 1n)
  const c = r.commitSync({ actual: [{ unit: 'USD_MICROCENTS', amount: huge - 3n }] })
  const [b] = c.balances.filter((x) => x.unit === 'USD_MICROCENTS')
  assert.equal(b.allocated, huge)
  assert.equal(b.spent, huge - 3n)
  assert.equal(b.remaining, 3, 'a small result is a plain number again')
  assert.equal(typeof b.remaining, 'number')
})
