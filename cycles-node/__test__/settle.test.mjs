// settle: a reservation is finished by how its call ended, and the core alone decides what that
// costs (COMPLETED and INTERRUPTED charged, NOT_STARTED released, FAILED as the policy's
// `[defaults] on_failure` says). The guard only reports the outcome.
import test from 'node:test'
import assert from 'node:assert/strict'

import { cycles } from './support.mjs'

const { Authority, guard } = cycles

const policy = (onFailure) => ({
  tools: [{ name: 'send_email', tier: 2 }, { name: 'deploy', tier: 3 }],
  budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 100 }],
  ...(onFailure && { defaults: { on_failure: onFailure } }),
})
const BOT = { agent: 'bot' }
const risk = (auth) => auth.balancesSync('agent:bot').find((b) => b.unit === 'RISK_POINTS')
const kinds = (auth) => auth.auditSync().map((r) => r.kind).filter((k) => k !== 'budget_set')

function failingDeploy(auth) {
  const ran = []
  const boom = new Error('deploy failed half-way')
  const deploy = guard(async function deploy(to) {
    ran.push(to)
    throw boom
  }, { authority: auth, subject: BOT })
  return { deploy, ran, boom }
}

test('guard: a throwing function is released under the default policy (on_failure RELEASE)', async () => {
  const auth = Authority.inMemory({ policy: policy() })
  const { deploy, ran, boom } = failingDeploy(auth)
  await assert.rejects(deploy('prod'), (e) => e === boom)
  assert.deepEqual(ran, ['prod'])
  const b = risk(auth)
  assert.equal(b.spent, 0, 'a failed call is not charged under RELEASE')
  assert.equal(b.reserved, 0)
  assert.equal(b.remaining, 100)
  assert.deepEqual(kinds(auth), ['reserve', 'release'])
  assert.equal(auth.auditSync({ kinds: ['release'] })[0].detail.reason, 'guarded function threw (FAILED)')
})

test('guard: a throwing function is charged what was held under on_failure = "CHARGE"', async () => {
  const auth = Authority.inMemory({ policy: policy('CHARGE') })
  const { deploy, boom } = failingDeploy(auth)
  await assert.rejects(deploy('prod'), (e) => e === boom)
  const b = risk(auth)
  assert.equal(b.spent, 20, 'the tier-3 hold is charged')
  assert.equal(b.reserved, 0)
  assert.deepEqual(kinds(auth), ['reserve', 'commit'])
})

test('guard: an AbortError or TimeoutError the function throws itself is FAILED; INTERRUPTED only when the caller\'s signal aborted', async () => {
  // The function's own request timed out or was aborted by its own code: its own failure,
  // released under the default policy (as in the Python binding).
  for (const name of ['AbortError', 'TimeoutError']) {
    const auth = Authority.inMemory({ policy: policy() }) // on_failure RELEASE
    const deploy = guard(async function deploy() {
      throw new DOMException('its own request gave up', name)
    }, { authority: auth, subject: BOT })
    await assert.rejects(deploy(), (e) => e.name === name)
    assert.equal(risk(auth).spent, 0, name)
    assert.equal(risk(auth).reserved, 0, name)
    assert.deepEqual(kinds(auth), ['reserve', 'release'], name)
    assert.equal(auth.auditSync({ kinds: ['release'] })[0].detail.reason, 'guarded function threw (FAILED)')
  }
  // The caller's signal aborted while the function ran: stopped by its caller, INTERRUPTED,
  // charged what was held whatever on_failure says, whatever the function threw.
  const auth = Authority.inMemory({ policy: policy() })
  const ac = new AbortController()
  const deploy = auth.guard(async function deploy() {
    ac.abort()
    throw new Error('stopped half-way')
  }, { subject: BOT, signal: ac.signal })
  await assert.rejects(deploy(), /stopped half-way/)
  assert.equal(risk(auth).spent, 20)
  assert.equal(risk(auth).reserved, 0)
  assert.deepEqual(kinds(auth), ['reserve', 'commit'])
  // The caller's timeout (AbortSignal.timeout-style) seen through the signal: INTERRUPTED too.
  const auth2 = Authority.inMemory({ policy: policy() })
  const timer = new AbortController()
  const slow = auth2.guard(async function deploy(opts) {
    timer.abort(new DOMException('the caller gave up', 'TimeoutError'))
    opts.signal.throwIfAborted()
  }, { subject: BOT, args: () => ({}), signal: (opts) => opts.signal })
  await assert.rejects(slow({ signal: timer.signal }), (e) => e.name === 'TimeoutError')
  assert.equal(risk(auth2).spent, 20)
  assert.deepEqual(kinds(auth2), ['reserve', 'commit'])
})

