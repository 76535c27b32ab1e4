#!/usr/bin/env node
// cycles-mcp-gate: an MCP server (stdio) that stands between an MCP client and an upstream MCP
// server. It lists the upstream's tools as its own and forwards a tools/call only after the
// Cycles authority classified and reserved it; the reservation is then settled by how the
// upstream call ended (the core decides what that costs). A denial never reaches the upstream: the client gets
// an MCP tool error result carrying the reason code, so the model sees why.
//
// Unlike a budget tool offered beside the others, the agent cannot skip this: the gate is the
// only way it has to the upstream's tools.
//
//   cycles-mcp-gate --policy policy.toml --subject tenant=acme,agent=claude \
//     [--ledger cycles.db|postgres://...] [--busy-timeout-ms 10000] [--tool-prefix railway.] [--ttl-ms 60000] \
//     [--request-timeout-ms 600000] -- upstream-command [args...]

import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'
import { realpathSync } from 'node:fs'

import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StdioClientTransport } from '@modelcontextprotocol/sdk/client/stdio.js'
import { Server } from '@modelcontextprotocol/sdk/server/index.js'
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js'
import {
  CallToolRequestSchema,
  CallToolResultSchema,
  ErrorCode,
  McpError,
  ListToolsRequestSchema,
  ToolListChangedNotificationSchema,
} from '@modelcontextprotocol/sdk/types.js'

const require = createRequire(import.meta.url)
const { Authority, isCyclesError } = require('../cycles.js')

const USAGE = `usage: cycles-mcp-gate --policy FILE --subject k=v[,k=v...] [--ledger FILE|URL]
                       [--busy-timeout-ms N] [--tool-prefix PREFIX] [--ttl-ms N]
                       [--request-timeout-ms N] -- COMMAND [ARGS...]

  --policy FILE       the Cycles policy (TOML); the gate refuses to start without a valid one
  --subject k=v,...   who the agent is: tenant, workspace, app, workflow, agent, toolset
  --ledger FILE|URL   the ledger: a SQLite file (created if absent) or a postgres:// URL,
                      shared with other gates, processes and \`cycles approve\`. Without it
                      the ledger is in memory: budgets and the audit trail start afresh at
                      every start of the gate, and no approval can ever be granted
  --busy-timeout-ms N how long to wait for another process's write lock on the ledger before
                      refusing with LEDGER_UNAVAILABLE (default: 10000)
  --tool-prefix P     prefix added to upstream tool names before classification
                      (e.g. "railway." makes "delete_volume" the policy's "railway.delete_volume")
  --ttl-ms N          reservation time to live (default: the policy's)
  --request-timeout-ms N
                      how long a forwarded call may go without an answer or a progress
                      notification before the gate cancels it (INTERRUPTED; default: 600000)
  COMMAND ARGS        the upstream MCP server, spoken to over stdio`

const MAX_TIMER_MS = 2 ** 31 - 1

/** Parses the command line; throws with the usage text on a mistake. */
export function parseArgs(argv) {
  const sep = argv.indexOf('--')
  if (sep < 0 || sep === argv.length - 1) throw new Error(`the upstream command is missing\n${USAGE}`)
  const opts = { upstream: { command: argv[sep + 1], args: argv.slice(sep + 2) }, toolPrefix: '' }
  const own = argv.slice(0, sep)
  for (let i = 0; i < own.length; i += 2) {
    const [flag, value] = [own[i], own[i + 1]]
    if (value === undefined) throw new Error(`${flag} needs a value\n${USAGE}`)
    if (flag === '--policy') opts.policy = value
    else if (flag === '--ledger') opts.ledger = value
    else if (flag === '--tool-prefix') opts.toolPrefix = value
    else if (flag === '--ttl-ms' || flag === '--busy-timeout-ms' || flag === '--request-timeout-ms') {
      const ms = Number(value)
      const positive = flag !== '--busy-timeout-ms'
      // setTimeout treats more than 2^31-1 ms as 1 ms: a longer request timeout is refused.
      const tooLong = flag === '--request-timeout-ms' && ms > MAX_TIMER_MS
      if (!/^[0-9]+$/.test(value) || !Number.isSafeInteger(ms) || (positive && ms <= 0) || tooLong) {
        throw new Error(`${flag} takes milliseconds${tooLong ? ` (at most ${MAX_TIMER_MS})` : ''}, got ${value}\n${USAGE}`)
      }
      if (flag === '--ttl-ms') opts.ttlMs = ms
      else if (flag === '--busy-timeout-ms') opts.busyTimeoutMs = ms
      else opts.requestTimeoutMs = ms
    }
    else if (flag === '--subject') {
      opts.subject = {}
      for (const pair of value.split(',')) {
        const eq = pair.indexOf('=')
        if (eq <= 0) throw new Error(`--subject takes k=v pairs, got ${JSON.stringify(pair)}\n${USAGE}`)
        opts.subject[pair.slice(0, eq)] = pair.slice(eq + 1)
      }
    } else throw new Error(`unknown option ${flag}\n${USAGE}`)
  }
  if (!opts.policy) throw new Error(`--policy is required\n${USAGE}`)
  if (!opts.subject) throw new Error(`--subject is required\n${USAGE}`)
  return opts
}

