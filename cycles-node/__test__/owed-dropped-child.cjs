// Run by owed.test.mjs (with --expose-gc): an authority opened per request (review 19 #3). The
// handler opens it, runs a guarded call whose settlement meets a ledger another process holds
// locked (the sqlite3 shell, started by the function itself), and returns; nothing references
// the authority any more and it is garbage-collected unless the binding keeps it. Then, in
// "release" mode, the lock is let go; the process exits with the settlement still owed.
'use strict'
const { spawn } = require('node:child_process')
const { Authority } = require('../cycles.js')

const [path, mode] = process.argv.slice(2)
const policy = { tools: [{ name: 'deploy', tier: 3 }], budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 100 }] }
let sh

async function handleRequest() {
  const auth = Authority.openSync(path, { policy, busyTimeoutMs: 50 })
  const deploy = auth.guard(async function deploy() {
    // Killed with this process (its stdin ends): in "held" mode the lock is held until after
    // the 'exit' hook.
    sh = spawn('sqlite3', [path], { stdio: ['pipe', 'pipe', 'ignore'] })
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
  const [owed] = auth.owedSettlements()
  return { result, id: owed.reservationId, ref: new WeakRef(auth) }
}

;(async () => {
  const { result, id, ref } = await handleRequest()
  for (let i = 0; i < 5; i++) {
    global.gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
  const alive = ref.deref() !== undefined
  if (mode === 'release') {
    const exited = new Promise((resolve) => sh.on('exit', resolve))
    sh.stdin.end('ROLLBACK;\n.quit\n')
    await exited
  }
  process.stdout.write(JSON.stringify({ result, id, alive }))
  process.exit(0)
})()
