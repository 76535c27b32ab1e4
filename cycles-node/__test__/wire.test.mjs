// The numeric wire of decideSync / Reservation#commitSync (src/wire.rs, cycles.js) must give
// exactly the object the JSON path gives. On a file ledger the Promise forms still run off the
// JS thread and cross as JSON, so every result is compared with its Promise twin on SQLite, key
// order included (JSON.stringify), across allowed, capped, cooled-down and denied calls,
// commits with overage, and more names than the wire's names table holds. The last tests
// check that the in-memory ledger's Promise forms run inline and still reject, never throw.
import test from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'

import { cycles, tempDir, TOOLS_BY_TIER } from './support.mjs'

const { Authority, ManualClock } = cycles

const POLICY = {
  tools: TOOLS_BY_TIER,
  budgets: [
    { scope: 'tenant:acme', unit: 'RISK_POINTS', allocated: 200 },
    { scope: 'tenant:acme', unit: 'USD_MICROCENTS', allocated: 1000, overdraft_limit: 500 },
    { scope: 'tenant:acme/agent:bot', unit: 'RISK_POINTS', allocated: 120 },
  ],
  caps: [
    { id: 'low', scope: 'tenant:acme/agent:bot', remaining_below: 100, cooldown_ms: 1000, deny_min_tier: 3 },
  ],
}
const SUBJECT = { tenant: 'acme', agent: 'bot' }
const call = (tool, extra = {}) => ({ subject: SUBJECT, tool, args: { n: 1 }, ...extra })

/** JSON text that keeps key order and shows bigints (`12n`). */
const text = (v) => JSON.stringify(v, (k, x) => (typeof x === 'bigint' ? `${x}n` : x))

/** decideSync (wire) against decide (JSON), same state: decide holds nothing. */
async function sameDecision(auth, req, label, { keyOrder = true } = {}) {
  const viaWire = auth.decideSync(req)
  const viaJson = await auth.decide(req)
  assert.deepStrictEqual(viaWire, viaJson, label)
  if (keyOrder) assert.equal(text(viaWire), text(viaJson), `${label}: key order`)
  return viaWire
}

/** A SQLite-backed authority (its Promise forms take the JSON path) and its cleanup. */
function fileAuthority(options = {}) {
  const tmp = tempDir()
  const auth = Authority.openSync(join(tmp.dir, 'wire.db'), { policy: POLICY, synchronous: 'NORMAL', ...options })
  return { auth, tmp }
}

test('decideSync over the wire equals the JSON path for every kind of decision', async (t) => {
  const clock = new ManualClock(1_000_000)
  const { auth, tmp } = fileAuthority({ clock })
  t.after(tmp.cleanup)
  const seen = new Set()
  const note = (d) => seen.add(`${d.decision}/${d.reasonCode ?? '-'}/${d.retryAfterMs !== undefined}`)

  note(await sameDecision(auth, call('read_file'), 'plain allow'))
  note(await sameDecision(auth, call('send_email', { estimate: [{ unit: 'USD_MICROCENTS', amount: 7 }] }), 'two units'))
  note(await sameDecision(auth, call('unknown_tool'), 'unknown tool'))
  note(await sameDecision(auth, { subject: { tenant: 'other' }, tool: 'read_file' }, 'no budget'))
  // Spend the agent below the caps threshold: ALLOW_WITH_CAPS (caps cross whole, not on the wire).
  auth.reserveSync(call('send_email', { estimate: [{ unit: 'RISK_POINTS', amount: 30 }] })).commitSync()
  clock.advance(5_000)
  note(await sameDecision(auth, call('write_file'), 'capped'))
  note(await sameDecision(auth, call('deploy'), 'capped tier denied'))
  // A reservation starts the cooldown: COOLDOWN with retryAfterMs.
  auth.reserveSync(call('write_file')).commitSync()
  note(await sameDecision(auth, call('write_file'), 'cooldown'))
  clock.advance(5_000)
  note(await sameDecision(auth, call('write_file'), 'after the cooldown'))
  note(await sameDecision(auth, call('read_file', { estimate: [{ unit: 'RISK_POINTS', amount: 500 }] }), 'over budget'))
  // Another agent of the same tenant is not capped: a plain ALLOW whose balances show spending.
  const spent = await sameDecision(auth, { subject: { tenant: 'acme', agent: 'other' }, tool: 'read_file' }, 'allow after spending')
  assert.ok(spent.balances.some((b) => b.spent > 0 && b.reserved === 0), 'balances with spending crossed')

  // The fixtures above must have produced genuinely different decisions, or this proves little.
  assert.ok(seen.size >= 5, `only ${[...seen].join(', ')}`)
  assert.ok([...seen].some((s) => s.startsWith('ALLOW/')), 'an ALLOW crossed')
  assert.ok([...seen].some((s) => s.startsWith('DENY/')), 'a DENY crossed')
})

