// Run by guard-generators.test.mjs as `node --expose-gc`: a guarded call returns a generator,
// the consumer reads one item and drops it without return(); collection (forced with gc())
// must settle it. Prints the ledger state as JSON; waits for the condition, never for time.
'use strict'
const { Authority, guard } = require('../cycles.js')

const policy = { tools: [{ name: 'deploy', tier: 3 }], budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 100 }] }

async function readOneAndDrop(deploy) {
  const it = await deploy()
  const first = it.next()
  return (await first).value
}

async function run(kind) {
  const auth = Authority.inMemory({ policy })
  let ran = 0
  function* syncLogs() { yield 'line 1'; yield 'line 2' }
  async function* asyncLogs() { yield 'line 1'; yield 'line 2' }
  const deploy = guard(async function deploy() {
    ran++
    return kind === 'sync' ? syncLogs() : asyncLogs()
  }, { authority: auth, subject: { agent: 'bot' } })
  const read = await readOneAndDrop(deploy)
  const risk = () => auth.balancesSync('agent:bot')[0]
  const heldAfterRead = risk().reserved
  let rounds = 0
  while (risk().reserved !== 0 && rounds < 200) {
    global.gc()
    await new Promise((r) => setImmediate(r))
    rounds++
  }
  const b = risk()
  const settle = auth.auditSync({ kinds: ['commit', 'release'] }).map((r) => ({ kind: r.kind, reason: r.detail?.reason ?? null, outcome: r.detail?.outcome ?? null }))
  return { kind, ran, read, heldAfterRead, spent: b.spent, reserved: b.reserved, settle }
}

;(async () => {
  const out = []
  for (const kind of ['async', 'sync']) out.push(await run(kind))
  process.stdout.write(JSON.stringify(out))
})()
