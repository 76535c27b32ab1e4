// Run by guard-generators.test.mjs: a guarded call returns a generator (sync or async), the
// consumer reads one item and keeps the iterator referenced (a global) while the process ends
// normally (`end`) or through `process.exit(0)` (`exit`). A second guarded call is exhausted
// before the end (settled COMPLETED: the 'exit' listener must not settle it again). The ledger
// is a SQLite file; the test opens it afterwards. Prints what it saw before exiting.
'use strict'
const { Authority, guard } = require('../cycles.js')

const [path, kind, how] = process.argv.slice(2)
const policy = { tools: [{ name: 'deploy', tier: 3 }], budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 100 }] }

;(async () => {
  const auth = Authority.openSync(path, { policy })
  function* syncLogs() { yield 'line 1'; yield 'line 2' }
  async function* asyncLogs() { yield 'line 1'; yield 'line 2' }
  const deploy = guard(async function deploy() {
    return kind === 'sync' ? syncLogs() : asyncLogs()
  }, { authority: auth, subject: { agent: 'bot' } })

  const done = await deploy()
  for await (const _ of done) {
    // exhausted: COMPLETED
  }
  globalThis.KEPT = await deploy()
  const first = await globalThis.KEPT.next()
  const b = auth.balancesSync('agent:bot')[0]
  process.stdout.write(JSON.stringify({ read: first.value, spent: b.spent, reserved: b.reserved }))
  if (how === 'exit') process.exit(0)
})()
