// Review 12 of the guard: what the function runs on, which returned values defer settlement,
// and which outcome each way a call can end is (the core alone decides what that costs).
import test from 'node:test'
import assert from 'node:assert/strict'

import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { cycles, tempDir } from './support.mjs'

const { Authority } = cycles

const BOT = { agent: 'bot' }
const policy = (onFailure) => ({
  tools: [{ name: 'run_sql', tier: 1, classifier: 'sql', arg: 'sql' }, { name: 'deploy', tier: 3 }],
  budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 1000 }],
  ...(onFailure && { defaults: { on_failure: onFailure } }),
})
const risk = (auth) => auth.balancesSync('agent:bot').find((b) => b.unit === 'RISK_POINTS')
const kinds = (auth) => auth.auditSync().map((r) => r.kind).filter((k) => k !== 'budget_set')
const reasons = (auth) => auth.auditSync({ kinds: ['release'] }).map((r) => r.detail.reason)

test('guard: an argument carrying toJSON or a non-plain object is refused before anything is reserved (the function runs on exactly what was classified)', async () => {
  const auth = Authority.inMemory({ policy: policy() })
  const seen = []
  const run = auth.guard(async function run_sql(q) {
    seen.push(q.sql)
    return 'ran'
  }, { subject: BOT })
  // The plain statement needs approval (tier 4 under the sql classifier).
  await assert.rejects(run({ sql: 'DROP TABLE users' }), (e) => e.code === 'APPROVAL_REQUIRED')
  // The same statement behind a harmless toJSON (what JSON.stringify, hence the classifier, sees).
  const before = auth.auditSync().length
  await assert.rejects(
    run({ sql: 'DROP TABLE users', toJSON: () => ({ sql: 'SELECT 1' }) }),
    (e) => e instanceof TypeError && /toJSON/.test(e.message),
  )
  // Nested inside an array.
  await assert.rejects(run({ q: [{ sql: 'DROP TABLE users', toJSON() { return {} } }] }), TypeError)
  // A class instance is held by reference: its fields could change between the classification
  // and the call, so it is refused too.
  class Q {
    constructor(sql) {
      this.sql = sql
    }
  }
  const q = new Q('SELECT 1')
  const pending = run(q)
  q.sql = 'DROP TABLE users'
  await assert.rejects(pending, (e) => e instanceof TypeError && /Q/.test(e.message))
  assert.deepEqual(seen, [], 'the function never ran')
  assert.equal(auth.auditSync().length, before, 'nothing reserved')
  // A key named toJSON that is plain data (not a function) is data like any other.
  assert.equal(await run({ sql: 'SELECT 1', toJSON: 'just a string' }), 'ran')
  assert.deepEqual(seen, ['SELECT 1'])
  // An AbortSignal (no data the classifier reads) still passes as it is.
  const ac = new AbortController()
  const pass = auth.guard(async function deploy(opts, signal) {
    return opts.signal === ac.signal && signal === ac.signal
  }, { subject: BOT })
  assert.equal(await pass({ sql: 'SELECT 2', signal: ac.signal }, ac.signal), true)
})

test('guard: only a generator object defers settlement; other returned iterators are charged at return', async () => {
  const auth = Authority.inMemory({ policy: policy() }) // deploy: tier 3, 20 points
  let ran = 0
  // The body does its work, then returns an iterator over what it did.
  const done = auth.guard(function deploy() {
    ran++
    return ['step1', 'step2'].values()
  }, { subject: BOT })
  const it = await done()
  assert.equal(ran, 1)
  assert.equal(risk(auth).spent, 20, 'charged at return, not left held until the TTL')
  assert.equal(risk(auth).reserved, 0)
  const got = []
  for (const x of it) got.push(x) // still the array iterator, sync-iterable
  assert.deepEqual(got, ['step1', 'step2'])
  // A Map's entries and a plain object with next() are ordinary results too.
  const entries = auth.guard(function deploy() {
    return new Map([['a', 1]]).entries()
  }, { subject: BOT })
  assert.deepEqual([...(await entries())], [['a', 1]])
  const nextable = auth.guard(function deploy() {
    return { next: () => ({ done: true, value: undefined }), [Symbol.iterator]() { return this } }
  }, { subject: BOT })
  await nextable()
  assert.equal(risk(auth).spent, 60)
  assert.equal(risk(auth).reserved, 0)
  assert.deepEqual(kinds(auth), ['reserve', 'commit', 'reserve', 'commit', 'reserve', 'commit'])
})

