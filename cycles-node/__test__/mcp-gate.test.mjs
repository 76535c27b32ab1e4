// End to end through real processes and the real MCP SDK:
//   SDK Client --stdio--> cycles-mcp-gate --stdio--> upstream McpServer (records every call)
// A destructive tool is denied and never reaches the upstream; a read passes; a failing tool
// is released; the ledger file shows it all and its chain verifies.
import test from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { spawn, spawnSync } from 'node:child_process'
import { generateKeyPairSync } from 'node:crypto'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'

import { cycles, tempDir } from './support.mjs'

const here = dirname(fileURLToPath(import.meta.url))
const GATE = join(here, '../mcp-gate/gate.mjs')
const ROOT = join(here, '../..')
const UPSTREAM = join(here, 'upstream-server.mjs')

const POLICY = `
unknown_tool = { action = "deny" }

[[tools]]
name = "railway.read_file"
tier = 0

[[tools]]
name = "railway.write_note"
tier = 1

[[tools]]
name = "railway.flaky"
tier = 1

[[tools]]
name = "railway.delete_volume"
tier = 4

[[budgets]]
scope = "tenant:acme/agent:claude"
unit = "RISK_POINTS"
allocated = 40
`

function calls(file) {
  if (!existsSync(file)) return []
  return readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l))
}

const text = (result) => result.content.map((c) => c.text).join('\n')

test('the MCP gate lets reads through and stops a destructive call before the upstream', async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const policy = join(tmp.dir, 'policy.toml')
  const ledger = join(tmp.dir, 'cycles.db')
  const callsFile = join(tmp.dir, 'calls.jsonl')
  writeFileSync(policy, POLICY)

  const client = new Client({ name: 'e2e-client', version: '1.0.0' })
  const transport = new StdioClientTransport({
      command: process.execPath,
      args: [
        GATE,
        '--policy', policy,
        '--ledger', ledger,
        '--subject', 'tenant=acme,agent=claude',
        '--tool-prefix', 'railway.',
        '--',
        process.execPath, UPSTREAM, callsFile,
      ],
      stderr: 'pipe',
  })
  let gateLog = ''
  transport.stderr.on('data', (chunk) => (gateLog += chunk))
  await client.connect(transport)
  t.after(() => client.close())

  const { tools } = await client.listTools()
  // Tools whose names the gate would refuse to call (empty, odd characters) are not listed.
  assert.deepEqual(
    tools.map((x) => x.name).sort(),
    ['add_tools', 'crash', 'delete_volume', 'flaky', 'measure', 'needs_consent', 'progress', 'read_file', 'slow', 'write_note'],
  )
  assert.equal(tools.find((x) => x.name === 'delete_volume').description, 'Deletes a volume and everything on it')

  const read = await client.callTool({ name: 'read_file', arguments: { path: 'notes.txt' } })
  assert.ok(!read.isError, text(read))
  assert.equal(text(read), 'contents of notes.txt')

  const write = await client.callTool({ name: 'write_note', arguments: { text: 'hello' } })
  assert.ok(!write.isError, text(write))

  const wipe = await client.callTool({ name: 'delete_volume', arguments: { volume_id: 'vol-prod-1' } })
  assert.equal(wipe.isError, true)
  assert.match(text(wipe), /BUDGET_EXCEEDED/, gateLog)
  assert.match(text(wipe), /not executed/)
  assert.equal(wipe._meta['cycles/decision'].reasonCode, 'BUDGET_EXCEEDED')
  assert.equal(wipe._meta['cycles/decision'].decision.tier, 4)

  const flaky = await client.callTool({ name: 'flaky', arguments: {} })
  assert.equal(flaky.isError, true, 'the upstream tool error comes through')
  assert.match(text(flaky), /flaky failed on purpose/)

  // A tool the upstream does not have is refused by the gate before the authority sees it.
  const unknown = await client.callTool({ name: 'not_listed', arguments: {} })
  assert.equal(unknown.isError, true)
  assert.equal(unknown._meta['cycles/decision'].code, 'UNKNOWN_TOOL')

  // What reached the upstream: the read, the write and the flaky call; never the deletion.
  const seen = calls(callsFile).filter((c) => c.event === 'call')
  assert.deepEqual(
    seen.map((c) => c.tool),
    ['read_file', 'write_note', 'flaky'],
  )
  assert.deepEqual(seen[0].args, { path: 'notes.txt' })

  await client.close()

  // The ledger file tells the same story, and its chain verifies.
  const auth = await cycles.Authority.open(ledger)
  const [balance] = await auth.balances('tenant:acme/agent:claude')
  assert.equal(balance.spent, 1, 'only the write (tier 1) was charged; the flaky call was released')
  assert.equal(balance.reserved, 0, 'nothing is left held')
  const records = await auth.audit()
  const byTool = (kind, tool) => records.filter((r) => r.kind === kind && r.action?.name === tool)
  assert.equal(byTool('denial', 'railway.delete_volume').length, 1)
  assert.equal(byTool('denial', 'railway.delete_volume')[0].reasonCode, 'BUDGET_EXCEEDED')
  assert.equal(records.filter((r) => r.action?.name === 'railway.not_listed').length, 0, 'never reached the authority')
  assert.equal(records.filter((r) => r.kind === 'commit').length, 2, 'read and write committed')
  assert.equal(records.filter((r) => r.kind === 'release').length, 1, 'flaky released')
  assert.equal(byTool('reserve', 'railway.delete_volume').length, 0)
  assert.equal((await auth.verify()).ok, true)
})