test('Reservation#commitSync over the wire equals the Promise form', async (t) => {
  const { auth, tmp } = fileAuthority()
  t.after(tmp.cleanup)
  const cases = [
    [call('read_file'), undefined],
    [call('send_email', { estimate: [{ unit: 'USD_MICROCENTS', amount: 100 }] }), { actual: [{ unit: 'USD_MICROCENTS', amount: 40 }] }],
    // Overage into overdraft: debtIncurred is non-empty.
    [
      call('send_email', { estimate: [{ unit: 'USD_MICROCENTS', amount: 10 }], overagePolicy: 'ALLOW_WITH_OVERDRAFT' }),
      { actual: [{ unit: 'USD_MICROCENTS', amount: 1200 }] },
    ],
  ]
  let withDebt = 0
  for (let k = 0; k < cases.length; k++) {
    const [req, opts] = cases[k]
    // A twin ledger brought to the same state by Promise: it commits case k the JSON way.
    const { auth: twin, tmp: twinTmp } = fileAuthority()
    t.after(twinTmp.cleanup)
    for (const [r, o] of cases.slice(0, k)) await (await twin.reserve(r)).commit(o)
    const viaWire = auth.reserveSync(req).commitSync(opts)
    const viaJson = await (await twin.reserve(req)).commit(opts)
    assert.notEqual(viaWire.reservationId, viaJson.reservationId)
    viaJson.reservationId = viaWire.reservationId
    assert.deepStrictEqual(viaWire, viaJson)
    assert.equal(text(viaWire), text(viaJson))
    if (viaWire.debtIncurred.length > 0) withDebt++
  }
  assert.equal(withDebt, 1, 'the overdraft case crossed with its debt')
})

test('results stay right when names outgrow the wire table (it starts over at 4096)', () => {
  const budgets = []
  const N = 4_500
  for (let i = 0; i < N; i++) budgets.push({ scope: `tenant:t${i}`, unit: 'RISK_POINTS', allocated: 1_000 + i })
  const auth = Authority.inMemory({ policy: { tools: POLICY.tools, budgets } })
  for (const round of [0, 1]) {
    for (let i = 0; i < N; i += round === 0 ? 1 : 7) {
      const d = auth.decideSync({ subject: { tenant: `t${i}` }, tool: 'write_file' })
      assert.equal(d.decision, 'ALLOW')
      assert.deepStrictEqual(d.rules, ['tool:write_file'])
      assert.equal(d.balances.length, 1)
      assert.equal(d.balances[0].scope, `tenant:t${i}`, `round ${round}, scope ${i}`)
      assert.equal(d.balances[0].allocated, 1_000 + i)
      assert.equal(d.balances[0].unit, 'RISK_POINTS')
      assert.equal(d.balances[0].status, 'ACTIVE')
    }
  }
})

test('integers beyond 2^53 cross the wire exactly, as bigints, like the JSON path gives them', async (t) => {
  const huge = 2n ** 60n
  const policy = { tools: POLICY.tools, budgets: [{ scope: 'tenant:acme', unit: 'RISK_POINTS', allocated: huge }] }
  const { auth, tmp } = fileAuthority({ policy })
  t.after(tmp.cleanup)
  // The Promise form's bigint path builds objects from a sorted map (keys in alphabetical
  // order); values must match, order cannot.
  const d = await sameDecision(auth, call('write_file'), 'huge', { keyOrder: false })
  assert.equal(d.balances[0].allocated, huge)
  assert.equal(typeof d.balances[0].allocated, 'bigint')
  assert.equal(d.balances[0].spent, 0)
  const c = auth.reserveSync(call('write_file')).commitSync()
  assert.equal(c.balances[0].spent, 1)
  assert.equal(c.balances[0].remaining, huge - 1n)
  const { auth: twin, tmp: twinTmp } = fileAuthority({ policy })
  t.after(twinTmp.cleanup)
  const viaJson = await (await twin.reserve(call('write_file'))).commit()
  viaJson.reservationId = c.reservationId
  assert.deepStrictEqual(c, viaJson)
})

