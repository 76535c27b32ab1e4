// The seed incident through the Node binding: reads and a small write pass, the volume and
// backup deletions are denied before they run, the ledger file's audit chain verifies.
import test from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { replay } from '../examples/incident-replay.mjs'
import { cycles, tempDir } from './support.mjs'

const here = dirname(fileURLToPath(import.meta.url))

test('incident replay: destructive calls are denied before they run', async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const { outcomes, executed, records, balances, report } = await replay(tmp.dir)

  assert.deepEqual(
    outcomes.map((o) => [o.tool, o.decision]),
    [
      ['railway.list_services', 'ALLOW'],
      ['db.query', 'ALLOW'],
      ['fs.write_file', 'ALLOW'],
      ['railway.delete_volume', 'DENY'],
      ['railway.delete_backups', 'DENY'],
    ],
  )
  for (const o of outcomes.filter((x) => x.decision === 'DENY')) {
    assert.equal(o.tier, 4)
    assert.equal(o.reasonCode, 'TIER_NOT_PERMITTED')
    assert.equal(o.code, o.reasonCode, 'a denial error carries its reason code as its code')
  }
  assert.deepEqual(executed, ['railway.list_services', 'db.query', 'fs.write_file'])

  // Every denial was recorded, and nothing was ever reserved for the destructive tools.
  const denials = records.filter((r) => r.kind === 'denial').map((r) => [r.action.name, r.reasonCode])
  assert.deepEqual(denials, [
    ['railway.delete_volume', 'TIER_NOT_PERMITTED'],
    ['railway.delete_backups', 'TIER_NOT_PERMITTED'],
  ])
  assert.equal(records.filter((r) => r.kind === 'reserve' && r.action.name.includes('delete')).length, 0)
  assert.equal(records.filter((r) => r.kind === 'commit').length, 3)

  const session = balances.find((b) => b.scope === 'tenant:pocketos/workflow:session-42')
  assert.equal(session.spent, 1, 'only the tier-1 write cost risk points')
  assert.equal(session.reserved, 0)
  assert.equal(report.ok, true)
  assert.equal(report.records, records.length)

  // The file outlives the process: a second authority on it sees the same verified chain.
  const again = cycles.Authority.openSync(join(tmp.dir, 'cycles.db'))
  assert.deepEqual(again.verifySync(), report)
})

test('incident replay runs as a program and prints the story', () => {
  const run = spawnSync(process.execPath, [join(here, '../examples/incident-replay.mjs')], {
    encoding: 'utf8',
    timeout: 60_000,
  })
  assert.equal(run.status, 0, run.stderr)
  assert.match(run.stdout, /DENY {3}railway\.delete_volume {4}tier 4 reason TIER_NOT_PERMITTED/)
  assert.match(run.stdout, /verify\(\): OK/)
  assert.doesNotMatch(run.stdout, /executing railway\.delete/)
})