/** The `cycles` CLI binary (built here if needed): the operator's side of an approval. */
function cyclesCli() {
  const build = spawnSync('cargo', ['build', '-q', '-p', 'cycles-cli'], { cwd: ROOT, encoding: 'utf8' })
  assert.equal(build.status, 0, build.stderr)
  return join(process.env.CARGO_TARGET_DIR ?? join(ROOT, 'target'), 'debug', 'cycles')
}

test('a call approved out of band with `cycles approve` passes the MCP gate once', async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const cli = cyclesCli()
  const run = (...args) => {
    const r = spawnSync(cli, args, { encoding: 'utf8', timeout: 60_000 })
    assert.equal(r.status, 0, `${args.join(' ')}: ${r.stderr}`)
    return r.stdout
  }
  const keyFile = join(tmp.dir, 'alice.key')
  const { public_key: publicKey } = JSON.parse(run('keygen', '--id', 'alice', '--out', keyFile, '--json'))
  const policy = join(tmp.dir, 'policy.toml')
  const ledger = join(tmp.dir, 'cycles.db')
  const callsFile = join(tmp.dir, 'calls.jsonl')
  writeFileSync(
    policy,
    POLICY.replace('allocated = 40', 'allocated = 1000') + `\n[approval]\npublic_keys = ["${publicKey}"]\n`,
  )

  const client = new Client({ name: 'e2e-client', version: '1.0.0' })
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [GATE, '--policy', policy, '--ledger', ledger, '--subject', 'tenant=acme,agent=claude',
      '--tool-prefix', 'railway.', '--', process.execPath, UPSTREAM, callsFile],
    stderr: 'pipe',
  })
  await client.connect(transport)
  t.after(() => client.close())
  const wipe = () => client.callTool({ name: 'delete_volume', arguments: { volume_id: 'vol-prod-1' } })
  const deletions = () => calls(callsFile).filter((c) => c.event === 'call' && c.tool === 'delete_volume')

  const asked = await wipe()
  assert.equal(asked.isError, true)
  const meta = asked._meta['cycles/decision']
  assert.equal(meta.reasonCode, 'APPROVAL_REQUIRED')
  assert.match(text(asked), /retry this exact call once it is approved/)
  const id = meta.decision.approvalRequestId
  assert.match(id, /^apr_[0-9a-f]{32}$/)
  assert.equal(deletions().length, 0)

  // The operator approves from outside the agent's process, into the shared ledger.
  run('--ledger', ledger, '--policy', policy, 'approve', id, '--key', keyFile, '--ttl', '10m')

  const approved = await wipe()
  assert.ok(!approved.isError, text(approved))
  assert.equal(text(approved), 'volume vol-prod-1 deleted')
  assert.equal(deletions().length, 1)

  // Single use: the same call again needs a new approval and does not run.
  const again = await wipe()
  assert.equal(again._meta['cycles/decision'].reasonCode, 'APPROVAL_REQUIRED')
  assert.notEqual(again._meta['cycles/decision'].decision.approvalRequestId, id)
  assert.equal(deletions().length, 1)
  await client.close()

  const auth = await cycles.Authority.open(ledger)
  const kinds = (await auth.audit()).map((r) => r.kind)
  assert.ok(kinds.includes('approval_granted') && kinds.includes('approval_consumed'), kinds.join(' '))
  assert.equal((await auth.verify()).ok, true)
})

test('without --ledger the gate warns at start-up, and an approval request does not tell the model to wait and retry', { timeout: 120_000 }, async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  // Any approver key will do: nothing can reach the in-memory ledger to use it.
  const jwk = generateKeyPairSync('ed25519').publicKey.export({ format: 'jwk' })
  const publicKey = Buffer.from(jwk.x, 'base64url').toString('hex')
  const policy = join(tmp.dir, 'policy.toml')
  const callsFile = join(tmp.dir, 'calls.jsonl')
  writeFileSync(
    policy,
    POLICY.replace('allocated = 40', 'allocated = 1000') + `\n[approval]\npublic_keys = ["${publicKey}"]\n`,
  )
  const client = new Client({ name: 'e2e-client', version: '1.0.0' })
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [GATE, '--policy', policy, '--subject', 'tenant=acme,agent=claude',
      '--tool-prefix', 'railway.', '--', process.execPath, UPSTREAM, callsFile],
    stderr: 'pipe',
  })
  let gateLog = ''
  transport.stderr.on('data', (chunk) => (gateLog += chunk))
  await client.connect(transport)
  t.after(() => client.close())

  const asked = await client.callTool({ name: 'delete_volume', arguments: { volume_id: 'vol-prod-1' } })
  assert.equal(asked.isError, true)
  assert.equal(asked._meta['cycles/decision'].reasonCode, 'APPROVAL_REQUIRED')
  assert.match(asked._meta['cycles/decision'].decision.approvalRequestId, /^apr_[0-9a-f]{32}$/)
  assert.doesNotMatch(text(asked), /retry this exact call once it is approved|awaits an approver/)
  assert.match(text(asked), /ledger is in memory, so no approver can reach it/)
  assert.match(text(asked), /Do not wait for an approval or retry this call/)
  assert.match(text(asked), /--ledger/)
  assert.equal(calls(callsFile).filter((c) => c.event === 'call').length, 0)

  // The warning is logged once, at start-up (stderr may arrive after the answer on stdout).
  await until(() => /WARNING/.test(gateLog), 'the in-memory warning')
  assert.match(gateLog, /\(memory\)/)
  assert.match(gateLog, /WARNING: no --ledger: the ledger is in memory/)
  assert.match(gateLog, /Budgets and the audit trail start afresh every time the gate starts/)
  assert.match(gateLog, /approvals cannot be granted from outside/)
  assert.equal(gateLog.split('WARNING').length - 1, 1)
})

