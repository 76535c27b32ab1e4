#!/usr/bin/env node
// decide and reserve+commit per call through the Node binding, on the same setup as the Rust
// bench (cycles-core/benches/authority.rs): a subject with three budgeted scopes, `read_file`
// (tier 0) for decide, `write_file` (tier 1) for reserve+commit. Prints a markdown table.
//
//   npm run build --prefix cycles-node     # release build of the addon first
//   node benches/node/bench.mjs [--quick]
//
// Each figure is per call: the median over batches of the mean time per call in a batch (so
// timer overhead is amortised), plus calls/s from the same batches. The Promise rows await
// each call in turn (latency, thread-pool hop included); the "64 in flight" rows keep 64
// Promise calls outstanding (throughput an event loop sees). "core" is the same operation on
// the same authority run in a Rust loop inside this process (the binding's bench hook), so the
// overhead column compares like with like even on a busy machine; the target of the issue is
// binding <= 2 x core + 1 us.
import { createRequire } from 'node:module'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir, cpus } from 'node:os'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const require = createRequire(import.meta.url)
const { Authority } = require(join(here, '../../cycles-node/cycles.js'))

const quick = process.argv.includes('--quick')
const BIG = 2n ** 61n // i64::MAX / 4, as in the Rust bench
const POLICY = {
  tools: [
    { name: 'read_file', tier: 0 },
    { name: 'write_file', tier: 1 },
  ],
  budgets: ['tenant:acme', 'tenant:acme/workflow:w1', 'tenant:acme/workflow:w1/agent:bot'].map((scope) => ({
    scope,
    unit: 'RISK_POINTS',
    allocated: BIG,
  })),
}
const SUBJECT = { tenant: 'acme', workflow: 'w1', agent: 'bot' }
const DECIDE = { subject: SUBJECT, tool: 'read_file', args: { path: 'src/lib.rs' } }
const RESERVE = { subject: SUBJECT, tool: 'write_file', args: { path: 'notes.md' } }

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]
}

/** Runs `batch` (n calls, possibly async) `batches` times after a warm-up; ns per call. */
async function measure(batch, n, batches) {
  await batch(Math.max(10, n >> 2)) // warm-up
  const perCall = []
  for (let i = 0; i < batches; i++) {
    const t0 = process.hrtime.bigint()
    await batch(n)
    perCall.push(Number(process.hrtime.bigint() - t0) / n)
  }
  const mean = perCall.reduce((a, b) => a + b, 0) / perCall.length
  return { p50: median(perCall), mean }
}

/** ns per call of the same operation run by the core in a Rust loop (no JS in between). */
async function core(auth, op, request, n, batches) {
  auth.__benchCore(op, request, Math.max(10, n >> 2)) // warm-up
  const xs = []
  for (let i = 0; i < batches; i++) xs.push(auth.__benchCore(op, request, n))
  return median(xs)
}

function cases(auth, fileBacked) {
  const n = quick ? (fileBacked ? 100 : 2_000) : fileBacked ? 400 : 20_000
  const batches = quick ? 5 : fileBacked ? 15 : 25
  const rows = [
    ['decide', 'Sync', (k) => { for (let i = 0; i < k; i++) auth.decideSync(DECIDE) }],
    ['decide', 'Promise', async (k) => { for (let i = 0; i < k; i++) await auth.decide(DECIDE) }],
    ['reserve+commit', 'Sync', (k) => { for (let i = 0; i < k; i++) auth.reserveSync(RESERVE).commitSync() }],
    ['reserve+commit', 'Promise', async (k) => { for (let i = 0; i < k; i++) await (await auth.reserve(RESERVE)).commit() }],
    [
      'reserve+commit',
      'Promise, 64 in flight',
      async (k) => {
        let next = 0
        const lane = async () => {
          while (next++ < k) await (await auth.reserve(RESERVE)).commit()
        }
        await Promise.all(Array.from({ length: 64 }, lane))
      },
    ],
  ]
  return rows.map(([op, form, fn]) => ({ op, form, fn, n, batches, request: op === 'decide' ? DECIDE : RESERVE }))
}

const fmtUs = (ns) => (ns / 1000).toFixed(ns < 10_000 ? 2 : 1)
const fmtRate = (ns) => Math.round(1e9 / ns).toLocaleString('en-US')

const out = []
out.push('| operation | ledger | form | p50 µs/call | mean µs/call | calls/s | core µs/call | overhead µs | ≤ 2×core+1µs |')
out.push('|---|---|---|---:|---:|---:|---:|---:|:-:|')
const dir = mkdtempSync(join(tmpdir(), 'cycles-node-bench-'))
try {
  const ledgers = [
    ['memory', () => Authority.inMemory({ policy: POLICY }), false],
    ['SQLite FULL', () => Authority.openSync(join(dir, 'full.db'), { policy: POLICY, synchronous: 'FULL' }), true],
    ['SQLite NORMAL', () => Authority.openSync(join(dir, 'normal.db'), { policy: POLICY, synchronous: 'NORMAL' }), true],
  ]
  for (const [label, make, fileBacked] of ledgers) {
    const auth = make()
    const coreNs = {}
    for (const c of cases(auth, fileBacked)) {
      coreNs[c.op] ??= await core(auth, c.op, c.request, c.n, c.batches)
      const { p50, mean } = await measure(c.fn, c.n, c.batches)
      const base = coreNs[c.op]
      const met = c.form.includes('in flight') ? '–' : p50 <= 2 * base + 1000 ? 'yes' : 'no'
      out.push(
        `| ${c.op} | ${label} | ${c.form} | ${fmtUs(p50)} | ${fmtUs(mean)} | ${fmtRate(p50)} | ${fmtUs(base)} | ${fmtUs(p50 - base)} | ${met} |`,
      )
      process.stderr.write(`${out.at(-1)}\n`)
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true })
}
const cpu = cpus()[0]?.model ?? 'unknown CPU'
console.log(out.join('\n'))
console.log(`\nNode ${process.version}, ${cpus().length} × ${cpu}, UV_THREADPOOL_SIZE=${process.env.UV_THREADPOOL_SIZE ?? 4}${quick ? ', --quick' : ''}`)
