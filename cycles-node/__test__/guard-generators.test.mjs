// Review 13 of the guard: a returned generator that the consumer never finishes is still
// charged (the call ran) when its wrapper is collected unsettled; one that outlives its
// reservation runs on and is charged when it ends. No timed assertions: the collection is
// forced (a child process run with --expose-gc) and the expiry is a manual clock's.
import test from 'node:test'
import assert from 'node:assert/strict'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { cycles, tempDir } from './support.mjs'

const { Authority, ManualClock } = cycles

const BOT = { agent: 'bot' }
const POLICY = {
  tools: [{ name: 'deploy', tier: 3 }],
  budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 100 }],
  defaults: { ttl_ms: 1000, grace_period_ms: 1000 },
}
const risk = (auth) => auth.balancesSync('agent:bot').find((b) => b.unit === 'RISK_POINTS')

test('guard: a returned generator dropped unfinished is settled INTERRUPTED (charged) when it is collected', () => {
  const child = fileURLToPath(new URL('./dropped-generator-child.cjs', import.meta.url))
  const out = JSON.parse(execFileSync(process.execPath, ['--expose-gc', child], { encoding: 'utf8' }))
  assert.equal(out.length, 2)
  for (const r of out) {
    assert.equal(r.ran, 1, r.kind)
    assert.equal(r.read, 'line 1', r.kind)
    assert.equal(r.heldAfterRead, 20, `${r.kind}: held while the consumer still holds it`)
    assert.equal(r.reserved, 0, `${r.kind}: settled once collected`)
    assert.equal(r.spent, 20, `${r.kind}: charged: the call ran (INTERRUPTED)`)
    assert.deepEqual(r.settle.map((s) => s.kind), ['commit'], r.kind)
  }
})

test('guard: a returned generator still referenced when the process exits is settled INTERRUPTED (charged) at exit, once', (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const child = fileURLToPath(new URL('./exit-generator-child.cjs', import.meta.url))
  const policy = { tools: [{ name: 'deploy', tier: 3 }], budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 100 }] }
  for (const kind of ['async', 'sync']) {
    for (const how of ['end', 'exit']) {
      const path = join(tmp.dir, `${kind}-${how}.db`)
      const seen = JSON.parse(execFileSync(process.execPath, [child, path, kind, how], { encoding: 'utf8' }))
      const label = `${kind}/${how}`
      assert.deepEqual(seen, { read: 'line 1', spent: 20, reserved: 20 }, `${label}: held while the process runs`)
      // The process has ended: a new authority reads what its 'exit' listener wrote.
      const auth = Authority.openSync(path, { policy })
      const b = risk(auth)
      assert.equal(b.reserved, 0, `${label}: nothing left held`)
      assert.equal(b.spent, 40, `${label}: both calls charged (the completed one and the one held at exit)`)
      const records = auth.auditSync()
      assert.deepEqual(records.map((r) => r.kind), ['budget_set', 'reserve', 'commit', 'reserve', 'commit'], label)
      // The exhausted call was committed before the second was reserved; the held one's commit
      // (what was held, INTERRUPTED) came at exit, and nothing was settled twice.
      assert.equal(records[2].reservationId, records[1].reservationId, label)
      assert.equal(records[4].reservationId, records[3].reservationId, label)
      assert.deepEqual(records[4].amounts, [{ unit: 'RISK_POINTS', amount: 20 }], `${label}: charged what was held`)
    }
  }
})

for (const kind of ['async', 'sync']) {
  test(`guard: a returned ${kind} generator that outlives its reservation runs on and is charged when it ends`, async () => {
    for (const past of [1500, 5000]) {
      // 1500: past the expiry, within grace; 5000: past grace and swept (the hold was given
      // back): the call that ran is still charged when it ends (an event, status EXPIRED).
      const clock = new ManualClock(1_000_000)
      const auth = Authority.inMemory({ policy: POLICY, clock })
      function* syncLogs() {
        yield 'line 1'
        yield 'line 2'
      }
      async function* asyncLogs() {
        yield* syncLogs()
      }
      const deploy = auth.guard(async function deploy() {
        return kind === 'sync' ? syncLogs() : asyncLogs()
      }, { subject: BOT })
      const it = await deploy()
      assert.equal((await it.next()).value, 'line 1')
      assert.equal(risk(auth).reserved, 20)
      clock.advance(past)
      if (past > 2000) {
        auth.sweepExpiredSync()
        assert.deepEqual([risk(auth).spent, risk(auth).reserved], [0, 0], 'swept: nothing charged yet')
      }
      assert.equal((await it.next()).value, 'line 2', `${past}: not cut off`)
      assert.equal((await it.next()).done, true)
      const b = risk(auth)
      assert.deepEqual([b.spent, b.reserved], [20, 0], `${past}: charged what was held when it ended`)
      const kinds = auth.auditSync().map((r) => r.kind)
      assert.equal(kinds.at(-1), past > 2000 ? 'event' : 'commit', kinds.join(','))
    }
  })
}
