// A real MCP server (the SDK's McpServer over stdio) standing in for an infrastructure API.
// Every tool call is appended to the calls file given as argv[2] before the tool does anything,
// so a test can prove which calls reached it. A "started" line is written at startup.
import { appendFileSync } from 'node:fs'

import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js'
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

await server.connect(new StdioServerTransport())
