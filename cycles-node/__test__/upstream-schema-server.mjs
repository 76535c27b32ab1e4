// A real MCP server (the SDK's low-level Server over stdio) whose tools declare an outputSchema
// and answer with structured content that does not conform to it, or with none: the tool ran
// and returned a non-error result, which only the SDK client's own output validation (not
// the protocol) would reject. Every call is appended to the calls file given as argv[2].
import { appendFileSync } from 'node:fs'

import { Server } from '@modelcontextprotocol/sdk/server/index.js'
import { StdioServerTransport } from '@modelcontextprotocol/sdk/server/stdio.js'
import { CallToolRequestSchema, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js'

const callsFile = process.argv[2]
const record = (entry) => appendFileSync(callsFile, `${JSON.stringify(entry)}\n`)

const outputSchema = {
  type: 'object',
  properties: { count: { type: 'number' } },
  required: ['count'],
}
const server = new Server({ name: 'upstream-schema', version: '1.0.0' }, { capabilities: { tools: {} } })
server.setRequestHandler(ListToolsRequestSchema, async () => ({
  tools: [
    { name: 'count_rows', description: 'Counts rows', inputSchema: { type: 'object' }, outputSchema },
    { name: 'count_plain', description: 'Counts rows, text only', inputSchema: { type: 'object' }, outputSchema },
  ],
}))
server.setRequestHandler(CallToolRequestSchema, async (request) => {
  const { name } = request.params
  record({ event: 'call', tool: name, args: request.params.arguments ?? {} })
  if (name === 'count_rows') {
    // `count` is a string, not the number the schema says.
    return { content: [{ type: 'text', text: 'counted' }], structuredContent: { count: 'seven' } }
  }
  return { content: [{ type: 'text', text: 'counted 7 rows' }] }
})
await server.connect(new StdioServerTransport())