/** JSON-safe copy: bigints (amounts beyond 2^53) become decimal strings. */
function jsonSafe(v) {
  return JSON.parse(JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? x.toString() : x)))
}

/**
 * Tool names the gate forwards. Anything else (the empty name, spaces, control characters,
 * globs' `*`, non-ASCII look-alikes) is refused before the ledger: with a prefix, the empty name
 * becomes "railway." and would match a policy glob "railway.*" meant for other tools.
 */
export const TOOL_NAME = /^[A-Za-z0-9_.:/-]+$/

/** A refusal of the gate's own (not the authority's), with a stable code. */
class GateRefusal extends Error {
  constructor(code, message) {
    super(message)
    this.gateCode = code
  }
}

/**
 * The tool result a client sees for a call the gate refused. `ledgerInMemory`: the gate's
 * ledger is in this process's memory, where no approver (`cycles approve`) can reach it, so an
 * approval request is never granted and the model is not told to wait for one.
 */
export function refusal(tool, err, { ledgerInMemory = false } = {}) {
  const code = isCyclesError(err) ? err.code : (err?.gateCode ?? 'GATE_ERROR')
  const d = err?.decision
  const parts = [`Cycles denied ${JSON.stringify(tool)}: ${code}. The call was not executed.`]
  if (d) {
    parts.push(`Tier ${d.tier} (${d.riskPoints} risk points).`)
    const scope = d.scope && d.balances?.find((b) => b.scope === d.scope)
    if (scope) parts.push(`Scope ${scope.scope} has ${scope.remaining} ${scope.unit} remaining.`)
    if (d.approvalRequestId && code === 'APPROVAL_REQUIRED' && ledgerInMemory) {
      // No approver can reach an in-memory ledger: waiting and retrying would never succeed.
      parts.push(`Approval request ${d.approvalRequestId} cannot be granted: this gate's ledger is in memory, so no approver can reach it. Do not wait for an approval or retry this call; tell the user that the call needs an approval and that the gate must be run with --ledger (a file or postgres:// URL that \`cycles approve\` can reach) for approvals to work.`)
    } else if (d.approvalRequestId && code === 'APPROVAL_REQUIRED') {
      // Once an approver records a grant (`cycles approve`), the same call passes the gate.
      parts.push(`Approval request ${d.approvalRequestId} awaits an approver; retry this exact call once it is approved.`)
    }
    if (d.retryAfterMs !== undefined) parts.push(`Retry after ${d.retryAfterMs} ms.`)
    if (d.message) parts.push(d.message)
  } else if (err?.message) {
    parts.push(err.message)
  }
  return {
    isError: true,
    content: [{ type: 'text', text: parts.join(' ') }],
    _meta: {
      'cycles/decision': jsonSafe({
        code,
        reasonCode: err?.reasonCode ?? null,
        decision: d ?? null,
      }),
    },
  }
}

