// The second process of the PostgreSQL test (argv: URL, policy JSON): prints the balances it
// finds, then reserves and commits one tier 1 call, and prints the chain length it verifies.
import { cycles } from '../__test__/support.mjs'

const [url, policy] = process.argv.slice(2)
const auth = await cycles.Authority.open(url, { policy: JSON.parse(policy) })
const before = await auth.balances('tenant:acme')
const r = await auth.reserve({ tool: 'write_file', args: { path: '/tmp/b' }, subject: { tenant: 'acme', agent: 'other' } })
await r.commit()
const report = await auth.verify()
process.stdout.write(JSON.stringify({ before, records: Number(report.records) }))
