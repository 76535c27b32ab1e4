// Owed settlements (`settleOrOwe`): a settlement the ledger refuses as unavailable is kept by
// the core and made once the ledger answers again, never lost. The outage is real: another
// process (the sqlite3 shell) holds the SQLite ledger's write lock, and the authority waits
// only 50 ms for it.
import test from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { cycles, lockLedger, tempDir } from './support.mjs'

const { Authority } = cycles

const SUBJECT = { agent: 'bot' }
const POLICY = {
  tools: [{ name: 'deploy', tier: 3 }],
  budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 100 }],
}
const CALL = { subject: SUBJECT, tool: 'deploy', args: {} }

async function open(t) {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const path = join(tmp.dir, 'cycles.db')
  const auth = await Authority.open(path, { policy: POLICY, busyTimeoutMs: 50 })
  return { auth, path }
}

const risk = (auth) => auth.balancesSync('agent:bot')[0]

test('settleOrOwe: a settlement the locked ledger refuses is owed (null), listed, and made after the next decide once the ledger answers', async (t) => {
  const { auth, path } = await open(t)
  const r = await auth.reserve(CALL)
  const held = risk(auth).reserved
  assert.ok(held > 0)
  const unlock = await lockLedger(path)
  let owed
  try {
    const s = await auth.settleOrOwe(r.reservationId, { outcome: 'COMPLETED', reason: 'done' })
    assert.equal(s, null, 'owed, not thrown')
    owed = auth.owedSettlements()
  } finally {
    await unlock()
  }
  assert.equal(owed.length, 1)
  assert.equal(owed[0].reservationId, r.reservationId)
  assert.deepEqual(owed[0].request, { outcome: 'COMPLETED', reason: 'done' })
  assert.equal(owed[0].attempts, 1)
  assert.match(owed[0].lastError, /lock|busy/i)
  assert.equal(typeof owed[0].sinceMs, 'number')
  assert.equal((await auth.getReservation(r.reservationId)).status, 'ACTIVE', 'not settled while locked')

  // The ledger answers again: the next operation that reaches it makes what is owed.
  await auth.decide(CALL)
  assert.deepEqual(auth.owedSettlements(), [])
  const b = risk(auth)
  assert.equal(b.spent, held, 'the call that ran is charged what was held')
  assert.equal(b.reserved, 0)
  assert.equal((await auth.getReservation(r.reservationId)).status, 'COMMITTED')
  const kinds = auth.auditSync().map((x) => x.kind)
  assert.deepEqual(kinds.filter((k) => k === 'commit'), ['commit'], 'made once')
})

test('settleOrOwe on a reservation, and a bad request: the core\'s error, nothing owed', async (t) => {
  const { auth, path } = await open(t)
  const r = await auth.reserve(CALL)
  await assert.rejects(auth.settleOrOwe(r.reservationId, { outcome: 'DONE' }), (e) => e.code === 'INVALID_REQUEST')
  const unlock = await lockLedger(path)
  try {
    assert.equal(r.settleOrOweSync({ outcome: 'INTERRUPTED' }), null)
  } finally {
    await unlock()
  }
  assert.equal(auth.owedSettlements().length, 1, 'owed in the authority the reservation came from')
  assert.deepEqual(await auth.retryOwed(), [])
  assert.equal((await auth.getReservation(r.reservationId)).status, 'COMMITTED')
  // Settled: a second settlement is the core's RESERVATION_FINALIZED, never owed.
  await assert.rejects(r.settleOrOwe({ outcome: 'COMPLETED' }), (e) => e.code === 'RESERVATION_FINALIZED')
  assert.deepEqual(auth.owedSettlements(), [])
})

test('retryOwed while the ledger is still locked keeps the settlement owed (attempts 2); once unlocked it is made', async (t) => {
  const { auth, path } = await open(t)
  const r = await auth.reserve(CALL)
  const held = risk(auth).reserved
  const unlock = await lockLedger(path)
  try {
    assert.equal(await auth.settleOrOwe(r.reservationId, { outcome: 'COMPLETED' }), null)
    const still = await auth.retryOwed()
    assert.equal(still.length, 1)
    assert.equal(still[0].reservationId, r.reservationId)
    assert.equal(still[0].attempts, 2)
    assert.equal(auth.owedSettlements()[0].attempts, 2)
    assert.equal(auth.retryOwedSync()[0].attempts, 3)
  } finally {
    await unlock()
  }
  assert.deepEqual(auth.retryOwedSync(), [])
  const b = risk(auth)
  assert.equal(b.spent, held)
  assert.equal(b.reserved, 0)
  assert.equal(auth.getReservationSync(r.reservationId).status, 'COMMITTED')
})

