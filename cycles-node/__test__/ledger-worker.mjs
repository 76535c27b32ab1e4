// A worker process for the multi-process test: N reserve+commit attempts on a shared SQLite
// ledger (argv: path, worker id, N, policy JSON). Prints {committed, denied, other} as JSON.
import { cycles } from './support.mjs'

const [path, id, n, policy] = process.argv.slice(2)
// Every process runs the same policy: it lives with the code, not in the ledger.
const auth = await cycles.Authority.open(path, { policy: JSON.parse(policy) })
const call = { subject: { tenant: 't', agent: `w${id}` }, tool: 'send_email', args: { n: 0 } }
const out = { committed: 0, denied: 0, other: 0 }
const pending = []
for (let i = 0; i < Number(n); i++) {
  pending.push(
    auth
      .reserve({ ...call, args: { n: i } })
      .then((r) => r.commit())
      .then(
        () => out.committed++,
        (e) => (e.code === 'BUDGET_EXCEEDED' ? out.denied++ : out.other++),
      ),
  )
}
await Promise.all(pending)
process.stdout.write(JSON.stringify(out))