/**
 * JSON-RPC errors by which the upstream says it did not take the call at all: it could not
 * parse the request or has no such method. (`InvalidParams` and `InvalidRequest` are not
 * among them: an upstream SDK server raises both after a tool ran too, when its result fails
 * the tool's output schema. The gate itself runs no client-side output validation: see the
 * tools/call handler.)
 */
const REFUSED = [ErrorCode.ParseError, ErrorCode.MethodNotFound]

/**
 * How a forwarded tools/call ended when the upstream did not return a result (the outcome
 * only; what it costs is the core's rule):
 * - the client cancelled it, the request timed out or the connection was lost mid-call: it is
 *   unknown whether the tool acted, so it was INTERRUPTED;
 * - the upstream could not parse the request or has no such method: NOT_STARTED;
 * - any other JSON-RPC error answer (unknown tool, bad arguments, an output that fails its
 *   schema, an internal error) is the call's failure: FAILED (the policy's `on_failure`);
 * - anything else (no answer from the upstream at all): INTERRUPTED.
 */
export function upstreamFailure(err, aborted) {
  if (aborted) return { outcome: 'INTERRUPTED', why: 'cancelled' }
  if (err instanceof McpError) {
    if (err.code === ErrorCode.ConnectionClosed) return { outcome: 'INTERRUPTED', why: 'upstream gone' }
    if (err.code === ErrorCode.RequestTimeout) return { outcome: 'INTERRUPTED', why: 'timed out' }
    if (REFUSED.includes(err.code)) return { outcome: 'NOT_STARTED', why: 'upstream refused the call' }
    return { outcome: 'FAILED', why: 'upstream error' }
  }
  return { outcome: 'INTERRUPTED', why: 'upstream error' }
}

/**
 * The gate as an MCP `Server` over a connected upstream `Client`: every tools/call goes through
 * `authority.reserve` first. Exported so it can also be embedded (any transport).
 */
