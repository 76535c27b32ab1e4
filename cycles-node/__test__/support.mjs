// Shared helpers of the Node tests: loading the package, exact JSON, temp dirs.
import { createRequire } from 'node:module'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'

const require = createRequire(import.meta.url)

/** The package as users load it (cycles.js over the native index.js). */
export const cycles = require('../cycles.js')

/**
 * JSON.parse that keeps integers exact: integers beyond 2^53 become bigints (Node 20 has no
 * JSON.parse source access, and the fixtures hold i64 limits such as 9223372036854775807).
 */
export function parseExactJson(text) {
  let i = 0
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i])) i++
  }
  const fail = (what) => {
    throw new SyntaxError(`${what} at offset ${i}`)
  }
  const value = () => {
    ws()
    const c = text[i]
    if (c === '{') {
      i++
      const out = {}
      ws()
      if (text[i] === '}') return i++, out
      for (;;) {
        ws()
        if (text[i] !== '"') fail('expected a key')
        const k = string()
        ws()
        if (text[i++] !== ':') fail('expected :')
        out[k] = value()
        ws()
        if (text[i] === ',') i++
        else if (text[i] === '}') return i++, out
        else fail('expected , or }')
      }
    }
    if (c === '[') {
      i++
      const out = []
      ws()
      if (text[i] === ']') return i++, out
      for (;;) {
        out.push(value())
        ws()
        if (text[i] === ',') i++
        else if (text[i] === ']') return i++, out
        else fail('expected , or ]')
      }
    }
    if (c === '"') return string()
    if (text.startsWith('true', i)) return (i += 4), true
    if (text.startsWith('false', i)) return (i += 5), false
    if (text.startsWith('null', i)) return (i += 4), null
    const m = /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(i, i + 400))
    if (!m) fail('unexpected character')
    i += m[0].length
    if (m[2] || m[3]) return Number(m[0])
    const n = Number(m[0])
    return Number.isSafeInteger(n) ? n : BigInt(m[0])
  }
  const string = () => {
    const start = i
    i++
    while (text[i] !== '"') {
      if (text[i] === '\\') i++
      i++
      if (i >= text.length) fail('unterminated string')
    }
    i++
    return JSON.parse(text.slice(start, i))
  }
  const out = value()
  ws()
  if (i !== text.length) fail('trailing text')
  return out
}

/** A temp dir removed when the returned function is called. */
export function tempDir(prefix = 'cycles-node-') {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) }
}

/** Integers from the binding may be numbers or bigints; compare them as bigints. */
export function big(v) {
  return typeof v === 'bigint' ? v : BigInt(v)
}

/** One tool per tier, 0 to 4: the registrations the API tests share. */
export const TOOLS_BY_TIER = [
  { name: 'read_file', tier: 0 },
  { name: 'write_file', tier: 1 },
  { name: 'send_email', tier: 2 },
  { name: 'deploy', tier: 3 },
  { name: 'railway.delete_volume', tier: 4 },
]

/**
 * A real ledger outage: another process (the sqlite3 shell) takes the SQLite file's write lock
 * (`BEGIN IMMEDIATE`) and holds it until the returned `unlock()` is awaited. An authority
 * opened with a short `busyTimeoutMs` then meets LEDGER_UNAVAILABLE on every write.
 */
export async function lockLedger(path) {
  const { spawn } = await import('node:child_process')
  const sh = spawn('sqlite3', [path], { stdio: ['pipe', 'pipe', 'inherit'] })
  const exited = new Promise((resolve) => sh.on('exit', resolve))
  await new Promise((resolve, reject) => {
    let out = ''
    sh.stdout.on('data', (c) => {
      out += c
      if (out.includes('locked')) resolve()
    })
    sh.on('error', reject)
    sh.on('exit', () => reject(new Error(`sqlite3 exited before taking the lock: ${out}`)))
    sh.stdin.write("BEGIN IMMEDIATE;\nSELECT 'locked';\n")
  })
  return async () => {
    sh.stdin.end('ROLLBACK;\n.quit\n')
    await exited
  }
}
