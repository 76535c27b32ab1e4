// The shared golden scenarios (fixtures/scenarios/*.json, format in fixtures/README.md) run
// through the Node binding with the same comparison rules as cycles-core/tests/golden.rs:
// partial match of objects, exact arrays and scalars, the budget invariant after every step,
// and a verified audit chain at the end. Requests are translated from the core's JSON shape
// to the binding's JS shape (camelCase, `tool`/`args` instead of `call`), results back.
import test from 'node:test'
import assert from 'node:assert/strict'
import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

import { big, cycles, parseExactJson, tempDir } from './support.mjs'

const { Authority, ManualClock } = cycles
const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '../../fixtures/scenarios')
/** Fewer than this means the fixtures went missing: fail rather than pass vacuously. */
const MIN_SCENARIOS = 30
const EXPECT_KEYS = [
  'error',
  'decision',
  'reason_code',
  'tier',
  'risk_points',
  'decision_scope',
  'rules',
  'result',
  'same_as',
  'balances',
  'budget_count',
  'reservations',
]

function loadFixtures() {
  const files = readdirSync(FIXTURES)
    .filter((f) => f.endsWith('.json'))
    .sort()
  return files.map((file) => ({
    file,
    scenario: parseExactJson(readFileSync(join(FIXTURES, file), 'utf8')),
  }))
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v)
const camel = (k) => k.replace(/_([a-z])/g, (_, c) => c.toUpperCase())
const snake = (k) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)

/** A core-shaped request (snake_case, `call: {name, args}`) in the binding's JS shape. */
export function jsRequest(req) {
  if (!isObject(req)) return req
  const out = {}
  for (const [k, v] of Object.entries(req)) {
    if (k === 'call' && isObject(v)) {
      for (const [ck, cv] of Object.entries(v)) out[ck === 'name' ? 'tool' : ck] = cv
    } else if (k === 'extend_by_ms') {
      out.byMs = v
    } else {
      out[camel(k)] = v
    }
  }
  return out
}

/** A JS result in the core's JSON shape: snake_case keys (free-form maps left alone). */
function coreShape(v) {
  if (Array.isArray(v)) return v.map(coreShape)
  if (!isObject(v)) return v
  const out = {}
  for (const [k, x] of Object.entries(v)) {
    if (x === undefined) continue
    out[snake(k)] = k === 'dimensions' || k === 'detail' ? x : coreShape(x)
  }
  return out
}

const isInt = (x) => typeof x === 'bigint' || (typeof x === 'number' && Number.isInteger(x))
/** Scalars are equal; integers compare by value whether they came as numbers or bigints. */
const same = (a, b) => (isInt(a) && isInt(b) ? big(a) === big(b) : a === b)

const show = (v) => JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? `${x}n` : x))

/** Partial match: the rule of golden.rs. */
export function partialMatch(expected, actual, path, errs) {
  if (isObject(expected) && isObject(actual)) {
    for (const [k, ev] of Object.entries(expected)) {
      const p = `${path}.${k}`
      if (k in actual) partialMatch(ev, actual[k], p, errs)
      else if (!(ev === null || (Array.isArray(ev) && ev.length === 0))) {
        errs.push(`${p}: expected ${show(ev)}, but it is absent`)
      }
    }
  } else if (Array.isArray(expected) && Array.isArray(actual)) {
    if (expected.length !== actual.length) {
      errs.push(`${path}: expected ${expected.length} elements, got ${actual.length}: ${show(actual)}`)
      return
    }
    expected.forEach((ev, i) => partialMatch(ev, actual[i], `${path}[${i}]`, errs))
  } else if (Array.isArray(expected) && expected.length === 0 && actual == null) {
    // an empty list matches an absent one
  } else if (!same(expected, actual)) {
    errs.push(`${path}: expected ${show(expected)}, got ${show(actual)}`)
  }
}

/** One scenario in progress: `sync` uses the ...Sync methods, `async` the Promise forms. */
class Run {
  constructor(scenario, ledger, mode) {
    this.mode = mode
    this.clock = new ManualClock(scenario.start_ms)
    this.names = new Map()
    this.ledger = ledger
  }

