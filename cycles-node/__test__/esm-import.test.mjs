// The package is CommonJS; ES modules import its classes and functions by name, as the README
// quickstart does, and get the very objects the default import holds.
import test from 'node:test'
import assert from 'node:assert/strict'

import cycles, { Authority, ManualClock, Reservation, guard, isCyclesError } from '../cycles.js'

test('named ES module imports are the package\'s own exports', async () => {
  assert.equal(Authority, cycles.Authority)
  assert.equal(Reservation, cycles.Reservation)
  assert.equal(ManualClock, cycles.ManualClock)
  assert.equal(guard, cycles.guard)
  assert.equal(isCyclesError, cycles.isCyclesError)
  const auth = Authority.inMemory({ policy: { tools: [{ name: 'read', tier: 0 }], budgets: [{ scope: 'agent:a', unit: 'RISK_POINTS', allocated: 10 }] } })
  const d = await auth.decide({ tool: 'read', args: {}, subject: { agent: 'a' } })
  assert.equal(d.decision, 'ALLOW')
})