test('guard: a returned sync generator stays sync-iterable and is charged when exhausted', async () => {
  const auth = Authority.inMemory({ policy: policy() })
  const steps = []
  const deploy = auth.guard(function deploy(hosts) {
    return (function* () {
      for (const h of hosts) {
        steps.push(h)
        yield h
      }
    })()
  }, { subject: BOT })
  const it = await deploy(['a', 'b'])
  assert.deepEqual(steps, [], 'nothing ran yet')
  assert.equal(risk(auth).reserved, 20, 'held while it runs')
  const got = []
  for (const h of it) {
    got.push(h)
    assert.equal(risk(auth).spent, 0, 'not charged before it ends')
  }
  assert.deepEqual(got, ['a', 'b'])
  assert.equal(risk(auth).spent, 20, 'charged once exhausted')
  assert.equal(risk(auth).reserved, 0)
  // Spread works too; a break (return()) is INTERRUPTED: charged what was held.
  assert.deepEqual([...(await deploy(['c']))], ['c'])
  for (const h of await deploy(['d', 'e'])) if (h === 'd') break
  assert.deepEqual(steps, ['a', 'b', 'c', 'd'])
  assert.equal(risk(auth).spent, 60)
  assert.equal(risk(auth).reserved, 0)
  assert.deepEqual(kinds(auth), ['reserve', 'commit', 'reserve', 'commit', 'reserve', 'commit'])
})

test('guard: throw() from the consumer abandons a partly-run generator: INTERRUPTED (charged), not FAILED', async () => {
  const auth = Authority.inMemory({ policy: policy() }) // on_failure RELEASE
  const asyncDeploy = auth.guard(function deploy() {
    return (async function* () {
      yield 1
      yield 2
    })()
  }, { subject: BOT })
  const it = await asyncDeploy()
  await it.next()
  const gaveUp = new Error('consumer gave up')
  await assert.rejects(it.throw(gaveUp), (e) => e === gaveUp)
  assert.equal(risk(auth).spent, 20, 'charged: part of it ran')
  assert.equal(risk(auth).reserved, 0)
  const syncDeploy = auth.guard(function deploy() {
    return (function* () {
      yield 1
      yield 2
    })()
  }, { subject: BOT })
  const s = await syncDeploy()
  s.next()
  assert.throws(() => s.throw(gaveUp), (e) => e === gaveUp)
  assert.equal(risk(auth).spent, 40)
  assert.equal(risk(auth).reserved, 0)
  assert.deepEqual(kinds(auth), ['reserve', 'commit', 'reserve', 'commit'])
  // The body's own error is still FAILED (released under the default policy).
  const failing = auth.guard(function deploy() {
    return (function* () {
      yield 1
      throw new Error('deploy broke')
    })()
  }, { subject: BOT })
  const f = await failing()
  assert.throws(() => [...f], /deploy broke/)
  assert.equal(risk(auth).spent, 40)
  assert.equal(risk(auth).reserved, 0)
  assert.deepEqual(reasons(auth), ['guarded iterator threw (FAILED)'])
})

