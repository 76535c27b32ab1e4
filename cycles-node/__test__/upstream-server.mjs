// A real MCP server (the SDK's McpServer over stdio) standing in for an infrastructure API.
// Every tool call is appended to the calls file given as argv[2] before the tool does anything,
// so a test can prove which calls reached it. A "started" line is written at startup.
import { appendFileSync, existsSync } from 'node:fs'

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js'
import { ErrorCode, McpError } from '@modelcontextprotocol/sdk/types.js'
import { z } from 'zod'

const callsFile = process.argv[2]
const record = (entry) => appendFileSync(callsFile, `${JSON.stringify(entry)}\n`)
record({ event: 'started', pid: process.pid })

const server = new McpServer({ name: 'upstream-infra', version: '1.0.0' })

server.registerTool(
  'read_file',
  { description: 'Reads a file', inputSchema: { path: z.string() } },
  async ({ path }) => {
    record({ event: 'call', tool: 'read_file', args: { path } })
    return { content: [{ type: 'text', text: `contents of ${path}` }] }
  },
)

server.registerTool(
  'write_note',
  { description: 'Writes a note', inputSchema: { text: z.string() } },
  async ({ text }) => {
    record({ event: 'call', tool: 'write_note', args: { text } })
    return { content: [{ type: 'text', text: `noted: ${text}` }] }
  },
)

server.registerTool(
  'delete_volume',
  { description: 'Deletes a volume and everything on it', inputSchema: { volume_id: z.string() } },
  async ({ volume_id }) => {
    record({ event: 'call', tool: 'delete_volume', args: { volume_id } })
    return { content: [{ type: 'text', text: `volume ${volume_id} deleted` }] }
  },
)

server.registerTool(
  'flaky',
  { description: 'Always fails', inputSchema: {} },
  async () => {
    record({ event: 'call', tool: 'flaky', args: {} })
    throw new Error('flaky failed on purpose')
  },
)

// Answers with a JSON-RPC error rather than a tool error result: McpServer passes this one code
// through unwrapped (every other error a tool raises becomes an `isError` result).
server.registerTool(
  'needs_consent',
  { description: 'Fails with a JSON-RPC error', inputSchema: {} },
  async () => {
    record({ event: 'call', tool: 'needs_consent', args: {} })
    throw new McpError(ErrorCode.UrlElicitationRequired, 'the user must consent first')
  },
)

// Runs until the file named by `gate` exists, so a test decides when it finishes; if the
// caller cancels first (the SDK aborts `signal` on notifications/cancelled) it stops and says so.
server.registerTool(
  'slow',
  { description: 'Works until released', inputSchema: { id: z.string(), gate: z.string() } },
  async ({ id, gate }, { signal }) => {
    record({ event: 'call', tool: 'slow', args: { id } })
    while (!existsSync(gate)) {
      if (signal.aborted) {
        record({ event: 'aborted', tool: 'slow', args: { id } })
        throw new Error(`slow ${id} cancelled`)
      }
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
    record({ event: 'finished', tool: 'slow', args: { id } })
    return { content: [{ type: 'text', text: `slow ${id} done` }] }
  },
)

// Reports progress three times (to the progress token the caller's request carried), then
// answers. After each report it waits until the file `${gate}${i}` exists, so a test can let
// it go on only once it saw that report (the SDK handles a response that arrives together with
// progress notifications before them, and would drop those).
server.registerTool(
  'progress',
  { description: 'Reports progress', inputSchema: { gate: z.string() } },
  async ({ gate }, extra) => {
    record({ event: 'call', tool: 'progress', args: {} })
    const progressToken = extra._meta?.progressToken
    for (let i = 1; i <= 3; i++) {
      if (progressToken !== undefined) {
        await extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress: i, total: 3, message: `step ${i}` } })
      }
      while (!existsSync(`${gate}${i}`)) await new Promise((resolve) => setTimeout(resolve, 10))
    }
    return { content: [{ type: 'text', text: 'progress done' }] }
  },
)

// Acts, then, once the file named by `gate` exists, the server dies mid-call (never answers).
server.registerTool('crash', { description: 'Dies mid-call', inputSchema: { gate: z.string() } }, async ({ gate }) => {
  record({ event: 'call', tool: 'crash', args: {} })
  while (!existsSync(gate)) await new Promise((resolve) => setTimeout(resolve, 10))
  process.exit(1)
})

// Records only the size of what it got (the large-argument test sends megabytes).
server.registerTool(
  'measure',
  { description: 'Measures its input', inputSchema: { text: z.string() } },
  async ({ text }) => {
    record({ event: 'call', tool: 'measure', args: { length: text.length } })
    return { content: [{ type: 'text', text: `measured ${text.length}` }] }
  },
)

// Registers a tool after the session started: the SDK then sends tools/list_changed.
server.registerTool('add_tools', { description: 'Adds tools', inputSchema: {} }, async () => {
  record({ event: 'call', tool: 'add_tools', args: {} })
  for (const name of ['late_read', 'late_wipe']) {
    server.registerTool(name, { description: `added later: ${name}`, inputSchema: {} }, async () => {
      record({ event: 'call', tool: name, args: {} })
      return { content: [{ type: 'text', text: `${name} ran` }] }
    })
  }
  return { content: [{ type: 'text', text: 'added' }] }
})

// Tools whose names a policy glob could rate gently: the empty name (with a prefix "railway."
// it becomes "railway.") and names with characters outside [A-Za-z0-9_.:/-].
for (const name of ['', 'wipe all*', 'wipe\u0000volume']) {
  server.registerTool(name, { description: `oddly named: ${JSON.stringify(name)}`, inputSchema: {} }, async () => {
    record({ event: 'call', tool: name, args: {} })
    return { content: [{ type: 'text', text: `${JSON.stringify(name)} ran` }] }
  })
}

await server.connect(new StdioServerTransport())