test('guard: a call whose settlement meets a locked ledger returns its result; the settlement is owed and made once the ledger answers', async (t) => {
  const { auth, path } = await open(t)
  let unlock
  const deploy = auth.guard(async function deploy(target) {
    unlock = await lockLedger(path) // the ledger goes away while the call runs
    return `deployed ${target}`
  }, { subject: SUBJECT })
  let owed
  try {
    assert.equal(await deploy('prod'), 'deployed prod')
    owed = auth.owedSettlements()
  } finally {
    await unlock?.()
  }
  assert.equal(owed.length, 1)
  assert.equal(owed[0].request.outcome, 'COMPLETED')
  const id = owed[0].reservationId
  const held = risk(auth).reserved
  assert.ok(held > 0, 'still held while owed')
  await auth.decide(CALL)
  assert.deepEqual(auth.owedSettlements(), [])
  const b = risk(auth)
  assert.equal(b.spent, held)
  assert.equal(b.reserved, 0)
  assert.equal(auth.getReservationSync(id).status, 'COMMITTED')
})

test('guard: a process that exits with a settlement still owed writes NOT SETTLED to stderr', (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const path = join(tmp.dir, 'cycles.db')
  const child = fileURLToPath(new URL('./owed-exit-child.cjs', import.meta.url))
  const run = spawnSync(process.execPath, [child, path], { encoding: 'utf8', timeout: 60_000 })
  assert.equal(run.status, 0, run.stderr)
  assert.deepEqual(JSON.parse(run.stdout), { result: 'deployed', owed: 1 })
  assert.match(run.stderr, /^NOT SETTLED: reservation rsv_\S+ \(COMPLETED\): .+; its hold expires uncharged$/m)
  const auth = Authority.openSync(path, { policy: POLICY })
  const b = risk(auth)
  assert.ok(b.reserved > 0, 'held (until its TTL): the exit retry met the lock too')
  assert.equal(b.spent, 0)
  const id = /reservation (rsv_\S+)/.exec(run.stderr)[1]
  assert.equal(auth.getReservationSync(id).status, 'ACTIVE')
})

// Review 19 #3: an authority opened per request and dropped with a settlement owed is kept
// alive by the binding, so the 'exit' listener still makes it, or writes NOT SETTLED.
function runDropped(t, mode) {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const path = join(tmp.dir, 'cycles.db')
  const child = fileURLToPath(new URL('./owed-dropped-child.cjs', import.meta.url))
  const run = spawnSync(process.execPath, ['--expose-gc', child, path, mode], { encoding: 'utf8', timeout: 60_000 })
  assert.equal(run.status, 0, run.stderr)
  const out = JSON.parse(run.stdout)
  assert.equal(out.result, 'deployed')
  assert.equal(out.alive, true, 'an authority that owes is kept alive after its caller dropped it')
  return { path, id: out.id, stderr: run.stderr }
}

test('guard: an authority dropped with a settlement owed still makes it at exit once the ledger answers', (t) => {
  const { path, id, stderr } = runDropped(t, 'release')
  assert.doesNotMatch(stderr, /NOT SETTLED/)
  const auth = Authority.openSync(path, { policy: POLICY })
  assert.equal(auth.getReservationSync(id).status, 'COMMITTED')
  const b = risk(auth)
  assert.ok(b.spent > 0, 'charged what was held')
  assert.equal(b.reserved, 0)
})

test('guard: an authority dropped with a settlement owed writes NOT SETTLED at exit while the ledger is still locked', (t) => {
  const { path, id, stderr } = runDropped(t, 'held')
  assert.match(stderr, new RegExp(`^NOT SETTLED: reservation ${id} \\(COMPLETED\\): .+; its hold expires uncharged$`, 'm'))
  const auth = Authority.openSync(path, { policy: POLICY })
  assert.equal(auth.getReservationSync(id).status, 'ACTIVE')
  assert.equal(risk(auth).spent, 0)
})