test('the MCP gate refuses to start on a bad policy and never starts the upstream', (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const policy = join(tmp.dir, 'policy.toml')
  const callsFile = join(tmp.dir, 'calls.jsonl')
  writeFileSync(policy, POLICY.replace('tier = 4', 'tier = 9'))
  const run = spawnSync(
    process.execPath,
    [GATE, '--policy', policy, '--subject', 'agent=claude', '--', process.execPath, UPSTREAM, callsFile],
    { input: '', encoding: 'utf8', timeout: 60_000 },
  )
  assert.equal(run.status, 1, run.stderr)
  assert.match(run.stderr, /refusing to start: POLICY_INVALID/)
  assert.match(run.stderr, /tools\[3\]\.tier/)
  assert.equal(existsSync(callsFile), false, 'the upstream was never started')
})

test('the MCP gate rejects a command line without an upstream', () => {
  const run = spawnSync(process.execPath, [GATE, '--policy', 'p.toml', '--subject', 'agent=a'], {
    input: '',
    encoding: 'utf8',
    timeout: 60_000,
  })
  assert.equal(run.status, 2)
  assert.match(run.stderr, /upstream command is missing/)
})

test('the MCP gate exits cleanly when the upstream cannot be started', () => {
  const tmp = tempDir()
  try {
    const policy = join(tmp.dir, 'policy.toml')
    writeFileSync(policy, POLICY)
    const run = spawnSync(
      process.execPath,
      [GATE, '--policy', policy, '--subject', 'agent=claude', '--', join(tmp.dir, 'no-such-server')],
      { input: '', encoding: 'utf8', timeout: 60_000 },
    )
    assert.equal(run.status, 1, run.stderr)
    assert.match(run.stderr, /cannot reach the upstream server/)
    const bad = spawnSync(process.execPath, [GATE, '--policy', policy, '--subject', 'agent=a', '--ttl-ms', 'soon', '--', 'x'], {
      input: '',
      encoding: 'utf8',
      timeout: 60_000,
    })
    assert.equal(bad.status, 2)
    assert.match(bad.stderr, /--ttl-ms takes milliseconds/)
  } finally {
    tmp.cleanup()
  }
})

// ---------------------------------------------------------------------------------------------
// Hardening: concurrency, cancellation, a locked ledger, odd names, list changes, huge inputs.

const HARD_POLICY = `
unknown_tool = { action = "deny" }

[[tools]]
name = "railway.read_file"
tier = 0

[[tools]]
name = "railway.slow"
tier = 1

[[tools]]
name = "railway.measure"
tier = 1

[[tools]]
name = "railway.add_tools"
tier = 0

[[tools]]
name = "railway.late_read"
tier = 0

[[tools]]
name = "railway.progress"
tier = 0

[[tools]]
name = "railway.crash"
tier = 1

[[budgets]]
scope = "tenant:acme/agent:claude"
unit = "RISK_POINTS"
allocated = 1000
`
const SCOPE = 'tenant:acme/agent:claude'