test('guard: a completed call is charged its actual amounts through settle', async () => {
  const auth = Authority.inMemory({ policy: policy('CHARGE') })
  const send = auth.guard(async function send_email() {
    return 'sent'
  }, { subject: BOT, actual: () => [{ unit: 'RISK_POINTS', amount: 3 }] })
  assert.equal(await send(), 'sent')
  assert.equal(risk(auth).spent, 3)
  assert.deepEqual(kinds(auth), ['reserve', 'commit'])
})

test('settle by outcome: by id and on the reservation, Promise and sync forms', async () => {
  const auth = Authority.inMemory({ policy: policy() })
  const reserve = () => auth.reserveSync({ subject: BOT, tool: 'deploy', args: {} })

  const notStarted = reserve()
  const r1 = auth.settleSync(notStarted.reservationId, { outcome: 'NOT_STARTED', reason: 'user declined' })
  assert.equal(r1.status, 'RELEASED')
  assert.deepEqual(r1.released, [{ unit: 'RISK_POINTS', amount: 20 }])
  assert.equal(r1.charged, undefined, 'a release result has no charged')
  assert.equal(risk(auth).spent, 0)

  const interrupted = reserve()
  const c1 = await interrupted.settle({ outcome: 'INTERRUPTED' })
  assert.equal(c1.status, 'COMMITTED')
  assert.deepEqual(c1.charged, [{ unit: 'RISK_POINTS', amount: 20 }])
  assert.equal(interrupted.status, 'COMMITTED', 'the object follows')
  assert.equal(risk(auth).spent, 20)

  const failed = reserve()
  const r2 = await auth.settle(failed.reservationId, { outcome: 'FAILED' })
  assert.equal(r2.status, 'RELEASED')
  assert.equal(risk(auth).spent, 20)

  const completed = reserve()
  const c2 = completed.settleSync({ outcome: 'COMPLETED', actual: [{ unit: 'RISK_POINTS', amount: 7 }] })
  assert.equal(c2.status, 'COMMITTED')
  assert.equal(completed.status, 'COMMITTED')
  assert.equal(risk(auth).spent, 27)
  assert.equal(risk(auth).reserved, 0)
  assert.deepEqual(kinds(auth), ['reserve', 'release', 'reserve', 'commit', 'reserve', 'release', 'reserve', 'commit'])

  // A second settle without the same key is refused.
  assert.throws(() => completed.settleSync({ outcome: 'COMPLETED' }), (e) => e.code === 'RESERVATION_FINALIZED')
})

test('settle: an unknown outcome, a missing one or actual without COMPLETED is INVALID_REQUEST and changes nothing', async () => {
  const auth = Authority.inMemory({ policy: policy('CHARGE') })
  const r = auth.reserveSync({ subject: BOT, tool: 'deploy', args: {} })
  const before = auth.auditSync().length
  const invalid = (e) => e.code === 'INVALID_REQUEST' && e.name === 'CyclesError'
  assert.throws(() => auth.settleSync(r.reservationId, { outcome: 'DONE' }), invalid)
  await assert.rejects(auth.settle(r.reservationId, { outcome: 'DONE' }), invalid)
  await assert.rejects(r.settle({ outcome: 'done' }), invalid)
  assert.throws(() => r.settleSync({}), invalid)
  assert.throws(() => r.settleSync(), invalid)
  assert.throws(() => r.settleSync({ outcome: 'FAILED', actual: [{ unit: 'RISK_POINTS', amount: 1 }] }), invalid)
  assert.throws(() => r.settleSync({ outcome: 'COMPLETED', chargeIfExpired: true }), invalid)
  assert.equal(r.status, 'ACTIVE')
  assert.equal(auth.auditSync().length, before, 'nothing recorded')
  const b = risk(auth)
  assert.equal(b.spent, 0)
  assert.equal(b.reserved, 20, 'still held')
  assert.equal(auth.getReservationSync(r.reservationId).status, 'ACTIVE')
})

test('settle on a file ledger (off the JS thread) with an idempotency key replays', async (t) => {
  const { tempDir } = await import('./support.mjs')
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const { join } = await import('node:path')
  const auth = await Authority.open(join(tmp.dir, 'c.db'), { policy: policy('CHARGE') })
  const r = await auth.reserve({ subject: BOT, tool: 'deploy', args: {} })
  const a = await r.settle({ outcome: 'FAILED', idempotencyKey: 'k1' })
  const b = await auth.settle(r.reservationId, { outcome: 'FAILED', idempotencyKey: 'k1' })
  assert.equal(a.status, 'COMMITTED', 'FAILED under CHARGE')
  assert.deepEqual(b, a, 'the replay returns the original result')
  assert.equal((await auth.balances('agent:bot'))[0].spent, 20)
  await assert.rejects(auth.settle(r.reservationId, { outcome: 'BOGUS' }), (e) => e.code === 'INVALID_REQUEST')
})