export function createGate({
  authority,
  subject,
  upstream,
  toolPrefix = '',
  ttlMs,
  requestTimeoutMs = 600_000,
  retryOwedMs = 5000,
  // The authority's ledger is in this process's memory and nothing in it answers approval
  // requests (the command line gate without --ledger): see `refusal`.
  ledgerInMemory = false,
  log = () => {},
}) {
  const upstreamCaps = upstream.getServerCapabilities() ?? {}
  const server = new Server(
    { name: 'cycles-mcp-gate', version: '0.1.0' },
    { capabilities: { tools: { listChanged: Boolean(upstreamCaps.tools?.listChanged) } } },
  )

  // The upstream's tools by name: a call naming a tool the upstream does not list is refused
  // before anything is reserved (an SDK server answers it with an `isError` result, which the
  // gate could not tell from a tool that ran and failed: FAILED, charged under
  // `on_failure = "CHARGE"`). The arguments are not checked here: the upstream validates them
  // itself, and a JSON-Schema reading of its inputSchema disagrees with its own validation
  // (zod strips stray keys its listed schema forbids, coerces values, reads formats its own
  // way) in both directions. Listed in full on a miss (a tool added later), one listing at a time.
  let known = new Map()
  let listing
  const entryOf = (tool) => [tool.name, tool]
  const listAll = () => {
    listing ??= (async () => {
      const tools = new Map()
      let cursor
      do {
        const page = await upstream.listTools(cursor === undefined ? undefined : { cursor })
        for (const tool of page.tools) tools.set(...entryOf(tool))
        cursor = page.nextCursor
      } while (cursor !== undefined)
      known = tools
    })().finally(() => {
      listing = undefined
    })
    return listing
  }
  const lookUp = async (name) => {
    if (!known.has(name)) await listAll()
    return known.get(name)
  }

  server.setRequestHandler(ListToolsRequestSchema, async (request) => {
    // Re-listed from the upstream every time, so tools it adds later (tools/list_changed) are
    // listed, and gated like the others: the call handler gates whatever name it is given.
    const page = await upstream.listTools(request.params)
    for (const tool of page.tools) known.set(...entryOf(tool))
    const tools = page.tools.filter((x) => TOOL_NAME.test(x.name))
    if (tools.length !== page.tools.length) {
      const hidden = page.tools.filter((x) => !TOOL_NAME.test(x.name)).map((x) => JSON.stringify(x.name))
      log(`not listing upstream tools the gate refuses to call: ${hidden.join(', ')}`)
    }
    return { ...page, tools }
  })

  // Finalizations the ledger refused (locked, unreachable) are owed in the core
  // (`settleOrOwe`), which makes them after the next operation the ledger answers. The gate
  // asks it to retry (`retryOwed`) before each call, on a timer (`retryOwedMs`) and at
  // shutdown (`server.settleOwed()`, then `settleOwedSync()` at 'exit'), so a call that ran is
  // charged once the ledger is back instead of staying held until its TTL. The gate only says
  // how the call ended; what that costs, what is owed and the retrying are the core's.
  // `labels` only names each owed reservation's tool for the log (the core's list is the queue).
  const labels = new Map()
  let retryTimer
  const startRetrying = () => {
    if (retryTimer === undefined && retryOwedMs > 0) {
      retryTimer = setInterval(() => {
        retryOwed().catch(() => {})
      }, retryOwedMs)
      retryTimer.unref?.()
    }
  }
  // What the core still owes after a retry: those it no longer lists were made (or found
  // already finished) meanwhile.
  const stillOwed = (still) => {
    const left = new Set(still.map((o) => o.reservationId))
    for (const [id, { tool, outcome }] of labels) {
      if (!left.has(id)) {
        labels.delete(id)
        log(`finalized ${id} (${tool}) late: ${outcome}`)
      }
    }
    if (still.length === 0 && retryTimer !== undefined) {
      clearInterval(retryTimer)
      retryTimer = undefined
    }
    return still.map((o) => describeOwed(o, labels.get(o.reservationId)?.tool ?? null))
  }
  // Settlements under way: the shutdown path waits for them (a call cut off when the upstream
  // exits is being settled just then) before it retries what is owed.
  const pending = new Set()
  const finalize = (reservation, outcome, reason, tool) => {
    const p = settleOnce(reservation, outcome, reason, tool)
    pending.add(p)
    p.finally(() => pending.delete(p))
    return p
  }
  const settleOnce = async (reservation, outcome, reason, tool) => {
    const id = reservation.reservationId
    try {
      if ((await reservation.settleOrOwe({ outcome, reason })) !== null) return true
    } catch (err) {
      // Refused otherwise (bad input, already finalized): nothing to owe.
      log(`finalizing ${id} (${tool}) failed: ${err?.code ?? err}`)
      return false
    }
    labels.set(id, { tool, outcome })
    const owed = authority.owedSettlements().find((o) => o.reservationId === id)
    log(`finalizing ${id} (${tool}) failed: LEDGER_UNAVAILABLE (owed${owed ? `: ${owed.lastError}` : ''})`)
    startRetrying()
    return false
  }
  const retryOwed = async () => stillOwed(await authority.retryOwed())
  // At shutdown: the settlements under way end first (each owed if the ledger refuses it).
  const settleOwed = async () => {
    while (pending.size) await Promise.allSettled([...pending])
    return retryOwed()
  }
  // The last chance, synchronous (a process 'exit' listener cannot await): each once more.
  const settleOwedSync = () => stillOwed(authority.retryOwedSync())
  server.setRequestHandler(CallToolRequestSchema, async (request, extra) => {
    const { name } = request.params
    const args = request.params.arguments ?? {}
    const tool = `${toolPrefix}${name}`
    if (typeof name !== 'string' || !TOOL_NAME.test(name)) {
      log(`deny ${JSON.stringify(tool)}: INVALID_TOOL_NAME`)
      return refusal(tool, new GateRefusal('INVALID_TOOL_NAME', 'Tool names are one or more of A-Z a-z 0-9 _ . : / -.'))
    }
    let listed
    try {
      listed = await lookUp(name)
    } catch (err) {
      // Fail closed: without the upstream's list the gate cannot tell a tool that exists.
      log(`deny ${tool}: cannot list the upstream's tools (${err?.message ?? err})`)
      return refusal(tool, new GateRefusal('UPSTREAM_UNAVAILABLE', `The upstream's tools could not be listed: ${err?.message ?? err}`))
    }
    if (listed === undefined) {
      log(`deny ${tool}: UNKNOWN_TOOL`)
      return refusal(tool, new GateRefusal('UNKNOWN_TOOL', `The upstream server has no tool ${JSON.stringify(name)}.`))
    }
    if (authority.owedSettlements().length) await retryOwed()
    let reservation
    try {
      const req = { subject, tool, args }
      if (ttlMs !== undefined) req.ttlMs = ttlMs
      reservation = await authority.reserve(req)
    } catch (err) {
      // Fail closed: a denial, bad input or a broken ledger all stop the call here.
      log(`deny ${tool}: ${err?.code ?? err}`)
      return refusal(tool, err, { ledgerInMemory })
    }
    if (extra.signal.aborted) {
      // The client cancelled while the gate was reserving: the call is never sent.
      const done = await finalize(reservation, 'NOT_STARTED', 'cancelled before it was sent', tool)
      log(`cancelled ${tool} before sending it: ${done ? 'settled NOT_STARTED' : 'finalization owed'}`)
      return {
        isError: true,
        content: [{ type: 'text', text: `The call to ${JSON.stringify(name)} was cancelled before it was sent upstream.` }],
      }
    }
    if (typeof upstream.isToolTaskRequired === 'function' && upstream.isToolTaskRequired(name)) {
      // What Client#callTool refuses before sending anything: the call is never sent.
      const done = await finalize(reservation, 'NOT_STARTED', 'requires task-based execution', tool)
      log(`not sending ${tool} (requires task-based execution): ${done ? 'settled NOT_STARTED' : 'finalization owed'}`)
      return {
        isError: true,
        content: [{ type: 'text', text: `The upstream tool ${JSON.stringify(name)} requires task-based execution, which the gate does not forward. The call was not executed.` }],
      }
    }
    let result
    try {
      // Cancelling the client's request aborts extra.signal, which makes the SDK send
      // notifications/cancelled on to the upstream and reject here. A plain request rather
      // than `Client#callTool`: callTool validates the result against the tool's output schema
      // after the upstream answered, and would turn a tool that ran and succeeded into an
      // error (a FAILED call, released under the default policy, that the client would retry).
      // The upstream's result is forwarded as it is; the client validates it if it wants to.
      // The SDK's own default (60 s) would cut off a long call whatever the client allows:
      // `requestTimeoutMs` instead, restarted by each progress notification from the upstream,
      // which is passed on to the client under the client's own progress token.
      const clientToken = request.params._meta?.progressToken
      result = await upstream.request({ method: 'tools/call', params: request.params }, CallToolResultSchema, {
        signal: extra.signal,
        timeout: requestTimeoutMs,
        resetTimeoutOnProgress: true,
        onprogress: (progress) => {
          if (clientToken === undefined) return
          extra.sendNotification({ method: 'notifications/progress', params: { ...progress, progressToken: clientToken } })
            .catch(() => {})
        },
      })
    } catch (err) {
      const { outcome, why } = upstreamFailure(err, extra.signal.aborted)
      const done = await finalize(reservation, outcome, why, tool)
      log(`${why} ${tool}: ${done ? `settled ${outcome}` : 'finalization owed'} (${err?.message ?? err})`)
      const text = outcome === 'INTERRUPTED'
        ? `The call to ${JSON.stringify(name)} was sent to the upstream server and stopped before it answered (${why}: ${err?.message ?? err}). It may have acted: check before retrying it.`
        : `The upstream server failed on ${JSON.stringify(name)}: ${err?.message ?? err}`
      return { isError: true, content: [{ type: 'text', text }] }
    }
    // The call already ran; its result reaches the client even if the ledger cannot record it.
    // A tool error result is the tool's own failure report.
    const outcome = result.isError ? 'FAILED' : 'COMPLETED'
    await finalize(reservation, outcome, result.isError ? 'upstream tool error' : undefined, tool)
    return result
  })

  if (upstreamCaps.tools?.listChanged) {
    upstream.setNotificationHandler(ToolListChangedNotificationSchema, () => {
      known = new Map() // listed again at the next call
      return server.sendToolListChanged()
    })
  }
  // For the embedder's shutdown path: settle what the ledger refused before, and say what is
  // still owed (each `{ reservationId, tool, outcome, reason, lastError, attempts }`, read
  // from the authority's `owedSettlements()`; `tool` is null for one the gate did not owe) so
  // it can be logged.
  server.settleOwed = settleOwed
  server.settleOwedSync = settleOwedSync
  return server
}