test('decideSync reads unusual arguments exactly as the Promise form does', async (t) => {
  class Point {
    constructor() {
      this.x = 1
    }
  }
  const odd = [
    { date: new Date(0) },
    { custom: { toJSON: () => 'custom' } },
    { point: new Point() },
    { skipped: undefined, kept: 1 },
    { nested: [[1, [2, { deep: [3.5, -0, 'x'] }]]] },
    { nullProto: Object.assign(Object.create(null), { a: 1 }) },
    // Arguments are free-form JSON: integers beyond 2^53 are kept exactly (not on the text path).
    { big: 2 ** 60 },
    { big: 2n ** 62n },
  ]
  const { auth, tmp } = fileAuthority()
  t.after(tmp.cleanup)
  for (const args of odd) {
    const req = { subject: SUBJECT, tool: 'read_file', args }
    const label = Object.keys(args).join()
    await sameDecision(auth, req, label)
    const [viaWire, viaJson] = auth.auditSync({ limit: 1000 }).slice(-2)
    assert.equal(viaWire.callDigest, viaJson.callDigest, `${label}: the same call was recorded`)
  }
  // Inexact input fails the same way on both paths, and nothing is recorded.
  const before = auth.auditSync({ limit: 10_000 }).length
  // A Map or Set would stringify as {}: the tool would run with entries the gate never saw.
  for (const args of [
    { n: NaN },
    { n: -Infinity },
    { f() {} },
    { a: [1, undefined] },
    { s: Symbol('s') },
    { map: new Map([['command', 'rm -rf /']]) },
    { set: new Set(['rm -rf /']) },
    { deep: [{ m: new Map() }] },
    { withBig: 2n ** 62n, map: new Map([['a', 1]]) },
  ]) {
    const req = { subject: SUBJECT, tool: 'read_file', args }
    let syncCode
    try {
      auth.decideSync(req)
    } catch (e) {
      syncCode = e.code
    }
    const asyncCode = await auth.decide(req).then(
      () => undefined,
      (e) => e.code,
    )
    assert.equal(syncCode, asyncCode, `same outcome for ${Object.keys(args)}`)
    assert.equal(syncCode, 'INVALID_REQUEST')
  }
  assert.equal(auth.auditSync({ limit: 10_000 }).length, before)
})

test('on the in-memory ledger the Promise forms run inline, and still reject rather than throw', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const held = () => auth.balancesSync('tenant:acme').find((b) => b.unit === 'RISK_POINTS').reserved
  const pending = auth.reserve(call('send_email'))
  assert.ok(pending instanceof Promise)
  assert.equal(held(), 5, 'the hold is taken before the Promise is awaited')
  const r = await pending
  const committing = r.commit()
  assert.equal(held(), 0, 'the reservation commits inline too')
  assert.equal((await committing).status, 'COMMITTED')
  // Bad input: a rejected Promise, never a synchronous throw, and nothing recorded.
  const before = auth.auditSync({ limit: 1000 }).length
  let rejected
  const p = auth.decide({ subject: SUBJECT, tool: 'read_file', estimate: [{ unit: 'RISK_POINTS', amount: -1 }] })
  await p.catch((e) => (rejected = e.code))
  assert.equal(rejected, 'INVALID_REQUEST')
  await assert.rejects(r.commit(), (e) => e.code === 'RESERVATION_FINALIZED')
  assert.equal(auth.auditSync({ limit: 1000 }).length, before)
  // Settled inline means settled within a few microtasks; a thread-pool result arrives in a
  // later event-loop turn. The file ledger's Promise forms must take the pool.
  const settlesInMicrotasks = async (promise) => {
    let done = false
    const watched = promise.then((v) => ((done = true), v))
    for (let i = 0; i < 5; i++) await Promise.resolve()
    return { done, value: await watched }
  }
  assert.equal((await settlesInMicrotasks(auth.decide(call('read_file')))).done, true)
  const { auth: file, tmp } = fileAuthority()
  try {
    const { done, value } = await settlesInMicrotasks(file.reserve(call('send_email')))
    assert.equal(done, false, 'a SQLite reserve runs off the JS thread')
    await value.release()
  } finally {
    tmp.cleanup()
  }
})
