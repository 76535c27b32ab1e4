// End to end through real processes and the real MCP SDK:
//   SDK Client --stdio--> cycles-mcp-gate --stdio--> upstream McpServer (records every call)
// A destructive tool is denied and never reaches the upstream; a read passes; a failing tool
// is released; the ledger file shows it all and its chain verifies.
import test from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
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
  assert.deepEqual(tools.map((x) => x.name).sort(), ['delete_volume', 'flaky', 'read_file', 'write_note'])
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

  const unknown = await client.callTool({ name: 'not_listed', arguments: {} })
  assert.equal(unknown.isError, true)
  assert.equal(unknown._meta['cycles/decision'].reasonCode, 'TOOL_UNKNOWN')

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
  assert.equal(byTool('denial', 'railway.not_listed')[0].reasonCode, 'TOOL_UNKNOWN')
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