/** Resolves once `check()` is truthy, looking again every 20 ms (the test's timeout bounds it). */
async function until(check, _what) {
  for (;;) {
    const v = await check()
    if (v) return v
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
}

/** Whether the process `pid` has ended. */
function gone(pid) {
  try {
    process.kill(pid, 0)
    return false
  } catch {
    return true
  }
}

/** A gate over the test upstream, driven by a real SDK client; its stderr is collected. */
async function startGate(t, { policy = HARD_POLICY, extra = [], upstream = UPSTREAM } = {}) {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const policyFile = join(tmp.dir, 'policy.toml')
  const ledger = join(tmp.dir, 'cycles.db')
  const callsFile = join(tmp.dir, 'calls.jsonl')
  writeFileSync(policyFile, policy)
  const client = new Client({ name: 'e2e-client', version: '1.0.0' })
  const transport = new StdioClientTransport({
    command: process.execPath,
    args: [GATE, '--policy', policyFile, '--ledger', ledger, '--subject', 'tenant=acme,agent=claude',
      '--tool-prefix', 'railway.', ...extra, '--', process.execPath, upstream, callsFile],
    stderr: 'pipe',
  })
  const g = { tmp, ledger, callsFile, client, log: '' }
  transport.stderr.on('data', (chunk) => (g.log += chunk))
  await client.connect(transport)
  g.pid = transport.pid
  t.after(() => client.close())
  g.calls = (event = 'call') => calls(callsFile).filter((c) => c.event === event)
  g.release = () => writeFileSync(join(tmp.dir, 'go'), '')
  g.gateFile = join(tmp.dir, 'go')
  g.balance = async () => {
    const auth = await cycles.Authority.open(ledger)
    return (await auth.balances(SCOPE))[0]
  }
  return g
}

test('with --ledger the gate logs no in-memory warning', { timeout: 120_000 }, async (t) => {
  const g = await startGate(t)
  await g.client.listTools()
  await until(() => /gating /.test(g.log), 'the start-up log')
  assert.doesNotMatch(g.log, /WARNING/)
})

test('parallel calls on a small budget: exactly as many run as it allows, nothing stays held', { timeout: 120_000 }, async (t) => {
  const g = await startGate(t, { policy: HARD_POLICY.replace('allocated = 1000', 'allocated = 3') })
  const results = Array.from({ length: 8 }, (_, i) =>
    g.client.callTool({ name: 'slow', arguments: { id: `p${i}`, gate: g.gateFile } }),
  )
  // Three calls hold the whole budget while they run; the five others come back refused.
  await until(() => g.calls().length === 3, 'three calls at the upstream')
  g.release()
  const done = await Promise.all(results)
  const ok = done.filter((r) => !r.isError)
  const refused = done.filter((r) => r.isError)
  assert.equal(ok.length, 3, done.map(text).join('\n'))
  assert.equal(refused.length, 5)
  for (const r of refused) assert.equal(r._meta['cycles/decision'].reasonCode, 'BUDGET_EXCEEDED', text(r))
  assert.equal(g.calls().length, 3, 'refused calls never reached the upstream')
  assert.deepEqual(
    g.calls().map((c) => c.args.id).sort(),
    ok.map((r) => text(r).split(' ')[1]).sort(),
    'the calls that ran are the ones the client saw succeed',
  )
  const b = await g.balance()
  assert.equal(b.spent, 3)
  assert.equal(b.reserved, 0, 'nothing is left held')
})

test('a call the client cancels mid-flight is aborted upstream and settled INTERRUPTED (charged), not left held', { timeout: 120_000 }, async (t) => {
  const g = await startGate(t)
  const ac = new AbortController()
  const call = g.client.callTool({ name: 'slow', arguments: { id: 'c1', gate: g.gateFile } }, undefined, { signal: ac.signal })
  await until(() => g.calls().length === 1, 'the call at the upstream')
  assert.equal((await g.balance()).reserved, 1, 'held while the upstream works')
  ac.abort('user pressed stop')
  await assert.rejects(call)
  // The upstream got the cancellation and stopped; the gate charged the call, since the
  // upstream had started and may have acted.
  await until(() => g.calls('aborted').length === 1, 'the upstream to see the cancellation')
  await until(() => /cancelled railway\.slow: settled INTERRUPTED/.test(g.log), 'the gate to finalize')
  const b = await g.balance()
  assert.equal(b.reserved, 0, 'nothing held until the TTL')
  assert.equal(b.spent, 1, 'charged: the upstream may have acted')
  const auth = await cycles.Authority.open(g.ledger)
  assert.deepEqual((await auth.audit()).map((r) => r.kind).filter((k) => k !== 'budget_set'), ['reserve', 'commit'])
  assert.equal(g.calls('finished').length, 0)
  // The gate keeps serving.
  const read = await g.client.callTool({ name: 'read_file', arguments: { path: 'a' } })
  assert.ok(!read.isError, text(read))
})

/** Another process (the sqlite3 shell) holds the ledger's write lock until `unlock()`. */
async function lockLedger(path) {
  const sh = spawn('sqlite3', [path], { stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  sh.stdout.on('data', (c) => (out += c))
  sh.stdin.write("BEGIN IMMEDIATE;\nSELECT 'locked';\n")
  await until(() => out.includes('locked'), 'the sqlite3 shell to take the lock')
  return async () => {
    sh.stdin.end('ROLLBACK;\n.quit\n')
    await new Promise((resolve) => sh.on('exit', resolve))
  }
}

test('a ledger locked by another process: the running call still answers, new calls are refused', { timeout: 120_000 }, async (t) => {
  const g = await startGate(t, { extra: ['--busy-timeout-ms', '200'] })
  const running = g.client.callTool({ name: 'slow', arguments: { id: 'l1', gate: g.gateFile } })
  await until(() => g.calls().length === 1, 'the call at the upstream')
  const unlock = await lockLedger(g.ledger)
  try {
    const read = await g.client.callTool({ name: 'read_file', arguments: { path: 'secret' } })
    assert.equal(read.isError, true, text(read))
    assert.equal(read._meta['cycles/decision'].code, 'LEDGER_UNAVAILABLE', text(read))
    assert.equal(g.calls().length, 1, 'the refused call never reached the upstream')
    // The upstream finishes while the ledger cannot be written: its result still arrives.
    g.release()
    const result = await running
    assert.ok(!result.isError, text(result))
    assert.equal(text(result), 'slow l1 done')
    assert.match(g.log, /finalizing \S+ \(railway\.slow\) failed: LEDGER_UNAVAILABLE/)
  } finally {
    await unlock()
  }
  // Once the lock is gone the gate works again, and the commit it owed goes through first.
  const read = await g.client.callTool({ name: 'read_file', arguments: { path: 'a' } })
  assert.ok(!read.isError, text(read))
  assert.deepEqual(g.calls().map((c) => c.tool), ['slow', 'read_file'])
  const b = await g.balance()
  assert.equal(b.reserved, 0, 'the owed commit was retried, nothing stays held')
  assert.equal(b.spent, 1)
  const auth = await cycles.Authority.open(g.ledger)
  assert.equal((await auth.verify()).ok, true)
})

test('a settlement the ledger refused is retried when the gate shuts down: the call that ran is charged, not left to expire', { timeout: 120_000 }, async (t) => {
  // No later call retries it: the client goes away right after the ledger comes back.
  const g = await startGate(t, { extra: ['--busy-timeout-ms', '200'] })
  const running = g.client.callTool({ name: 'slow', arguments: { id: 'o1', gate: g.gateFile } })
  await until(() => g.calls().length === 1, 'the call at the upstream')
  const unlock = await lockLedger(g.ledger)
  try {
    g.release()
    const result = await running
    assert.ok(!result.isError, text(result))
    assert.match(g.log, /finalizing \S+ \(railway\.slow\) failed: LEDGER_UNAVAILABLE/)
  } finally {
    await unlock()
  }
  // The client disconnects (ends the gate's stdin; SIGTERM if it lingers), and the gate exits.
  await g.client.close()
  await until(() => gone(g.pid), 'the gate to exit')
  assert.match(g.log, /finalized \S+ \(railway\.slow\) late: COMPLETED/)
  assert.doesNotMatch(g.log, /NOT SETTLED/)
  const b = await g.balance()
  assert.equal(b.reserved, 0, 'nothing left held')
  assert.equal(b.spent, 1, 'the call that ran is charged')
  const auth = await cycles.Authority.open(g.ledger)
  assert.deepEqual((await auth.audit()).map((r) => r.kind).filter((k) => k !== 'budget_set'), ['reserve', 'commit'])
})

test('a settlement still refused at shutdown is logged with its reservation, for an operator to settle', { timeout: 120_000 }, async (t) => {
  const g = await startGate(t, { extra: ['--busy-timeout-ms', '200'] })
  const running = g.client.callTool({ name: 'slow', arguments: { id: 'o2', gate: g.gateFile } })
  await until(() => g.calls().length === 1, 'the call at the upstream')
  const unlock = await lockLedger(g.ledger)
  try {
    g.release()
    assert.ok(!(await running).isError)
    await g.client.close()
    await until(() => gone(g.pid), 'the gate to exit')
    assert.match(g.log, /NOT SETTLED: reservation \S+ \(railway\.slow\) COMPLETED/)
    // The core kept it owed (settleOrOwe) and says why the ledger last refused it.
    assert.match(g.log, /finalizing \S+ \(railway\.slow\) failed: LEDGER_UNAVAILABLE \(owed: /)
    assert.match(g.log, /NOT SETTLED: .*: the ledger refused it \([^)]*(locked|busy)/i)
  } finally {
    await unlock()
  }
  const b = await g.balance()
  assert.equal(b.reserved, 1, 'still held (until its TTL): the ledger refused every try')
  assert.equal(b.spent, 0)
})

test('an upstream that dies mid-call while the ledger stays locked: the gate waits for that settlement and logs it NOT SETTLED before it exits', { timeout: 120_000 }, async (t) => {
  const g = await startGate(t, { extra: ['--busy-timeout-ms', '200'] })
  const call = g.client.callTool({ name: 'crash', arguments: { gate: g.gateFile } }).catch((e) => e)
  await until(() => g.calls().length === 1, 'the call at the upstream')
  const unlock = await lockLedger(g.ledger)
  try {
    g.release() // the upstream dies; the gate's settlement of the cut-off call meets the lock
    await until(() => gone(g.pid), 'the gate to exit')
    await call
    assert.match(g.log, /NOT SETTLED: reservation \S+ \(railway\.crash\) INTERRUPTED/)
  } finally {
    await unlock()
  }
  const b = await g.balance()
  assert.equal(b.reserved, 1, 'held until its TTL: every try met the lock (what the log reports)')
  assert.equal(b.spent, 0)
})

test('an unknown tool is refused before anything is reserved, even under on_failure CHARGE; arguments are left to the upstream\'s own validation', { timeout: 120_000 }, async (t) => {
  // unknown_tool rated (not denied) and failures charged: before the fix, an unknown tool was
  // reserved, forwarded, answered isError by the SDK upstream, settled FAILED and charged.
  const policy = `${HARD_POLICY.replace('unknown_tool = { action = "deny" }', 'unknown_tool = { action = "tier", tier = 1 }')}\n[defaults]\non_failure = "CHARGE"\n`
  const g = await startGate(t, { policy })
  const unknown = await g.client.callTool({ name: 'no_such_tool', arguments: {} })
  assert.equal(unknown.isError, true, text(unknown))
  assert.equal(unknown._meta['cycles/decision'].code, 'UNKNOWN_TOOL', text(unknown))
  assert.equal(g.calls().length, 0, 'it never reached the upstream')
  let b = await g.balance()
  assert.equal(b.spent, 0, 'nothing charged')
  assert.equal(b.reserved, 0)
  const auth = await cycles.Authority.open(g.ledger)
  const kinds = async () => (await auth.audit()).map((r) => r.kind).filter((k) => k !== 'budget_set')
  assert.deepEqual(await kinds(), [], 'nothing reserved')
  // A stray key: the upstream's listed schema says additionalProperties false, but its own (zod)
  // validation strips the key and runs the tool. The gate used to refuse it (INVALID_ARGUMENTS).
  const stray = await g.client.callTool({ name: 'measure', arguments: { text: 'abc', extra: 1 } })
  assert.ok(!stray.isError, text(stray))
  assert.deepEqual(g.calls().map((c) => c.tool), ['measure'])
  assert.deepEqual(await kinds(), ['reserve', 'commit'])
  const one = (await g.balance()).spent
  assert.ok(one > 0, 'a tier 1 tool costs something')
  // Arguments the upstream refuses: answered isError, which the gate cannot tell from a tool
  // failure, so FAILED and charged under CHARGE (documented); the tool itself never ran.
  const bad = await g.client.callTool({ name: 'measure', arguments: { text: 42 } })
  assert.equal(bad.isError, true, text(bad))
  assert.equal(bad._meta?.['cycles/decision'], undefined, 'not a gate refusal')
  assert.match(text(bad), /text/)
  assert.equal(g.calls().length, 1, 'the upstream refused it before its handler ran')
  assert.deepEqual(await kinds(), ['reserve', 'commit', 'reserve', 'commit'])
  b = await g.balance()
  assert.ok(b.spent > one, 'charged under on_failure CHARGE')
  assert.equal(b.reserved, 0)
  // A tool the upstream adds later is found (listed again on a miss).
  assert.ok(!(await g.client.callTool({ name: 'add_tools', arguments: {} })).isError)
  const late = await g.client.callTool({ name: 'late_read', arguments: {} })
  assert.ok(!late.isError, text(late))
  assert.deepEqual(g.calls().map((c) => c.tool), ['measure', 'add_tools', 'late_read'])
  assert.equal((await g.balance()).reserved, 0)
})

test('--request-timeout-ms bounds a forwarded call (not the SDK\'s 60 s): it is cancelled upstream and INTERRUPTED (charged)', { timeout: 120_000 }, async (t) => {
  // The upstream's slow tool runs until released (never, here): a tiny timeout shows the option
  // is what the gate passes for the upstream request.
  const g = await startGate(t, { extra: ['--request-timeout-ms', '50'] })
  const r = await g.client.callTool({ name: 'slow', arguments: { id: 't1', gate: g.gateFile } }, undefined, { timeout: 600_000 })
  assert.equal(r.isError, true, text(r))
  assert.match(text(r), /timed out/)
  assert.match(text(r), /may have acted/, 'not presented as a failure to retry blindly')
  await until(() => g.calls('aborted').length === 1, 'the upstream to see the cancellation')
  const b = await g.balance()
  assert.equal(b.reserved, 0)
  assert.equal(b.spent, 1, 'INTERRUPTED: charged what was held')
  assert.match(g.log, /timed out railway\.slow: settled INTERRUPTED/)
})

test('the upstream\'s progress notifications reach the client under its own progress token', { timeout: 120_000 }, async (t) => {
  const g = await startGate(t)
  const seen = []
  // Each report lets the upstream go on (writes the file it waits for): none can be lost to
  // the SDK's handling of a response that arrives together with them.
  const onprogress = (p) => {
    seen.push(p)
    writeFileSync(`${g.gateFile}${p.progress}`, '')
  }
  const r = await g.client.callTool({ name: 'progress', arguments: { gate: g.gateFile } }, undefined, { onprogress })
  assert.ok(!r.isError, text(r))
  assert.deepEqual(seen.map((p) => [p.progress, p.total, p.message]), [[1, 3, 'step 1'], [2, 3, 'step 2'], [3, 3, 'step 3']])
  // A client that asked for no progress gets none (and the call still completes).
  const quiet = await g.client.callTool({ name: 'progress', arguments: { gate: g.gateFile } })
  assert.ok(!quiet.isError, text(quiet))
  assert.equal(seen.length, 3)
})

test('--request-timeout-ms takes positive milliseconds a timer can hold', () => {
  for (const bad of ['0', 'soon', String(2 ** 31)]) {
    const run = spawnSync(process.execPath, [GATE, '--policy', 'p.toml', '--subject', 'agent=a', '--request-timeout-ms', bad, '--', 'x'], { input: '', encoding: 'utf8', timeout: 60_000 })
    assert.equal(run.status, 2, bad)
    assert.match(run.stderr, /--request-timeout-ms takes milliseconds/, bad)
  }
})

test('empty and odd tool names are refused before the ledger, whatever a glob would rate them', { timeout: 120_000 }, async (t) => {
  // "railway.*" would rate the empty name (railway.) and "wipe all*" at tier 0.
  const g = await startGate(t, {
    policy: HARD_POLICY + '\n[[tools]]\nname = "railway.*"\ntier = 0\n',
  })
  for (const name of ['', 'wipe all*', 'wipe\u0000volume', 'read_file\n', 'é']) {
    const r = await g.client.callTool({ name, arguments: {} })
    assert.equal(r.isError, true, `${JSON.stringify(name)}: ${text(r)}`)
    assert.equal(r._meta['cycles/decision'].code, 'INVALID_TOOL_NAME', text(r))
    assert.match(text(r), /not executed/)
  }
  assert.deepEqual(g.calls(), [], 'none reached the upstream')
  const auth = await cycles.Authority.open(g.ledger)
  assert.equal((await auth.audit()).filter((r) => r.kind === 'reserve').length, 0, 'nothing was reserved')
  // Names in the allowed alphabet still pass.
  const read = await g.client.callTool({ name: 'read_file', arguments: { path: 'a' } })
  assert.ok(!read.isError, text(read))
})

test('tools the upstream adds later are listed after list_changed and still gated', { timeout: 120_000 }, async (t) => {
  const g = await startGate(t)
  let changed = 0
  const { ToolListChangedNotificationSchema } = await import('@modelcontextprotocol/sdk/types.js')
  g.client.setNotificationHandler(ToolListChangedNotificationSchema, () => changed++)
  const before = (await g.client.listTools()).tools.map((x) => x.name)
  assert.ok(!before.includes('late_read'))
  const add = await g.client.callTool({ name: 'add_tools', arguments: {} })
  assert.ok(!add.isError, text(add))
  await until(() => changed > 0, 'tools/list_changed through the gate')
  const after = (await g.client.listTools()).tools.map((x) => x.name)
  assert.ok(after.includes('late_read') && after.includes('late_wipe'), after.join(' '))
  const read = await g.client.callTool({ name: 'late_read', arguments: {} })
  assert.ok(!read.isError, text(read))
  const wipe = await g.client.callTool({ name: 'late_wipe', arguments: {} })
  assert.equal(wipe._meta['cycles/decision'].reasonCode, 'TOOL_UNKNOWN')
  assert.deepEqual(g.calls().map((c) => c.tool), ['add_tools', 'late_read'])
  const auth = await cycles.Authority.open(g.ledger)
  const reserved = (await auth.audit()).filter((r) => r.kind === 'reserve').map((r) => r.action?.name)
  assert.deepEqual(reserved, ['railway.add_tools', 'railway.late_read'], 'every forwarded call was reserved')
})

test('5 MB of arguments are classified before they are forwarded, and the gate keeps serving', { timeout: 120_000 }, async (t) => {
  const g = await startGate(t)
  const big = 'x'.repeat(5 * 1024 * 1024)
  const r = await g.client.callTool({ name: 'measure', arguments: { text: big } })
  const auth = await cycles.Authority.open(g.ledger)
  const reserves = (await auth.audit()).filter((x) => x.kind === 'reserve' && x.action?.name === 'railway.measure')
  // The core classifies 5 MB within its limits, so the call is reserved, then forwarded whole.
  assert.ok(!r.isError, text(r).slice(0, 500))
  assert.equal(text(r), `measured ${big.length}`)
  assert.deepEqual(g.calls().map((c) => c.args.length), [big.length])
  assert.equal(reserves.length, 1, 'what reached the upstream was reserved first')
  const read = await g.client.callTool({ name: 'read_file', arguments: { path: 'a' } })
  assert.ok(!read.isError, text(read))
})

/** Speaks JSON-RPC lines to a gate directly (the SDK client cannot serialize what we send). */
test('arguments nested 200,000 deep are refused with INVALID_REQUEST and the gate keeps serving', { timeout: 120_000 }, async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const policy = join(tmp.dir, 'policy.toml')
  const callsFile = join(tmp.dir, 'calls.jsonl')
  writeFileSync(policy, HARD_POLICY)
  const gate = spawn(process.execPath, [GATE, '--policy', policy, '--ledger', join(tmp.dir, 'cycles.db'),
    '--subject', 'tenant=acme,agent=claude', '--tool-prefix', 'railway.', '--',
    process.execPath, UPSTREAM, callsFile], { stdio: ['pipe', 'pipe', 'pipe'] })
  t.after(() => gate.kill())
  let out = ''
  let exited = null
  gate.stdout.on('data', (c) => (out += c))
  gate.stderr.on('data', () => {})
  gate.on('exit', (code, signal) => (exited = { code, signal }))
  const replies = () => out.split('\n').filter(Boolean).map((l) => JSON.parse(l))
  const reply = (id) => until(() => replies().find((m) => m.id === id) ?? (exited && Promise.reject(new Error(`gate exited ${JSON.stringify(exited)}`))), `reply ${id}`)
  const send = (m) => gate.stdin.write(`${typeof m === 'string' ? m : JSON.stringify(m)}\n`)
  send({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'raw', version: '1' } } })
  await reply(1)
  send({ jsonrpc: '2.0', method: 'notifications/initialized' })
  const n = 200_000
  // To a tool whose inputSchema leaves other properties open, so the gate's schema check passes
  // them and the depth reaches the core.
  send(`{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"add_tools","arguments":{"deep":${'['.repeat(n)}${']'.repeat(n)}}}}`)
  const deep = await reply(2)
  assert.equal(deep.result?.isError, true, JSON.stringify(deep).slice(0, 500))
  assert.equal(deep.result._meta['cycles/decision'].code, 'INVALID_REQUEST')
  send({ jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'read_file', arguments: { path: 'a' } } })
  const read = await reply(3)
  assert.equal(read.result.content[0].text, 'contents of a')
  assert.deepEqual(calls(callsFile).filter((c) => c.event === 'call').map((c) => c.tool), ['read_file'])
  assert.equal(exited, null)
})