/** An owed settlement of the core (`owedSettlements()`) as the gate reports it. */
const describeOwed = (o, tool) => ({
  reservationId: o.reservationId,
  tool,
  outcome: o.request.outcome,
  reason: o.request.reason ?? null,
  lastError: o.lastError,
  attempts: o.attempts,
})

async function main(argv) {
  const log = (msg) => process.stderr.write(`cycles-mcp-gate: ${msg}\n`)
  let opts
  try {
    opts = parseArgs(argv)
  } catch (e) {
    log(e.message)
    return 2
  }
  let authority
  try {
    // The policy and ledger are checked before the upstream starts: no gate, no tools.
    authority = opts.ledger
      ? await Authority.open(opts.ledger, {
          policy: opts.policy,
          ...(opts.busyTimeoutMs !== undefined && { busyTimeoutMs: opts.busyTimeoutMs }),
        })
      : Authority.inMemory({ policy: opts.policy })
  } catch (e) {
    log(`refusing to start: ${e.code ?? ''} ${e.message}`)
    return 1
  }
  const upstream = new Client({ name: 'cycles-mcp-gate', version: '0.1.0' })
  try {
    await upstream.connect(
      new StdioClientTransport({ ...opts.upstream, env: { ...process.env }, stderr: 'inherit' }),
    )
  } catch (e) {
    log(`cannot reach the upstream server ${JSON.stringify(opts.upstream.command)}: ${e.message}`)
    return 1
  }
  const ledgerInMemory = !opts.ledger
  const server = createGate({ ...opts, authority, upstream, log, ledgerInMemory })
  const transport = new StdioServerTransport()
  // The gate stops when either side goes away: the upstream exits, the client closes the
  // transport or its stdin (the SDK client ends stdin, then sends SIGTERM), or a signal.
  const done = new Promise((resolve) => {
    server.onclose = resolve
    upstream.onclose = resolve
    process.stdin.once('end', resolve)
    process.once('SIGTERM', resolve)
    process.once('SIGINT', resolve)
  })
  // Whatever way the process ends with an 'exit' (process.exit, an uncaught exception), the
  // settlements the ledger refused get one last synchronous try, and what is left is logged.
  process.once('exit', () => logStillOwed(log, server.settleOwedSync()))
  await server.connect(transport)
  log(`gating ${opts.upstream.command} for ${JSON.stringify(opts.subject)} (${authority.ledger})`)
  if (ledgerInMemory) {
    log('WARNING: no --ledger: the ledger is in memory. Budgets and the audit trail start afresh ' +
      'every time the gate starts and are lost when it exits, and approvals cannot be granted ' +
      'from outside (`cycles approve` cannot reach it): a call that needs one is refused for good. ' +
      'Run the gate with --ledger FILE (or a postgres:// URL).')
  }
  await done
  await Promise.allSettled([upstream.close(), server.close()])
  await new Promise((resolve) => setImmediate(resolve))
  // A call cut off by the close was just settled (or queued as owed): retry what is owed; the
  // 'exit' listener tries what is left once more and logs it.
  await server.settleOwed()
  return 0
}

function logStillOwed(log, still) {
  for (const o of still) {
    log(`NOT SETTLED: reservation ${o.reservationId} (${o.tool}) ${o.outcome}${o.reason ? ` (${o.reason})` : ''}: the ledger refused it (${o.lastError}); settle it by hand (Authority#settle(reservationId, { outcome })) or its hold expires with its TTL, uncharged`)
  }
}

const invokedDirectly = (() => {
  try {
    return import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href
  } catch {
    return false
  }
})()
if (invokedDirectly) {
  main(process.argv.slice(2)).then((code) => process.exit(code))
}