  async start(policy) {
    const opts = { policy, clock: this.clock }
    if (this.ledger === 'memory') this.auth = Authority.inMemory(opts)
    else {
      this.tmp = tempDir()
      const path = join(this.tmp.dir, 'ledger.db')
      this.auth = this.mode === 'sync' ? Authority.openSync(path, opts) : await Authority.open(path, opts)
    }
  }

  close() {
    this.tmp?.cleanup()
  }

  /** Calls `name` in this run's mode. */
  call(name, ...args) {
    return this.mode === 'sync' ? this.auth[`${name}Sync`](...args) : this.auth[name](...args)
  }

  reservationId(step) {
    if (step.reservation !== undefined && step.reservation_id === undefined) {
      if (!this.names.has(step.reservation)) throw new Error(`no reservation is bound to ${step.reservation}`)
      return this.names.get(step.reservation)
    }
    if (step.reservation === undefined && step.reservation_id !== undefined) return step.reservation_id
    throw new Error('give exactly one of reservation, reservation_id')
  }

  async attempt(fn) {
    try {
      return { result: coreShape(await fn()) }
    } catch (error) {
      return { error }
    }
  }

  /** Performs one step; throws for a malformed step (a scenario bug), not for a mismatch. */
  async perform(step) {
    const req = jsRequest(step.request)
    let out
    switch (step.op) {
      case 'decide': {
        out = await this.attempt(() => this.call('decide', req))
        out.decision = out.result
        break
      }
      case 'reserve': {
        try {
          const r = await this.call('reserve', req)
          out = { result: coreShape(r.toJSON()), id: r.reservationId, decision: coreShape(r.decision) }
        } catch (error) {
          const decision = error.decision ? coreShape(error.decision) : undefined
          out = { error, decision, result: decision }
        }
        break
      }
      case 'commit':
        out = await this.attempt(() => this.call('commit', this.reservationId(step), req))
        break
      case 'release':
        out = await this.attempt(() => this.call('release', this.reservationId(step), req))
        break
      case 'settle':
        if (req === undefined) throw new Error('settle needs a request')
        out = await this.attempt(() => this.call('settle', this.reservationId(step), req))
        break
      case 'extend':
        if (req === undefined) throw new Error('extend needs a request')
        out = await this.attempt(() => this.call('extend', this.reservationId(step), req))
        break
      case 'event':
        out = await this.attempt(() => this.call('event', req))
        out.id = out.result?.event_id
        break
      case 'sweep_expired':
        out = await this.attempt(async () => ({ swept: await this.call('sweepExpired') }))
        break
      case 'set_budget':
        out = await this.attempt(() => this.call('setBudget', req))
        break
      case 'advance_clock':
        if ((step.by_ms === undefined) === (step.to_ms === undefined)) {
          throw new Error('advance_clock takes exactly one of by_ms, to_ms')
        }
        if (step.by_ms !== undefined) this.clock.advance(step.by_ms)
        else this.clock.set(step.to_ms)
        out = { result: { now_ms: this.clock.nowMs } }
        break
      case 'balances':
        out = { result: null }
        break
      case 'verify':
        out = await this.attempt(async () => {
          const report = await this.call('verify')
          const records = await this.call('audit')
          return { ok: report.ok, records: report.records, kinds: records.map((r) => r.kind) }
        })
        break
      default:
        throw new Error(`unknown op ${step.op}`)
    }
    if (step.as !== undefined) {
      if (step.op !== 'reserve' && step.op !== 'event') throw new Error('`as` binds only reserve and event results')
      if (out.id === undefined) throw new Error(`cannot bind ${step.as}: the step created nothing`)
      if (this.names.has(step.as)) throw new Error(`name ${step.as} is bound twice`)
      this.names.set(step.as, out.id)
    }
    return out
  }

