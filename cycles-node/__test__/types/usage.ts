// Compiled (never run) by types.test.mjs: the published types must describe real use.
import {
  Authority,
  ManualClock,
  guard,
  isCyclesError,
  type ApprovalAnswer,
  type ApprovalRequest,
  type Balance,
  type CallOutcome,
  type CommitResult,
  type ReleaseResult,
  type Decision,
  type Explanation,
  type OwedSettlement,
  type ReserveRequest,
} from '../../cycles'

declare function use(...xs: unknown[]): void

async function main(): Promise<void> {
  const auth = Authority.inMemory({ policy: { tools: [{ name: 'read_file', tier: 0 }] }, clock: new ManualClock(0) })
  const file: Authority = await Authority.open('ledger.db', { policy: 'policy.toml', synchronous: 'NORMAL' })
  const req: ReserveRequest = {
    subject: { tenant: 'acme', agent: 'bot' },
    tool: 'read_file',
    args: { path: 'a' },
    estimate: [{ unit: 'TOKENS', amount: 10n }],
    ttlMs: 5000,
  }
  const d: Decision = await auth.decide(req)
  const kind: 'ALLOW' | 'ALLOW_WITH_CAPS' | 'DENY' = d.decision
  const r = await file.reserve(req)
  const c = await r.commit({ actual: [{ unit: 'TOKENS', amount: 3 }] })
  const b: Balance[] = c.balances
  const outcome: CallOutcome = 'INTERRUPTED'
  const settled: CommitResult | ReleaseResult = await r.settle({ outcome, reason: 'stopped' })
  const byId = auth.settleSync(r.reservationId, { outcome: 'COMPLETED', actual: [{ unit: 'TOKENS', amount: 1n }], idempotencyKey: 'k' })
  if (byId.status === 'RELEASED') use(byId.released)
  use(settled.status, (await auth.settle(r.reservationId, { outcome: 'NOT_STARTED' })).balances)
  const maybe: CommitResult | ReleaseResult | null = await r.settleOrOwe({ outcome: 'COMPLETED' })
  if (maybe === null) use(file.settleOrOweSync(r.reservationId, { outcome: 'FAILED' })?.status)
  const owed: OwedSettlement[] = [...file.owedSettlements(), ...(await file.retryOwed()), ...file.retryOwedSync()]
  use(owed[0].reservationId, owed[0].request.outcome, owed[0].attempts, owed[0].lastError, owed[0].sinceMs)
  const left: number | bigint = b[0].remaining
  try {
    auth.reserveSync(req)
  } catch (e) {
    if (isCyclesError(e)) {
      const code: string = e.code
      const reason = e.reasonCode
      use(code, reason, e.decision?.riskPoints)
    }
  }
  const guarded = guard(async (x: { path: string }) => x.path.length, { authority: auth, subject: { agent: 'bot' }, tool: 'read_file' })
  const n: number = await guarded({ path: 'abc' })
  const viaMethod = auth.guard(async (s: string) => s, { subject: { agent: 'bot' }, tool: 'read_file' })
  const s: string = await viaMethod('x')
  const lines = auth.guard(function read_file(n: number) {
    return (async function* () {
      for (let i = 0; i < n; i++) yield `line ${i}`
    })()
  }, { subject: { agent: 'bot' } })
  for await (const line of await lines(2)) {
    const l: string = line
    use(l)
  }
  const steps = auth.guard(function deploy(hosts: string[]) {
    return (function* () {
      yield* hosts
    })()
  }, { subject: { agent: 'bot' } })
  for (const h of await steps(['a'])) {
    const x: string = h
    use(x)
  }
  const values = auth.guard(function read_file() {
    return ['a'].values()
  }, { subject: { agent: 'bot' } })
  for (const v of await values()) use(v.length)
  for await (const rec of auth.iterAudit({ kinds: ['commit'] })) use(rec.seq, rec.hash)
  use(kind, left, n, s, (await auth.verify()).ok, auth.nowMs)
  const pending: ApprovalRequest[] = await auth.approvals('PENDING')
  const first: ApprovalRequest = auth.approvalSync(pending[0].request_id)
  const answer: ApprovalAnswer = 'pending'
  const after: ApprovalRequest = await auth.recordApproval(first.request_id, answer)
  use(after.status === 'GRANTED', after.grant?.scope, after.call.name)
  const e: Explanation = auth.explain({ tool: 'read_file', args: { path: 'a' }, scope: 'tenant:acme' })
  use(e.tier, e.rules, e.approvalRequired, e.deny?.reasonCode)
  const anchor: string | null = await auth.auditAnchor()
  if (anchor !== null) use((await auth.verify({ anchors: [anchor] })).ok, auth.verifySync().firstBroken?.seq)
}

// @ts-expect-error: approval statuses are a closed set
void (async (a: Authority) => a.approvals('WAITING'))

// @ts-expect-error: a reserve request needs a subject
const bad: ReserveRequest = { tool: 'x' }
// @ts-expect-error: units are a closed set
const badUnit: ReserveRequest = { subject: {}, tool: 'x', estimate: [{ unit: 'DOLLARS', amount: 1 }] }
// @ts-expect-error: outcomes are a closed set
void ((a: Authority) => a.settleSync('rsv_x', { outcome: 'DONE' }))
// @ts-expect-error: settleOrOwe may resolve to null (owed)
void (async (a: Authority) => (await a.settleOrOwe('rsv_x', { outcome: 'COMPLETED' })).status)
// @ts-expect-error: settle needs an outcome
void ((a: Authority) => a.settle('rsv_x', {}))
// @ts-expect-error: explain takes no subject
void ((a: Authority) => a.explain({ tool: 'x', subject: {} }))
void main
void bad
void badUnit
