#!/usr/bin/env node
// The seed incident, replayed through the Node binding (the same story as
// examples/incident_replay.rs): a coding agent holding production credentials reads, writes a
// small file, then proposes deleting the production volume and its backups. Both destructive
// calls are denied before anything runs, with machine-readable reasons, and the audit trail
// (written before each answer returned) verifies.
//
//   node cycles-node/examples/incident-replay.mjs

import { createRequire } from 'node:module'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const require = createRequire(import.meta.url)
const { Authority } = require('../cycles.js')

export const POLICY = `
unknown_tool = { action = "deny" }

[[tools]]
name = "railway.list_services"
tier = 0

[[tools]]
name = "db.query"
tier = 0

[[tools]]
name = "fs.write_file"
tier = 1

[[tools]]
name = "railway.delete_volume"
tier = 4

[[tools]]
name = "railway.delete_backups"
tier = 4

[[budgets]]
scope = "tenant:pocketos"
unit = "RISK_POINTS"
allocated = 1000

[[budgets]]
scope = "tenant:pocketos/workflow:session-42"
unit = "RISK_POINTS"
allocated = 60

# The agent's session never runs anything above tier 3.
[[max_tier]]
scope = "tenant:pocketos/workflow:session-42"
max_tier = 3
`

export const PLAN = [
  ['railway.list_services', { project: 'prod' }],
  ['db.query', { query: 'SELECT count(*) FROM bookings' }],
  ['fs.write_file', { path: 'notes/staging-fix.md', bytes: 812 }],
  ['railway.delete_volume', { volumeId: 'vol_prod_main' }],
  ['railway.delete_backups', { volumeId: 'vol_prod_main', all: true }],
]

const SUBJECT = { tenant: 'pocketos', workflow: 'session-42', agent: 'coding-agent' }

/** Replays the plan against a SQLite ledger in `dir`; returns what happened. */
export async function replay(dir, print = () => {}) {
  const policyPath = join(dir, 'policy.toml')
  writeFileSync(policyPath, POLICY)
  const ledgerPath = join(dir, 'cycles.db')
  const auth = await Authority.open(ledgerPath, { policy: policyPath })
  const executed = []
  const outcomes = []
  // The "infrastructure client": it only runs what the gate allowed.
  const execute = (tool, args) => {
    print(`    -> executing ${tool} ${JSON.stringify(args)}`)
    executed.push(tool)
  }

  print(`== Decisions (ledger: ${ledgerPath})`)
  for (const [tool, args] of PLAN) {
    try {
      const r = await auth.reserve({ subject: SUBJECT, tool, args })
      print(`  ALLOW  ${tool.padEnd(24)} tier ${r.tier} (${r.decision.riskPoints} RISK_POINTS)`)
      execute(tool, args)
      await r.settle({ outcome: 'COMPLETED' })
      outcomes.push({ tool, decision: 'ALLOW', tier: r.tier })
    } catch (err) {
      if (!err.reasonCode) throw err
      print(`  DENY   ${tool.padEnd(24)} tier ${err.decision.tier} reason ${err.reasonCode} (${err.decision.message ?? ''})`)
      print('    -> not executed')
      outcomes.push({ tool, decision: 'DENY', tier: err.decision.tier, code: err.code, reasonCode: err.reasonCode })
    }
  }

  print('\n== Audit trail')
  const records = []
  for await (const r of auth.iterAudit()) {
    records.push(r)
    print(
      `  #${String(r.seq).padEnd(3)} ${r.kind.padEnd(10)} ${(r.action?.name ?? '-').padEnd(24)} ${(r.decision ?? '-').padEnd(6)} ${(r.reasonCode ?? '-').padEnd(20)} ${r.hash.slice(0, 16)}…`,
    )
  }

  print('\n== Balances')
  const balances = await auth.balances()
  for (const b of balances) {
    print(`  ${b.scope.padEnd(40)} ${b.unit} allocated ${b.allocated} spent ${b.spent} remaining ${b.remaining}`)
  }

  const report = await auth.verify()
  print(`\n== verify(): ${report.ok ? 'OK' : 'BROKEN'} (${report.records} records, head ${report.headHash.slice(0, 16)}…)`)
  return { outcomes, executed, records, balances, report }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const dir = mkdtempSync(join(tmpdir(), 'cycles-incident-'))
  try {
    const { outcomes, report } = await replay(dir, console.log)
    const denied = outcomes.filter((o) => o.decision === 'DENY').length
    if (!report.ok || denied !== 2) {
      console.error(`unexpected outcome: verify ok=${report.ok}, ${denied} denials`)
      process.exitCode = 1
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