  /** The mismatches between a step's outcome (and the ledger after it) and `step.expect`. */
  check(step, out) {
    const exp = step.expect ?? {}
    for (const k of Object.keys(exp)) if (!EXPECT_KEYS.includes(k)) throw new Error(`unknown expect key ${k}`)
    const errs = []
    const code = exp.error ?? null
    if (code === null && out.error) {
      errs.push(`unexpected error ${out.error.code}: ${out.error.message}`)
    } else if (code !== null && !out.error) {
      errs.push(`expected error ${code}, but the step succeeded with ${show(out.result ?? null)}`)
    } else if (code !== null && out.error.code !== code) {
      errs.push(`expected error ${code}, got ${out.error.code}: ${out.error.message}`)
    }
    const decisionKeys = [
      ['decision', 'decision'],
      ['reason_code', 'reason_code'],
      ['tier', 'tier'],
      ['risk_points', 'risk_points'],
      ['decision_scope', 'scope'],
      ['rules', 'rules'],
    ]
    for (const [key, field] of decisionKeys) {
      if (!(key in exp)) continue
      if (!out.decision) errs.push(`expect.${key}: the step produced no decision`)
      else partialMatch({ [field]: exp[key] }, out.decision, 'decision', errs)
    }
    if ('result' in exp) {
      if (out.result === undefined) errs.push('expect.result: the step produced no result')
      else partialMatch(exp.result, out.result, 'result', errs)
    }
    if ('same_as' in exp) {
      const bound = this.names.get(exp.same_as)
      if (bound === undefined) throw new Error(`expect.same_as: no id is bound to ${exp.same_as}`)
      if (out.id !== bound) errs.push(`same_as ${exp.same_as}: expected id ${bound}, got ${out.id}`)
    }
    if ('balances' in exp || 'budget_count' in exp) {
      const filter = step.op === 'balances' ? step.scope : undefined
      const actual = coreShape(this.auth.balancesSync(filter))
      if ('budget_count' in exp && actual.length !== Number(exp.budget_count)) {
        errs.push(`budget_count: expected ${exp.budget_count}, got ${actual.length}`)
      }
      for (const eb of exp.balances ?? []) {
        const ab = actual.find((a) => a.scope === eb.scope && a.unit === eb.unit)
        if (ab) partialMatch(eb, ab, `balances[${eb.scope} ${eb.unit}]`, errs)
        else errs.push(`balances: no budget ${eb.scope} ${eb.unit}`)
      }
    }
    for (const [name, ev] of Object.entries(exp.reservations ?? {})) {
      const id = this.names.get(name)
      if (id === undefined) throw new Error(`expect.reservations: no reservation bound to ${name}`)
      try {
        partialMatch(ev, coreShape(this.auth.getReservationSync(id).toJSON()), `reservations.${name}`, errs)
      } catch (e) {
        errs.push(`reservation ${name}: ${e.message}`)
      }
    }
    return errs
  }

  /** `remaining = allocated - spent - reserved - debt` on every budget, nothing negative. */
  invariant() {
    const errs = []
    for (const b of this.auth.balancesSync()) {
      const want = big(b.allocated) - big(b.spent) - big(b.reserved) - big(b.debt)
      if (big(b.remaining) !== want || big(b.spent) < 0n || big(b.reserved) < 0n || big(b.debt) < 0n) {
        errs.push(`invariant broken on ${b.scope} ${b.unit}: ${show(b)}`)
      }
    }
    return errs
  }
}

/** Runs the first `upto` steps of a scenario; resolves to null or the failure text. */
export async function runScenario(scenario, ledger, mode, upto = scenario.steps.length) {
  const run = new Run(scenario, ledger, mode)
  try {
    await run.start(scenario.policy)
    for (const [i, step] of scenario.steps.slice(0, upto).entries()) {
      const label = `step ${i + 1} (${step.op}${step.reservation ? ` ${step.reservation}` : ''}${step.note ? `: ${step.note}` : ''})`
      let out
      let errs
      try {
        out = await run.perform(step)
        errs = run.check(step, out)
      } catch (e) {
        return `${label}: malformed step or expectation: ${e.message}`
      }
      errs.push(...run.invariant())
      if (errs.length) return `${label}:\n    ${errs.join('\n    ')}`
    }
    const report = run.auth.verifySync()
    if (!report.ok) return `audit chain does not verify: ${show(report)}`
    return null
  } finally {
    run.close()
  }
}

