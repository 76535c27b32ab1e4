// Review 13 of the guard's argument copy: the function runs on exactly the own fields that were
// classified, whatever keys model JSON carries, and values passed by reference (an AbortSignal)
// carry nothing the classifier reads.
import test from 'node:test'
import assert from 'node:assert/strict'

import { cycles } from './support.mjs'

const { Authority } = cycles

const BOT = { agent: 'bot' }
const POLICY = {
  tools: [
    { name: 'http', tier: 1, classifier: 'http', arg: 'input.url', method_arg: 'input.method' },
    { name: 'fetch2', tier: 1, classifier: 'http' },
    { name: 'run_sql', tier: 1, classifier: 'sql', arg: 'q.sql' },
    { name: 'deploy', tier: 2 },
  ],
  budgets: [{ scope: 'agent:bot', unit: 'RISK_POINTS', allocated: 1000 }],
}
const URL_ = 'https://api.example.com/db/prod'
const lastReserve = (auth) => auth.auditSync({ kinds: ['reserve'] }).pop()
/** The digest the core gives the call `tool(args)`: what a reserve record says was classified. */
const digestOf = (tool, args) => Authority.inMemory({ policy: POLICY }).reserveSync({ subject: BOT, tool, args }).toJSON().callDigest

test('guard: a "__proto__" key from JSON.parse stays an own field: the function never reads through it what the classifier did not see', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const ran = []
  // What an HTTP tool does with its input: the method it would send (fetch reads `method`
  // through the prototype chain, as `q.method` does).
  const http = auth.guard(async function http(q) {
    ran.push(`${q.input.method ?? 'GET'} ${q.input.url}`)
    return Object.getPrototypeOf(q.input) === Object.prototype && Object.hasOwn(q.input, '__proto__')
  }, { subject: BOT })
  const fetch2 = auth.guard(async function fetch2(q) {
    ran.push(`${q.method ?? 'GET'} ${q.url}`)
    return Object.getPrototypeOf(q) === Object.prototype && Object.hasOwn(q, '__proto__')
  }, { subject: BOT, args: (q) => q })

  // The DELETE as an own field is rated as one: approval required, it never runs.
  await assert.rejects(http(JSON.parse(`{"input": {"url": "${URL_}", "method": "DELETE"}}`)), (e) => e.code === 'APPROVAL_REQUIRED')
  await assert.rejects(fetch2(JSON.parse(`{"url": "${URL_}", "method": "DELETE"}`)), (e) => e.code === 'APPROVAL_REQUIRED')
  assert.deepEqual(ran, [])

  // Behind a "__proto__" key (an ordinary own key after JSON.parse), nested and at the top
  // level under a custom `args`: classified as what the function then sees, a GET (no method);
  // before the fix the copy's prototype became {method: "DELETE"} and the function ran a DELETE.
  for (const [f, text] of [
    [http, `{"input": {"url": "${URL_}", "__proto__": {"method": "DELETE"}}}`],
    [fetch2, `{"url": "${URL_}", "__proto__": {"method": "DELETE"}}`],
  ]) {
    assert.equal(await f(JSON.parse(text)), true, 'the copy keeps "__proto__" as an own field and its ordinary prototype')
    const rec = lastReserve(auth)
    assert.equal(rec.tier, 1)
    assert.equal(rec.callDigest, digestOf(f.name, JSON.parse(text)), 'classified: exactly the own fields given')
  }
  assert.deepEqual(ran, [`GET ${URL_}`, `GET ${URL_}`], 'no DELETE ran that was not classified as one')

  // A null-prototype object keeps its null prototype and its "__proto__" field.
  const bare = Object.create(null)
  bare.url = URL_
  Object.defineProperty(bare, '__proto__', { value: { method: 'DELETE' }, enumerable: true })
  const seen = []
  const probe = auth.guard(async function fetch2(q) {
    seen.push(Object.getPrototypeOf(q), q.method)
  }, { subject: BOT, args: (q) => q })
  await probe(bare)
  assert.deepEqual(seen, [null, undefined])
})