test('guard: a signal aborted before the function is called: it never runs, the hold is released NOT_STARTED', async () => {
  const auth = Authority.inMemory({ policy: policy() })
  let acted = 0
  const deploy = auth.guard(async function deploy(opts) {
    opts.signal.throwIfAborted()
    acted++
  }, { subject: BOT, args: () => ({}), signal: (opts) => opts.signal })
  // Already aborted: nothing is reserved, the call rejects with the signal's reason.
  const early = new AbortController()
  early.abort(new Error('user pressed stop'))
  await assert.rejects(deploy({ signal: early.signal }), /user pressed stop/)
  assert.deepEqual(kinds(auth), [], 'nothing reserved')
  // Aborted while the reservation is being made (a file ledger reserves off the JS thread).
  const { tempDir } = await import('./support.mjs')
  const { join } = await import('node:path')
  const tmp = tempDir()
  try {
    const fileAuth = await Authority.open(join(tmp.dir, 'c.db'), { policy: policy() })
    const late = new AbortController()
    const deployFile = fileAuth.guard(async function deploy() {
      acted++
    }, { subject: BOT, signal: late.signal })
    const pending = deployFile()
    late.abort()
    await assert.rejects(pending, (e) => e.name === 'AbortError')
    const b = (await fileAuth.balances('agent:bot')).find((x) => x.unit === 'RISK_POINTS')
    assert.equal(b.spent, 0, 'not charged: it never started')
    assert.equal(b.reserved, 0)
    const recs = (await fileAuth.audit()).filter((r) => r.kind !== 'budget_set')
    assert.deepEqual(recs.map((r) => r.kind), ['reserve', 'release'])
    assert.equal(recs[1].detail.reason, 'aborted before the call started')
  } finally {
    tmp.cleanup()
  }
  assert.equal(acted, 0, 'the function never ran')
  assert.throws(() => auth.guard(async function deploy() {}, { subject: BOT, signal: 'soon' }), TypeError)
})

test('guard: a generator that throws is FAILED on its own, INTERRUPTED once the caller\'s signal aborted', async () => {
  const auth = Authority.inMemory({ policy: policy() }) // on_failure RELEASE
  const ac = new AbortController()
  const deploy = auth.guard(function deploy(failWith) {
    return (async function* () {
      yield 1
      throw new DOMException('gave up', failWith)
    })()
  }, { subject: BOT, signal: ac.signal })
  const own = await deploy('TimeoutError')
  await assert.rejects(async () => {
    for await (const _ of own);
  }, (e) => e.name === 'TimeoutError')
  assert.equal(risk(auth).spent, 0, 'its own timeout: FAILED, released')
  const stopped = await deploy('AbortError')
  await stopped.next()
  ac.abort()
  await assert.rejects(stopped.next(), (e) => e.name === 'AbortError')
  assert.equal(risk(auth).spent, 20, 'the caller aborted: INTERRUPTED, charged')
  assert.equal(risk(auth).reserved, 0)
  assert.deepEqual(kinds(auth), ['reserve', 'release', 'reserve', 'commit'])
})

test('guard: a plain call still in flight when the process exits (process.exit, an uncaught exception) is settled INTERRUPTED (charged), once', async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const child = fileURLToPath(new URL('./exit-call-child.cjs', import.meta.url))
  const exitPolicy = { tools: [{ name: 'deploy', tier: 3 }], budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 100 }] }
  for (const how of ['exit', 'throw']) {
    const path = join(tmp.dir, `${how}.db`)
    const run = spawnSync(process.execPath, [child, path, how], { encoding: 'utf8' })
    assert.equal(run.status, how === 'exit' ? 0 : 1, run.stderr)
    assert.deepEqual(JSON.parse(run.stdout), { spent: 20, reserved: 20 }, `${how}: one charged, one held while it runs`)
    const auth = Authority.openSync(path, { policy: exitPolicy })
    const b = risk(auth)
    assert.equal(b.reserved, 0, `${how}: nothing left held`)
    assert.equal(b.spent, 40, `${how}: the completed call and the one in flight at exit are both charged`)
    const records = auth.auditSync()
    assert.deepEqual(records.map((r) => r.kind), ['budget_set', 'reserve', 'commit', 'reserve', 'commit'], how)
    assert.equal(records[2].reservationId, records[1].reservationId, how)
    assert.equal(records[4].reservationId, records[3].reservationId, `${how}: the call in flight, settled once at exit`)
    assert.deepEqual(records[4].amounts, [{ unit: 'RISK_POINTS', amount: 20 }], `${how}: charged what was held`)
  }
})