const fixtures = loadFixtures()

test('the fixtures are there', () => {
  assert.ok(fixtures.length >= MIN_SCENARIOS, `only ${fixtures.length} scenarios in ${FIXTURES}`)
})

for (const [ledger, mode] of [
  ['memory', 'sync'],
  ['memory', 'async'],
  ['sqlite', 'async'],
]) {
  test(`golden scenarios: ${ledger} ledger, ${mode === 'sync' ? '...Sync methods' : 'Promise methods'}`, async (t) => {
    for (const { file, scenario } of fixtures) {
      await t.test(file, async () => {
        const failure = await runScenario(scenario, ledger, mode)
        assert.equal(failure, null, `${file} (${scenario.name}) ${failure}`)
      })
    }
  })
}

/** Every leaf of every expectation is live in this runner too: changing one fails its scenario. */
test('every expectation can fail through the Node runner', async () => {
  const leaves = (v, path, out) => {
    if (Array.isArray(v)) v.forEach((x, i) => leaves(x, [...path, i], out))
    else if (isObject(v)) for (const [k, x] of Object.entries(v)) leaves(x, [...path, k], out)
    else {
      let m
      if (typeof v === 'bigint') m = v - 1n
      else if (typeof v === 'number') m = v + 1
      else if (typeof v === 'string') m = `${v}_changed`
      else if (typeof v === 'boolean') m = !v
      else m = 'not null'
      out.push([path, m])
    }
  }
  let checked = 0
  const survivors = []
  for (const { file, scenario } of fixtures) {
    for (const [i, step] of scenario.steps.entries()) {
      const found = []
      leaves(step.expect ?? {}, [], found)
      for (const [path, m] of found) {
        const copy = structuredClone(scenario)
        let cur = copy.steps[i].expect
        for (const p of path.slice(0, -1)) cur = cur[p]
        cur[path[path.length - 1]] = m
        checked++
        if ((await runScenario(copy, 'memory', 'sync', i + 1)) === null) {
          survivors.push(`${file} step ${i + 1}: expect.${path.join('.')} = ${show(m)} still passes`)
        }
      }
    }
  }
  assert.ok(checked > 100, `only ${checked} expectations found`)
  assert.deepEqual(survivors, [], `${survivors.length} of ${checked} mutated expectations were not detected`)
})

test('partial match rules', () => {
  const actual = { a: 1, b: [1, 2], c: { d: 'x', e: true }, big: 9223372036854775807n }
  let errs = []
  partialMatch({ a: 1, c: { d: 'x' }, big: 9223372036854775807n }, actual, 'r', errs)
  assert.deepEqual(errs, [])
  partialMatch({ z: null, y: [] }, actual, 'r', errs)
  assert.deepEqual(errs, [], 'absent keys match null and []')
  partialMatch({ b: [1] }, actual, 'r', errs)
  assert.equal(errs.length, 1, 'arrays must have the same length')
  errs = []
  partialMatch({ a: 2 }, actual, 'r', errs)
  assert.deepEqual(errs, ['r.a: expected 2, got 1'])
  errs = []
  partialMatch({ z: 0 }, actual, 'r', errs)
  assert.equal(errs.length, 1, 'an absent key does not match 0')
  errs = []
  partialMatch({ big: 9223372036854775806n, a: '1' }, actual, 'r', errs)
  assert.equal(errs.length, 2, 'bigints compare exactly; a string never equals a number')
})

test('exact JSON keeps i64 limits', () => {
  const v = parseExactJson('{"a": 9223372036854775807, "b": [1, -2.5, "x\\"y"], "c": 9007199254740991}')
  assert.equal(v.a, 9223372036854775807n)
  assert.deepEqual(v.b, [1, -2.5, 'x"y'])
  assert.equal(v.c, Number.MAX_SAFE_INTEGER)
})
