// Many async tasks (and several processes) on one budget: never more reserved or spent than
// allocated, every call accounted for, and the event loop keeps turning while the ledger works.
import test from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { cycles, tempDir } from './support.mjs'

const { Authority } = cycles
const here = dirname(fileURLToPath(import.meta.url))

// tier 2 = 5 RISK_POINTS; 50 allocated = exactly 10 calls fit.
const POLICY = {
  tools: [{ name: 'send_email', tier: 2 }],
  budgets: [{ scope: 'tenant:t', unit: 'RISK_POINTS', allocated: 50 }],
}
const CALL = { subject: { tenant: 't', agent: 'a' }, tool: 'send_email', args: { to: 'x@example.com' } }

/** Fires `n` reserves at once; returns the reservations and the denial codes. */
async function burst(auths, n) {
  const settled = await Promise.allSettled(
    Array.from({ length: n }, (_, i) => auths[i % auths.length].reserve(CALL)),
  )
  const reserved = settled.filter((s) => s.status === 'fulfilled').map((s) => s.value)
  const denied = settled.filter((s) => s.status === 'rejected').map((s) => s.reason.code)
  return { reserved, denied }
}

async function checkAfterBurst(auth, reserved, denied, n) {
  assert.equal(reserved.length, 10, 'exactly the 10 calls that fit were reserved')
  assert.equal(reserved.length + denied.length, n, 'every call is accounted for')
  assert.deepEqual([...new Set(denied)], ['BUDGET_EXCEEDED'])
  const [held] = await auth.balances('tenant:t')
  assert.equal(held.reserved, 50)
  assert.equal(held.remaining, 0)

  const commits = await Promise.all(reserved.map((r) => r.commit()))
  assert.equal(commits.length, 10)
  const [b] = await auth.balances('tenant:t')
  assert.deepEqual([b.allocated, b.spent, b.reserved, b.remaining], [50, 50, 0, 0])
  const records = await auth.audit()
  const count = (kind) => records.filter((r) => r.kind === kind).length
  assert.equal(count('reserve'), 10)
  assert.equal(count('commit'), 10)
  assert.equal(count('denial'), n - 10)
  assert.equal((await auth.verify()).ok, true)
}

test('40 concurrent reserves on the in-memory ledger: 10 fit, 30 denied', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const { reserved, denied } = await burst([auth], 40)
  await checkAfterBurst(auth, reserved, denied, 40)
})

test('40 concurrent reserves on one SQLite file through two authorities: no overspend', async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const path = join(tmp.dir, 'ledger.db')
  const a = await Authority.open(path, { policy: POLICY })
  const b = await Authority.open(path, { policy: POLICY })
  const { reserved, denied } = await burst([a, b], 40)
  await checkAfterBurst(a, reserved, denied, 40)
})

test('Promise methods keep the event loop turning; Sync methods block it', async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const policy = {
    tools: [{ name: 'read_file', tier: 1 }],
    budgets: [{ scope: 'tenant:t', unit: 'RISK_POINTS', allocated: 1_000_000 }],
  }
  const auth = await Authority.open(join(tmp.dir, 'ledger.db'), { policy })
  const call = { subject: { tenant: 't' }, tool: 'read_file', args: {} }

  const turnsDuring = async (work) => {
    let turns = 0
    let done = false
    const spin = () => {
      if (!done) {
        turns++
        setImmediate(spin)
      }
    }
    setImmediate(spin)
    await work()
    done = true
    return turns
  }

  const asyncTurns = await turnsDuring(() =>
    Promise.all(Array.from({ length: 100 }, () => auth.reserve(call).then((r) => r.commit()))),
  )
  const syncTurns = await turnsDuring(async () => {
    for (let i = 0; i < 100; i++) auth.reserveSync(call).commitSync()
  })
  assert.ok(asyncTurns > 0, 'the loop turned while Promise methods ran on the thread pool')
  assert.equal(syncTurns, 0, 'Sync methods hold the loop (which is why the Promise forms exist)')
  const [b] = await auth.balances('tenant:t')
  assert.equal(b.spent, 200)
})

test('3 processes × 20 reserve+commit on one SQLite file: no overspend, chain verifies', async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const path = join(tmp.dir, 'ledger.db')
  const policy = {
    tools: [{ name: 'send_email', tier: 2 }],
    budgets: [{ scope: 'tenant:t', unit: 'RISK_POINTS', allocated: 150 }],
  }
  // Create the budget once, before the workers race.
  Authority.openSync(path, { policy })
  const worker = join(here, 'ledger-worker.mjs')
  const runs = await Promise.all(
    [0, 1, 2].map(
      (i) =>
        new Promise((resolve, reject) => {
          const child = spawn(process.execPath, [worker, path, String(i), '20', JSON.stringify(policy)], { stdio: ['ignore', 'pipe', 'pipe'] })
          let out = ''
          let err = ''
          child.stdout.on('data', (c) => (out += c))
          child.stderr.on('data', (c) => (err += c))
          child.on('error', reject)
          child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`worker ${i}: ${err}`))))
        }),
    ),
  )
  const committed = runs.reduce((n, r) => n + r.committed, 0)
  const denied = runs.reduce((n, r) => n + r.denied, 0)
  assert.equal(committed + denied, 60, 'every attempt is accounted for')
  assert.equal(committed, 30, '150 points / 5 per call')
  assert.ok(runs.every((r) => r.other === 0), JSON.stringify(runs))

  const auth = Authority.openSync(path, { policy })
  const [b] = auth.balancesSync('tenant:t')
  assert.deepEqual([b.spent, b.reserved, b.remaining], [150, 0, 0])
  const records = auth.auditSync()
  assert.equal(records.filter((r) => r.kind === 'commit').length, committed)
  assert.equal(records.filter((r) => r.kind === 'denial').length, denied)
  assert.equal(auth.verifySync().ok, true)
})