// How a call ended at the upstream decides its outcome; the policy's on_failure (in the core)
// decides what a failure costs.
const FAILING_POLICY = HARD_POLICY + '\n[[tools]]\nname = "railway.flaky"\ntier = 1\n\n[[tools]]\nname = "railway.needs_consent"\ntier = 2\n'

for (const [onFailure, charged] of [[null, false], ['CHARGE', true]]) {
  test(`an upstream tool error (isError) and a JSON-RPC error answer are FAILED: ${charged ? 'charged' : 'released'} under on_failure ${onFailure ?? 'default'}`, { timeout: 120_000 }, async (t) => {
    const policy = onFailure ? `${FAILING_POLICY}\n[defaults]\non_failure = "${onFailure}"\n` : FAILING_POLICY
    const g = await startGate(t, { policy })
    const flaky = await g.client.callTool({ name: 'flaky', arguments: {} })
    assert.equal(flaky.isError, true)
    assert.match(text(flaky), /flaky failed on purpose/)
    // A JSON-RPC error answer from the upstream tool (not an isError result).
    const consent = await g.client.callTool({ name: 'needs_consent', arguments: {} })
    assert.equal(consent.isError, true)
    assert.match(text(consent), /The upstream server failed on "needs_consent": .*the user must consent first/)
    await until(() => /upstream error railway\.needs_consent: settled FAILED/.test(g.log), 'the gate to log the settlement')
    assert.deepEqual(g.calls().map((c) => c.tool), ['flaky', 'needs_consent'], 'both ran at the upstream')
    const b = await g.balance()
    assert.equal(b.reserved, 0, 'nothing is left held')
    assert.equal(b.spent, charged ? 1 + 5 : 0, 'tier 1 (1 point) + tier 2 (5) held, charged only under CHARGE')
    const auth = await cycles.Authority.open(g.ledger)
    const records = (await auth.audit()).filter((r) => r.kind !== 'budget_set')
    const finish = charged ? 'commit' : 'release'
    assert.deepEqual(records.map((r) => r.kind), ['reserve', finish, 'reserve', finish])
    if (!charged) {
      assert.deepEqual(records.filter((r) => r.kind === 'release').map((r) => r.detail.reason), ['upstream tool error', 'upstream error'])
    }
    assert.equal((await auth.verify()).ok, true)
  })
}

