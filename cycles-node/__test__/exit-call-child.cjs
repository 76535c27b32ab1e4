// Run by guard-outcomes.test.mjs: one guarded call completes (settled COMPLETED: the 'exit'
// listener must not settle it again), another acts and is still awaiting when the process ends
// through `process.exit(0)` (`exit`) or an uncaught exception elsewhere (`throw`). The ledger
// is a SQLite file; the test opens it afterwards. Prints what it saw before the end.
'use strict'
const { Authority, guard } = require('../cycles.js')

const [path, how] = process.argv.slice(2)
const policy = { tools: [{ name: 'deploy', tier: 3 }], budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 100 }] }

;(async () => {
  const auth = Authority.openSync(path, { policy })
  let acted
  const started = new Promise((resolve) => (acted = resolve))
  const deploy = guard(async function deploy(wait) {
    if (wait) {
      acted()
      await new Promise((resolve) => setTimeout(resolve, 600_000))
    }
    return 'deployed'
  }, { authority: auth, subject: { agent: 'bot' } })

  await deploy(false)
  deploy(true)
  await started
  const b = auth.balancesSync('agent:bot')[0]
  process.stdout.write(JSON.stringify({ spent: b.spent, reserved: b.reserved }))
  if (how === 'exit') process.exit(0)
  setTimeout(() => {
    throw new Error('an unrelated bug elsewhere')
  })
})()