test('guard: an AbortSignal argument passes by reference and is classified as "<AbortSignal>", never by its own fields', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const ran = []
  const run = auth.guard(async function run_sql(x) {
    ran.push(x.q.sql)
    return x.q
  }, { subject: BOT })
  // A real signal carrying data, changed after the call was made (before the function runs):
  // its fields are not classified (the classifier sees the placeholder, so `q.sql` is missing
  // and the call fails closed); before the fix SELECT 1 was classified and DROP TABLE ran.
  const s = new AbortController().signal
  s.sql = 'SELECT 1'
  const pending = run({ q: s })
  s.sql = 'DROP TABLE users'
  await assert.rejects(pending, (e) => e.code === 'APPROVAL_REQUIRED' && e.decision.rules.includes('sql.arg_missing'))
  assert.deepEqual(ran, [])

  // The function gets the caller's own signal; the classified call holds the placeholder.
  const got = []
  const deploy = auth.guard(async function deploy(opts, signal) {
    got.push(opts.signal === ac.signal, signal === ac.signal, opts.tag)
    return 'deployed'
  }, { subject: BOT, estimate: (opts, signal) => { got.push(opts.signal, signal); return undefined } })
  const ac = new AbortController()
  ac.signal.tag = 'expando'
  assert.equal(await deploy({ env: 'prod', signal: ac.signal }, ac.signal), 'deployed')
  assert.deepEqual(got, ['<AbortSignal>', '<AbortSignal>', true, true, undefined])
  assert.equal(
    lastReserve(auth).callDigest,
    digestOf('deploy', { arguments: [{ env: 'prod', signal: '<AbortSignal>' }, '<AbortSignal>'] }),
  )
})

test('guard: an object that only inherits from AbortSignal.prototype is refused before anything is reserved', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const ran = []
  const run = auth.guard(async function run_sql(x) {
    ran.push(x.q.sql)
  }, { subject: BOT })
  const fake = Object.create(AbortSignal.prototype)
  fake.sql = 'SELECT 1'
  const before = auth.auditSync().length
  const pending = run({ q: fake })
  fake.sql = 'DROP TABLE users'
  await assert.rejects(pending, (e) => e instanceof TypeError && /AbortSignal/.test(e.message))
  // Nor as the guard's own signal option.
  assert.throws(() => auth.guard(async function deploy() {}, { subject: BOT, signal: fake }), TypeError)
  const viaFn = auth.guard(async function deploy() {}, { subject: BOT, signal: () => fake })
  await assert.rejects(viaFn(), TypeError)
  assert.deepEqual(ran, [])
  assert.equal(auth.auditSync().length, before, 'nothing reserved')
})

test('guard: called as a method, a guarded function is refused before anything is reserved (`this` would reach fn unclassified)', async () => {
  const auth = Authority.inMemory({ policy: POLICY })
  const ran = []
  const deploy = auth.guard(function deploy(q) {
    ran.push(this?.sql ?? q.sql)
    return 'ok'
  }, { subject: BOT })
  // The classified argument says SELECT; the method's object says DROP.
  const obj = { sql: 'DROP TABLE users', run: deploy }
  const refused = (e) => e instanceof TypeError && /method/.test(e.message)
  await assert.rejects(obj.run({ sql: 'SELECT 1' }), refused)
  await assert.rejects(deploy.call(obj, { sql: 'SELECT 1' }), refused)
  await assert.rejects(deploy.call('DROP TABLE users', { sql: 'SELECT 1' }), refused)
  assert.deepEqual(ran, [])
  assert.deepEqual(auth.auditSync().map((r) => r.kind), ['budget_set'], 'nothing reserved')
  // A plain call, `apply(null, ...)` and globalThis carry nothing of the caller's: they run.
  assert.equal(await deploy({ sql: 'SELECT 1' }), 'ok')
  assert.equal(await deploy.apply(null, [{ sql: 'SELECT 2' }]), 'ok')
  assert.equal(await deploy.call(globalThis, { sql: 'SELECT 3' }), 'ok')
  assert.deepEqual(ran, ['SELECT 1', 'SELECT 2', 'SELECT 3'], 'fn never sees a this')
})