// A tool that ran and returned a non-error result is COMPLETED even when its structured
// content does not match its declared outputSchema (or is missing): the SDK client's own output
// validation must not turn it into a failure (released, and retried by the client).
const SCHEMA_POLICY = HARD_POLICY + '\n[[tools]]\nname = "railway.count_rows"\ntier = 2\n\n[[tools]]\nname = "railway.count_plain"\ntier = 2\n'
for (const onFailure of [null, 'CHARGE']) {
  test(`a tool result that fails its own outputSchema is forwarded as is and COMPLETED (charged) under on_failure ${onFailure ?? 'default'}`, { timeout: 120_000 }, async (t) => {
    const { CallToolResultSchema, ListToolsResultSchema } = await import('@modelcontextprotocol/sdk/types.js')
    const policy = onFailure ? `${SCHEMA_POLICY}\n[defaults]\non_failure = "${onFailure}"\n` : SCHEMA_POLICY
    const g = await startGate(t, { policy, upstream: join(here, 'upstream-schema-server.mjs') })
    // Listing through the gate makes the gate's upstream client learn the output schemas (the
    // raw request keeps this test client from validating what it gets back).
    const listed = await g.client.request({ method: 'tools/list', params: {} }, ListToolsResultSchema)
    assert.deepEqual(listed.tools.map((x) => x.name), ['count_rows', 'count_plain'])
    assert.ok(listed.tools[0].outputSchema)
    const rows = await g.client.request({ method: 'tools/call', params: { name: 'count_rows', arguments: {} } }, CallToolResultSchema)
    assert.equal(rows.isError, undefined, JSON.stringify(rows))
    assert.deepEqual(rows.structuredContent, { count: 'seven' }, 'the upstream result, as it is')
    assert.equal(text(rows), 'counted')
    const plain = await g.client.request({ method: 'tools/call', params: { name: 'count_plain', arguments: {} } }, CallToolResultSchema)
    assert.equal(plain.isError, undefined, JSON.stringify(plain))
    assert.equal(text(plain), 'counted 7 rows')
    assert.deepEqual(g.calls().map((c) => c.tool), ['count_rows', 'count_plain'], 'each ran once')
    const b = await g.balance()
    assert.equal(b.reserved, 0)
    assert.equal(b.spent, 10, 'both tier-2 calls (5 points each) charged: they ran and succeeded')
    const auth = await cycles.Authority.open(g.ledger)
    assert.deepEqual((await auth.audit()).map((r) => r.kind).filter((k) => k !== 'budget_set'), ['reserve', 'commit', 'reserve', 'commit'])
  })
}

test('upstreamFailure: which outcome each way a forwarded call can fail is', async () => {
  const { upstreamFailure } = await import('../mcp-gate/gate.mjs')
  const { ErrorCode, McpError } = await import('@modelcontextprotocol/sdk/types.js')
  const of = (err, aborted = false) => upstreamFailure(err, aborted).outcome
  assert.equal(of(new McpError(ErrorCode.InternalError, 'x'), true), 'INTERRUPTED', 'a cancelled call')
  assert.equal(of(new McpError(ErrorCode.RequestTimeout, 'x')), 'INTERRUPTED')
  assert.equal(of(new McpError(ErrorCode.ConnectionClosed, 'x')), 'INTERRUPTED')
  assert.equal(of(new Error('socket hang up')), 'INTERRUPTED', 'no answer at all: it may have run')
  assert.equal(of(new McpError(ErrorCode.MethodNotFound, 'x')), 'NOT_STARTED')
  assert.equal(of(new McpError(ErrorCode.ParseError, 'x')), 'NOT_STARTED')
  for (const code of [ErrorCode.InvalidParams, ErrorCode.InvalidRequest, ErrorCode.InternalError, -31999]) {
    assert.equal(of(new McpError(code, 'x')), 'FAILED', String(code))
  }
})
