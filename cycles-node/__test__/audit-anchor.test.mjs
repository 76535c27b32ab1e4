// Audit anchors through the Node binding: the head as SEQ:HASH, verified later; a chain that no
// longer holds the anchored record (removed or rebuilt) is reported broken.
import test from 'node:test'
import assert from 'node:assert/strict'
import { join } from 'node:path'

import { cycles, tempDir } from './support.mjs'

const POLICY = { tools: [{ name: 'read_file', tier: 0 }] }

async function decide(auth, agent, n) {
  for (let i = 0; i < n; i++) await auth.decide({ subject: { agent }, tool: 'read_file', args: { path: 'a' } })
}

test('an anchor verifies an intact chain and catches a rebuilt or shortened one', async (t) => {
  const tmp = tempDir()
  t.after(tmp.cleanup)
  const auth = await cycles.Authority.open(join(tmp.dir, 'a.db'), { policy: POLICY })
  assert.equal(await auth.auditAnchor(), null)
  await decide(auth, 'bot', 5)
  const anchor = await auth.auditAnchor()
  assert.match(anchor, /^5:[0-9a-f]{64}$/)
  assert.equal(auth.auditAnchorSync(), anchor)
  await decide(auth, 'bot', 1)
  assert.equal((await auth.verify({ anchors: [anchor] })).ok, true)
  assert.equal(auth.verifySync({ anchors: [anchor] }).ok, true)

  // Another ledger with a valid chain of other records: the anchored record is not there.
  const other = await cycles.Authority.open(join(tmp.dir, 'b.db'), { policy: POLICY })
  await decide(other, 'someone-else', 6)
  assert.equal((await other.verify()).ok, true)
  const rebuilt = await other.verify({ anchors: [anchor] })
  assert.equal(rebuilt.ok, false)
  assert.equal(rebuilt.firstBroken.seq, 5)
  assert.match(rebuilt.firstBroken.reason, /rewritten/)

  // An anchor past the head: records were removed.
  const ahead = `9:${anchor.split(':')[1]}`
  const short = auth.verifySync({ anchors: [ahead] })
  assert.equal(short.ok, false)
  assert.equal(short.firstBroken.seq, 7)
  assert.match(short.firstBroken.reason, /removed/)
})

test('malformed anchors are INVALID_REQUEST', async () => {
  const auth = cycles.Authority.inMemory({ policy: POLICY })
  for (const options of [{ anchors: ['5'] }, { anchors: ['0:' + 'ab'.repeat(32)] }, { anchors: [5] }, { anchors: 'x' }, 7]) {
    assert.throws(() => auth.verifySync(options), (e) => e.code === 'INVALID_REQUEST', JSON.stringify(options))
    await assert.rejects(auth.verify(options), (e) => e.code === 'INVALID_REQUEST')
  }
  assert.equal(auth.verifySync().ok, true)
  assert.equal(auth.verifySync({}).ok, true)
})
