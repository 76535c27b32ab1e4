// The published types (generated index.d.ts + hand-written cycles.d.ts) compile a program that
// uses them, under `strict`, and reject misuse (the @ts-expect-error lines in usage.ts).
import test from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc')

test('index.d.ts and cycles.d.ts type-check real usage under strict', () => {
  const run = spawnSync(process.execPath, [tsc, '-p', join(here, 'types', 'tsconfig.json')], {
    encoding: 'utf8',
    timeout: 120_000,
  })
  assert.equal(run.status, 0, `${run.stdout}${run.stderr}`)
})
