// Approvals through the Node binding: list the pending request, record an approver's signed
// grant (signed here with node:crypto, as an approver service written in JS would), and the
// agent's retry of the exact call is served by it, once.
import test from 'node:test'
import assert from 'node:assert/strict'
import { generateKeyPairSync, sign } from 'node:crypto'

import { cycles } from './support.mjs'

const SUBJECT = { tenant: 'acme', agent: 'bot' }
const SCOPE = 'tenant:acme/agent:bot'
const WIPE = { tool: 'railway.delete_volume', args: { volumeId: 'vol_prod_main' } }

/** An approver holding an Ed25519 key the agent never sees. */
function approver(id) {
  const { publicKey, privateKey } = generateKeyPairSync('ed25519')
  const publicHex = Buffer.from(publicKey.export({ format: 'jwk' }).x, 'base64url').toString('hex')
  const grant = (request, expiresAtMs, scope = SCOPE) => {
    const message =
      'cycles.approval.grant.v2\n' +
      `request_id:${request.request_id}\nscope:${scope}\ncall_digest:${request.call_digest}\n` +
      `approver_id:${id}\nexpires_at_ms:${expiresAtMs}\n`
    return {
      approver_id: id,
      call_digest: request.call_digest,
      expires_at_ms: expiresAtMs,
      public_key: publicHex,
      request_id: request.request_id,
      scope,
      signature: sign(null, Buffer.from(message), privateKey).toString('hex'),
    }
  }
  return { publicHex, grant }
}

function authority(alice) {
  return cycles.Authority.inMemory({
    policy: {
      tools: [{ name: 'railway.delete_volume', tier: 4 }],
      budgets: [{ scope: 'tenant:acme', unit: 'RISK_POINTS', allocated: 1000 }],
      approval: { public_keys: [alice.publicHex] },
    },
  })
}

async function ask(auth) {
  await assert.rejects(auth.reserve({ subject: SUBJECT, ...WIPE }), (e) => e.code === 'APPROVAL_REQUIRED')
  const err = await auth.reserve({ subject: SUBJECT, ...WIPE }).catch((e) => e)
  return err.decision.approvalRequestId
}

test('a recorded grant lets exactly that call through, once', async () => {
  const alice = approver('alice')
  const auth = authority(alice)
  const id = await ask(auth)

  const [pending] = await auth.approvals('PENDING')
  assert.equal(pending.request_id, id)
  assert.deepEqual(pending.call, { name: WIPE.tool, args: WIPE.args })
  assert.deepEqual(pending.scopes, ['tenant:acme', SCOPE])
  assert.equal(pending.tier, 4)
  assert.deepEqual(await auth.approval(id), pending)
  assert.deepEqual(auth.approvalSync(id), pending)

  const stored = await auth.recordApproval(id, { grant: alice.grant(pending, Number(auth.nowMs) + 60_000) })
  assert.equal(stored.status, 'GRANTED')
  assert.equal(stored.grant.approver_id, 'alice')
  assert.equal((await auth.approvals('GRANTED')).length, 1)

  // Another call is not served by it; the exact call is, without presenting the grant.
  await assert.rejects(
    auth.reserve({ subject: SUBJECT, tool: WIPE.tool, args: { volumeId: 'vol_other' } }),
    (e) => e.code === 'APPROVAL_REQUIRED',
  )
  const r = await auth.reserve({ subject: SUBJECT, ...WIPE })
  assert.ok(r.decision.rules.includes('approval.grant'), r.decision.rules.join(' '))
  assert.equal((await auth.approval(id)).status, 'CONSUMED')
  await r.commit()
  assert.notEqual(await ask(auth), id, 'single use: the next identical call asks again')
  assert.equal((await auth.verify()).ok, true)
})

test('an answer that does not verify or does not parse changes nothing', async () => {
  const alice = approver('alice')
  const mallory = approver('mallory') // a key the policy does not list
  const auth = authority(alice)
  const id = await ask(auth)
  const request = auth.approvalSync(id)
  const records = (await auth.audit()).length

  const forged = alice.grant(request, Number(auth.nowMs) + 60_000)
  forged.expires_at_ms += 1 // the signature no longer covers the fields
  const elsewhere = alice.grant(request, Number(auth.nowMs) + 60_000, 'tenant:acme/agent:bot2')
  for (const [grant, reason] of [
    [mallory.grant(request, Number(auth.nowMs) + 60_000), 'unknown_key'],
    [forged, 'bad_signature'],
    [elsewhere, 'subject_mismatch'],
  ]) {
    await assert.rejects(auth.recordApproval(id, { grant }), (e) => {
      assert.equal(e.code, 'APPROVAL_INVALID')
      assert.match(e.message, new RegExp(`\\(${reason}\\)`))
      return true
    })
  }
  for (const [call, field] of [
    [() => auth.recordApprovalSync(id, 42), /answer/],
    [() => auth.recordApprovalSync(id, { grant: { approver_id: 'x' } }), /answer/],
    [() => auth.recordApprovalSync(7, 'pending'), /requestId/],
    [() => auth.approvalsSync('NOPE'), /status/],
  ]) {
    assert.throws(call, (e) => e.code === 'INVALID_REQUEST' && field.test(e.message))
  }
  assert.throws(() => auth.approvalSync('apr_00000000000000000000000000000000'), (e) => e.code === 'NOT_FOUND')
  assert.equal(auth.recordApprovalSync(id, 'pending').status, 'PENDING')
  assert.equal((await auth.audit()).length, records, 'nothing was recorded')
  assert.equal(auth.approvalSync(id).status, 'PENDING')
})
