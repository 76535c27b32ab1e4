// Audit records carry the post-state of the budgets they change, and verify() reports where the
// ledger's state differs from them (stateMismatches). The edits themselves (rows changed in the
// file) are made by the core, CLI and Python tests, which have SQL access to the file; here the
// binding's translation of both is checked on a real SQLite file.
import test from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'

import { cycles, tempDir } from './support.mjs'

const POLICY = {
  tools: [{ name: 'write_file', tier: 1 }],
  budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 10 }],
}

test('records carry budgets after the operation and an intact ledger has no state mismatch', async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const auth = await cycles.Authority.open(join(tmp.dir, 'a.db'), { policy: POLICY })
  const r = await auth.reserve({ subject: { agent: 'bot' }, tool: 'write_file', args: { path: 'a' } })
  await r.commit()
  await auth.reserve({ subject: { agent: 'bot' }, tool: 'write_file', args: { path: 'b' } })
  const [reserve, commit, open] = await auth.audit({ kinds: ['reserve', 'commit'] })
  assert.equal(reserve.budgets[0].reserved, 1)
  assert.equal(commit.budgets.length, 1)
  const [after] = commit.budgets
  assert.deepEqual(
    [after.scope, after.unit, after.spent, after.reserved, after.remaining],
    ['agent:bot', 'RISK_POINTS', 1, 0, 9],
  )
  assert.equal(open.budgets[0].reserved, 1)
  const decided = await auth.decide({ subject: { agent: 'bot' }, tool: 'write_file', args: {} })
  assert.equal(decided.decision, 'ALLOW')
  const [decideRecord] = await auth.audit({ kinds: ['decide'] })
  assert.deepEqual(decideRecord.budgets, [], 'a decide changes no budget')
  const report = await auth.verify()
  assert.equal(report.ok, true)
  assert.deepEqual(report.stateMismatches, [])
  assert.deepEqual(auth.verifySync().stateMismatches, [])
})

test('reserve records carry the caps counters they advanced', async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const policy = {
    tools: [{ name: 'write_file', tier: 1 }],
    budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 100 }],
    caps: [{ id: 'low', scope: 'agent:bot', remaining_below: 1000, max_steps_remaining: 5 }],
  }
  const auth = await cycles.Authority.open(join(tmp.dir, 'caps.db'), { policy })
  for (const path of ['a', 'b']) {
    const r = await auth.reserve({ subject: { agent: 'bot' }, tool: 'write_file', args: { path } })
    assert.equal(r.decision.decision, 'ALLOW_WITH_CAPS')
    await r.commit()
  }
  const [first, second] = await auth.audit({ kinds: ['reserve'] })
  assert.deepEqual(
    [first.caps[0].steps, second.caps[0].steps, second.caps[0].allocated, second.caps[0].key],
    [1, 2, 100, 'low@agent:bot'],
  )
  assert.equal(typeof second.caps[0].cooldownUntilMs, 'number')
  const commits = await auth.audit({ kinds: ['commit'] })
  assert.deepEqual(commits.map((c) => c.caps), [[], []], 'only reservations count steps')
  assert.deepEqual((await auth.verify()).stateMismatches, [])
})
