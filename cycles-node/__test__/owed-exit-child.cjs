// Run by owed.test.mjs: a guarded call whose settlement meets a ledger another process holds
// locked (the sqlite3 shell, started by the function itself); the process then exits with the
// settlement still owed. Prints what it saw before the end.
'use strict'
const { spawn } = require('node:child_process')
const { Authority } = require('../cycles.js')

const [path] = process.argv.slice(2)
const policy = { tools: [{ name: 'deploy', tier: 3 }], budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 100 }] }

;(async () => {
  const auth = Authority.openSync(path, { policy, busyTimeoutMs: 50 })
  const deploy = auth.guard(async function deploy() {
    // Killed with this process (its stdin ends): the lock is held until after the 'exit' hook.
    const sh = spawn('sqlite3', [path], { stdio: ['pipe', 'pipe', 'ignore'] })
    await new Promise((resolve) => {
      let out = ''
      sh.stdout.on('data', (c) => {
        out += c
        if (out.includes('locked')) resolve()
      })
      sh.stdin.write("BEGIN IMMEDIATE;\nSELECT 'locked';\n")
    })
    return 'deployed'
  }, { subject: { agent: 'bot' } })
  const result = await deploy()
  process.stdout.write(JSON.stringify({ result, owed: auth.owedSettlements().length }))
  process.exit(0)
})()