test('guard: arguments are read once; the function runs on exactly what was classified', async () => {
  const auth = Authority.inMemory({
    policy: {
      tools: [{ name: 'run_sql', tier: 0 }],
      budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 10 }],
    },
  })
  const seen = []
  const runSql = auth.guard(async function run_sql({ query }) {
    seen.push(query)
    return 'ok'
  }, { subject: BOT })
  // A getter that answers harmlessly on the first read and destructively afterwards.
  let reads = 0
  const args = {
    get query() {
      reads++
      return reads === 1 ? 'SELECT 1' : 'DROP TABLE users'
    },
  }
  assert.equal(await runSql(args), 'ok')
  assert.equal(reads, 1, 'read once')
  assert.deepEqual(seen, ['SELECT 1'], 'the function got what was classified')
  const [reserve] = auth.auditSync({ kinds: ['reserve'] })
  assert.equal(reserve.tier, 0)
  assert.equal(risk(auth).spent, 0)

  // Mutation by other code while the reservation is being made does not reach the function.
  const mutable = { query: 'SELECT 2' }
  const pending = runSql(mutable)
  mutable.query = 'DROP TABLE users'
  await pending
  assert.deepEqual(seen, ['SELECT 1', 'SELECT 2'])

  // An AbortSignal passes as it is (nothing the classifier reads), plain data is copied.
  const ac = new AbortController()
  const passthrough = auth.guard(async function run_sql(opts, signal) {
    return opts.signal === ac.signal && signal === ac.signal
  }, { subject: BOT })
  assert.equal(await passthrough({ query: 'SELECT 3', signal: ac.signal }, ac.signal), true)

  // A cyclic argument is refused before anything is reserved.
  const cyclic = { query: 'SELECT 4' }
  cyclic.self = cyclic
  const before = auth.auditSync().length
  await assert.rejects(runSql(cyclic), TypeError)
  assert.equal(auth.auditSync().length, before, 'nothing reserved')
})

test('guard: a plain function returning an iterator is settled when the iteration ends, not before its body runs', async () => {
  const auth = Authority.inMemory({ policy: policy() }) // deploy: tier 3, 20 points; on_failure RELEASE
  const steps = []
  const deploy = auth.guard(function deploy(hosts, failAt) {
    return (async function* () {
      for (const h of hosts) {
        if (h === failAt) throw new Error(`deploy to ${h} failed`)
        steps.push(h)
        yield h
      }
    })()
  }, { subject: BOT })

  // Exhausted: COMPLETED, charged only once the body has run.
  const it = await deploy(['a', 'b'])
  assert.deepEqual(steps, [], 'nothing ran yet')
  assert.equal(risk(auth).reserved, 20, 'held while it runs')
  assert.equal(risk(auth).spent, 0, 'not charged before its body runs')
  const got = []
  for await (const h of it) got.push(h)
  assert.deepEqual(got, ['a', 'b'])
  assert.equal(risk(auth).spent, 20)
  assert.equal(risk(auth).reserved, 0)
  assert.deepEqual(kinds(auth), ['reserve', 'commit'])

  // Throws half-way: FAILED (released under the default policy), the error reaches the consumer.
  const failing = await deploy(['c', 'd'], 'd')
  await assert.rejects(async () => {
    for await (const _ of failing);
  }, /deploy to d failed/)
  assert.equal(risk(auth).spent, 20)
  assert.equal(risk(auth).reserved, 0)
  assert.deepEqual(kinds(auth).slice(2), ['reserve', 'release'])

  // Abandoned by the consumer (break calls return()): INTERRUPTED, charged what was held.
  for await (const h of await deploy(['e', 'f', 'g'])) {
    if (h === 'e') break
  }
  assert.deepEqual(steps, ['a', 'b', 'c', 'e'])
  assert.equal(risk(auth).spent, 40)
  assert.equal(risk(auth).reserved, 0)
  assert.deepEqual(kinds(auth).slice(4), ['reserve', 'commit'])

  // Any other returned iterator is an ordinary result: settled COMPLETED at return.
  const list = auth.guard(function deploy() {
    return ['x', 'y'].values()
  }, { subject: BOT })
  const values = await list()
  assert.equal(risk(auth).spent, 60, 'charged at return')
  assert.equal(risk(auth).reserved, 0)
  assert.deepEqual([...values], ['x', 'y'], 'returned as it is')
  assert.deepEqual(kinds(auth).slice(6), ['reserve', 'commit'])
})
