// Fail closed through the Node binding: inputs that used to abort the Node process (a busy
// timeout SQLite cannot take: a Rust panic that cannot cross napi) are INVALID_REQUEST errors, a
// file that is not a ledger is LEDGER_CORRUPT and left as it was, a ledger damaged under a
// running authority answers DENY LEDGER_UNAVAILABLE, arguments nested 10,000 deep are
// INVALID_REQUEST, an unknown tool is DENY TOOL_UNKNOWN, and `.code` is the core's code.
import test from 'node:test'
import assert from 'node:assert/strict'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

import { cycles, tempDir } from './support.mjs'

const { Authority, isCyclesError } = cycles

const POLICY = {
  tools: [
    { name: 'read_file', tier: 0 },
    { name: 'write_file', tier: 1 },
  ],
  budgets: [{ scope: 'tenant:acme', unit: 'RISK_POINTS', allocated: 100 }],
}
const SUBJECT = { tenant: 'acme', agent: 'bot' }
const call = (tool, args = {}) => ({ subject: SUBJECT, tool, args })
const hasCode = (code, kind) => (e) => {
  assert.ok(isCyclesError(e), `not a CyclesError: ${e}`)
  assert.equal(e.code, code, e.message)
  if (kind) assert.equal(e.kind, kind)
  return true
}

test('a busy timeout SQLite cannot take is INVALID_REQUEST, not a process abort', async () => {
  const path = join(tempDir().dir, 'cycles.db')
  for (const busyTimeoutMs of [2 ** 31, 2 ** 40, Number.MAX_SAFE_INTEGER]) {
    assert.throws(() => Authority.openSync(path, { policy: POLICY, busyTimeoutMs }), hasCode('INVALID_REQUEST', 'InvalidInput'))
    await assert.rejects(Authority.open(path, { policy: POLICY, busyTimeoutMs }), hasCode('INVALID_REQUEST', 'InvalidInput'))
  }
  assert.equal(existsSync(path), false)
  Authority.openSync(path, { policy: POLICY, busyTimeoutMs: 2 ** 31 - 1 })
})

test('a file that is not a ledger is LEDGER_CORRUPT and left as it was', async () => {
  const path = join(tempDir().dir, 'cycles.db')
  writeFileSync(path, Buffer.alloc(10_000, 0xab))
  const before = readFileSync(path)
  assert.throws(() => Authority.openSync(path, { policy: POLICY }), hasCode('LEDGER_CORRUPT', 'Ledger'))
  await assert.rejects(Authority.open(path, { policy: POLICY }), hasCode('LEDGER_CORRUPT', 'Ledger'))
  assert.deepEqual(readFileSync(path), before)
})

test('a ledger damaged under a running authority denies with LEDGER_UNAVAILABLE', async () => {
  const path = join(tempDir().dir, 'cycles.db')
  const auth = Authority.openSync(path, { policy: POLICY, busyTimeoutMs: 200 })
  await auth.reserve(call('read_file'))
  assert.equal(auth.decideSync(call('write_file')).decision, 'ALLOW')
  // Every file of the ledger overwritten under the running authority. (Overwriting only the
  // database and the WAL is not noticed until SQLite next reads them: until then the connection
  // answers from its page cache. The shared-memory index is what tells it to look again.)
  for (const [file, size] of [[path, 65536], [`${path}-wal`, 65536], [`${path}-shm`, 32768]]) {
    writeFileSync(file, Buffer.alloc(size, 0x5a))
  }
  const d = await auth.decide(call('write_file'))
  assert.equal(d.decision, 'DENY')
  assert.equal(d.reasonCode, 'LEDGER_UNAVAILABLE')
  await assert.rejects(auth.reserve(call('write_file')), (e) => {
    hasCode('LEDGER_UNAVAILABLE', 'Denied')(e)
    assert.equal(e.decision.decision, 'DENY')
    return true
  })
})

test('arguments nested 10,000 deep are INVALID_REQUEST', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  let deep = 'leaf'
  for (let i = 0; i < 10_000; i++) deep = [deep]
  const before = auth.auditSync().length
  assert.throws(() => auth.decideSync(call('write_file', { x: deep })), hasCode('INVALID_REQUEST'))
  await assert.rejects(auth.reserve(call('write_file', { x: deep })), hasCode('INVALID_REQUEST'))
  assert.equal(auth.auditSync().length, before)
})

test('an unknown tool is DENY TOOL_UNKNOWN on a SQLite ledger', async () => {
  const auth = Authority.openSync(join(tempDir().dir, 'cycles.db'), { policy: { ...POLICY, unknown_tool: { action: 'deny' } } })
  const d = await auth.decide(call('railway.not_listed'))
  assert.equal(d.decision, 'DENY')
  assert.equal(d.reasonCode, 'TOOL_UNKNOWN')
  await assert.rejects(auth.reserve(call('railway.not_listed')), hasCode('TOOL_UNKNOWN', 'Denied'))
  assert.equal(auth.balancesSync()[0].reserved, 0)
})

test('a bad policy is POLICY_INVALID and builds no authority', () => {
  for (const policy of [
    { tools: [{ name: 'x', tier: 5 }] },
    { tools: [{ name: 'x', tier: 0 }, { name: 'x', tier: 4 }] },
    { budgets: [{ scope: 'tenant:a', unit: 'DOLLARS', allocated: 1 }] },
    { toolz: [] },
    join(tempDir().dir, 'missing.toml'),
  ]) {
    assert.throws(() => Authority.inMemory({ policy }), hasCode('POLICY_INVALID', 'Policy'))
  }
})
