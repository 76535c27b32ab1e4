// commit({ ran }): the call that actually ran, when it may not be the call reserved. A different
// call is charged at least its own risk points (the core's rule) and named in the commit record;
// a malformed one is INVALID_REQUEST and changes nothing. And reservationByKey, which finds a
// reservation by the idempotency key it was reserved under (as the Claude Code hook does).
import test from 'node:test'
import assert from 'node:assert/strict'

import { cycles } from './support.mjs'

const POLICY = {
  tools: [
    { name: 'write_file', tier: 1 },
    { name: 'deploy', tier: 3 },
  ],
  budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 1000 }],
}
const subject = { agent: 'bot' }

test('a costlier call that ran is charged its points and named in the record', async () => {
  const auth = cycles.Authority.inMemory({ policy: POLICY })
  const deployPoints = auth.decideSync({ subject, tool: 'deploy', args: { to: 'prod' } }).riskPoints
  const r = await auth.reserve({ subject, tool: 'write_file', args: { path: 'a' } })
  const c = await auth.commit(r.reservationId, { ran: { tool: 'deploy', args: { to: 'prod', ratio: 0.5 } } })
  assert.equal(c.charged[0].amount, deployPoints)
  const [record] = await auth.audit({ kinds: ['commit'] })
  assert.equal(record.detail.ran.tool, 'deploy')
  assert.equal(record.detail.ran.tier, 3)
  // The reserved call itself: charged as held, nothing named.
  const writePoints = auth.decideSync({ subject, tool: 'write_file', args: { path: 'b' } }).riskPoints
  const r2 = auth.reserveSync({ subject, tool: 'write_file', args: { path: 'b' } })
  const c2 = auth.commitSync(r2.reservationId, { ran: { tool: 'write_file', args: { path: 'b' } } })
  assert.equal(c2.charged[0].amount, writePoints)
  const records = await auth.audit({ kinds: ['commit'] })
  assert.equal(records[1].detail.ran, undefined)
})

test('a malformed call that ran is INVALID_REQUEST and changes nothing', async () => {
  const auth = cycles.Authority.inMemory({ policy: POLICY })
  const r = await auth.reserve({ subject, tool: 'write_file', args: {} })
  const before = (await auth.audit()).length
  for (const ran of [5, 'deploy', [], { args: {} }, { tool: 'deploy', argz: {} }, { tool: '' }]) {
    assert.throws(() => auth.commitSync(r.reservationId, { ran }), (e) => e.code === 'INVALID_REQUEST', JSON.stringify(ran))
    await assert.rejects(auth.commit(r.reservationId, { ran }), (e) => e.code === 'INVALID_REQUEST')
  }
  assert.equal((await auth.audit()).length, before)
  assert.equal((await auth.getReservation(r.reservationId)).status, 'ACTIVE')
})

test('a reservation is found by its idempotency key, as it stands', async () => {
  const auth = cycles.Authority.inMemory({ policy: POLICY })
  assert.equal(await auth.reservationByKey('nothing'), null)
  assert.equal(auth.reservationByKeySync('nothing'), null)
  const r = await auth.reserve({ subject, tool: 'write_file', args: { path: 'a' }, idempotencyKey: 'tool-use-1' })
  const found = await auth.reservationByKey('tool-use-1')
  assert.equal(found.reservationId, r.reservationId)
  assert.equal(found.status, 'ACTIVE')
  await found.commit()
  assert.equal(auth.reservationByKeySync('tool-use-1').status, 'COMMITTED')
  assert.throws(() => auth.reservationByKeySync(42), (e) => e.code === 'INVALID_REQUEST')
})

test('chargeIfExpired: a call that outlived its reservation is charged, once, as an event', async () => {
  const clock = new cycles.ManualClock(1_000)
  const auth = cycles.Authority.inMemory({ policy: POLICY, clock })
  const spent = () => auth.balancesSync('agent:bot')[0].spent
  const r = await auth.reserve({ subject, tool: 'deploy', args: { to: 'prod' } })
  const held = auth.decideSync({ subject, tool: 'deploy', args: { to: 'prod' } }).riskPoints
  clock.advance(3_600_000)
  await assert.rejects(r.commit(), (e) => e.code === 'RESERVATION_EXPIRED')
  assert.equal(spent(), 0)
  const c = await r.commit({ chargeIfExpired: true, idempotencyKey: 'late-1' })
  assert.equal(c.status, 'EXPIRED')
  assert.match(c.eventId, /^evt_/)
  assert.equal(c.charged[0].amount, held)
  assert.equal(spent(), held)
  // A retry with the same key replays it (through the sync form too); one without is refused.
  assert.deepEqual(r.commitSync({ chargeIfExpired: true, idempotencyKey: 'late-1' }), c)
  assert.throws(() => r.commitSync({ chargeIfExpired: true }), (e) => e.code === 'RESERVATION_FINALIZED')
  assert.equal(spent(), held)
  assert.equal(r.status, 'EXPIRED')
  assert.equal((await auth.verify()).ok, true)
  await assert.rejects(r.commit({ chargeIfExpired: 'yes' }), (e) => e.code === 'INVALID_REQUEST')
})

test('guard charges a guarded function that outlived its reservation', async () => {
  const clock = new cycles.ManualClock(1_000)
  const auth = cycles.Authority.inMemory({ policy: POLICY, clock })
  const deploy = auth.guard(async (to) => {
    clock.advance(3_600_000) // ran past its TTL and grace
    return `deployed ${to}`
  }, { tool: 'deploy', subject })
  assert.equal(await deploy('prod'), 'deployed prod')
  const kinds = (await auth.audit()).map((x) => x.kind)
  assert.deepEqual(kinds.slice(-3), ['reserve', 'expire', 'event'])
  assert.ok(auth.balancesSync('agent:bot')[0].spent > 0)
})
