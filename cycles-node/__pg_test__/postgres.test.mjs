// The Node binding on a PostgreSQL ledger: `Authority.open('postgres://...')`.
//
// Run by scripts/pg-test.sh, which starts a server and sets CYCLES_PG_URL; `npm test` does not
// collect this directory. Without CYCLES_PG_URL this file fails: it never passes without a
// server.
import test from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import net from 'node:net'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

import { cycles } from '../__test__/support.mjs'

const SERVER = process.env.CYCLES_PG_URL
if (!SERVER) {
  throw new Error('CYCLES_PG_URL is not set: run scripts/pg-test.sh, which starts a PostgreSQL server')
}

const { Authority } = cycles
const here = dirname(fileURLToPath(import.meta.url))
const POLICY = {
  tools: [
    { name: 'write_file', tier: 1 },
    { name: 'send_email', tier: 2 },
  ],
  budgets: [{ scope: 'tenant:acme', unit: 'RISK_POINTS', allocated: 10 }],
}
const BOT = { tenant: 'acme', agent: 'bot' }

/** The server URL with a fresh schema (created on open; pg-test.sh drops its run's schemas). */
function schemaUrl(server = SERVER) {
  const run = process.env.CYCLES_PG_TEST_RUN ?? 'x'
  return `${server}?schema=t_node_${run}_${randomBytes(6).toString('hex')}`
}

async function spent(auth) {
  const b = (await auth.balances('tenant:acme')).find((b) => b.unit === 'RISK_POINTS')
  return [Number(b.spent), Number(b.reserved)]
}

test('two processes share one PostgreSQL ledger', async () => {
  const url = schemaUrl()
  const auth = await Authority.open(url, { policy: POLICY })

  const r = await auth.reserve({ tool: 'write_file', args: { path: '/tmp/a' }, subject: BOT })
  assert.deepEqual(await spent(auth), [0, 1])
  const c = await r.commit()
  assert.deepEqual(c.charged.map((a) => [a.unit, Number(a.amount)]), [['RISK_POINTS', 1]])
  const r2 = await auth.reserve({ tool: 'send_email', args: { to: 'ops' }, subject: BOT })
  await r2.commit()
  assert.deepEqual(await spent(auth), [6, 0])

  // Another process opens the same URL with the same policy: it sees this process's spending
  // (its policy budget is not re-created over it), and adds its own.
  const { stdout } = await promisify(execFile)(
    process.execPath,
    [join(here, 'pg-worker.mjs'), url, JSON.stringify(POLICY)],
    { timeout: 120_000 },
  )
  const seen = JSON.parse(stdout)
  const before = seen.before.find((b) => b.unit === 'RISK_POINTS')
  assert.deepEqual([before.allocated, before.spent, before.reserved].map(Number), [10, 6, 0])

  // ... and this process sees the other's commit.
  assert.deepEqual(await spent(auth), [7, 0])
  await assert.rejects(
    auth.reserve({ tool: 'send_email', args: { to: 'ops' }, subject: BOT }), // 5 points, 3 left
    (e) => e.code === 'BUDGET_EXCEEDED',
  )
  const report = await auth.verify()
  assert.equal(report.ok, true)
  // 2 × (reserve + commit) here, reserve + commit there, the denial, the budget's creation.
  assert.equal(Number(report.records), seen.records + 1)
  assert.equal(Number(report.records), 8)
  const kinds = (await auth.audit()).map((rec) => rec.kind)
  assert.equal(kinds.filter((k) => k === 'reserve').length, 3)
  assert.equal(kinds.filter((k) => k === 'commit').length, 3)

  // The sync form opens the same ledger too.
  const again = Authority.openSync(url, { policy: POLICY })
  const b = (again.balancesSync('tenant:acme')).find((b) => b.unit === 'RISK_POINTS')
  assert.equal(Number(b.spent), 7)
})

test('an unreachable server is LEDGER_UNAVAILABLE, another scheme INVALID_REQUEST', async () => {
  // Port 1 on loopback: nothing listens there.
  const down = 'postgres://cycles:pw@127.0.0.1:1/cycles'
  await assert.rejects(Authority.open(down, { policy: POLICY }), (e) => {
    assert.equal(e.code, 'LEDGER_UNAVAILABLE')
    assert.ok(!e.message.includes(':pw@'), e.message)
    return true
  })
  assert.throws(() => Authority.openSync(down, { policy: POLICY }), (e) => e.code === 'LEDGER_UNAVAILABLE')
  await assert.rejects(
    Authority.open('mysql://127.0.0.1/cycles', { policy: POLICY }),
    (e) => e.code === 'INVALID_REQUEST',
  )
})

/**
 * A TCP proxy to the server that runs on this process's event loop: it moves a byte only while
 * the JS thread is free.
 */
async function proxy(server) {
  const u = new URL(server)
  const upstream = { host: u.hostname, port: Number(u.port || 5432) }
  const sockets = new Set()
  let connections = 0
  const srv = net.createServer((client) => {
    connections++
    const up = net.connect(upstream)
    for (const s of [client, up]) {
      sockets.add(s)
      s.on('error', () => {})
      s.on('close', () => {
        client.destroy()
        up.destroy()
      })
    }
    client.pipe(up)
    up.pipe(client)
  })
  await new Promise((resolve) => srv.listen(0, '127.0.0.1', resolve))
  const user = u.username ? `${u.username}${u.password ? `:${u.password}` : ''}@` : ''
  return {
    url: `${u.protocol}//${user}127.0.0.1:${srv.address().port}${u.pathname}${u.search}`,
    connections: () => connections,
    close() {
      for (const s of sockets) s.destroy()
      srv.close()
    },
  }
}

test('open and every call wait for the server off the JS thread', async (t) => {
  // Every byte between the ledger and the server passes through this event loop. A binding
  // that waited for the server on the JS thread would starve the proxy, and the call would
  // end in LEDGER_UNAVAILABLE (connect timeout) instead of succeeding.
  const p = await proxy(SERVER)
  t.after(() => p.close())
  const auth = await Authority.open(schemaUrl(p.url), { policy: POLICY })
  const results = await Promise.all(
    [0, 1, 2, 3].map(async (i) => {
      const r = await auth.reserve({ tool: 'write_file', args: { i }, subject: BOT })
      return Number((await r.commit()).charged[0].amount)
    }),
  )
  assert.deepEqual(results, [1, 1, 1, 1])
  assert.deepEqual(await spent(auth), [4, 0])
  assert.equal((await auth.verify()).ok, true)
  assert.ok(p.connections() >= 1)

  // The trap works: the sync form waits on the JS thread, so the proxy cannot move its
  // bytes and the open fails closed.
  assert.throws(
    () => Authority.openSync(schemaUrl(p.url), { policy: POLICY }),
    (e) => e.code === 'LEDGER_UNAVAILABLE',
  )
})
