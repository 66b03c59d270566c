import { Readable } from 'node:stream'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { type Static, Type } from '@sinclair/typebox'
import { principalOf } from '../auth/auth.hook.js'
import { ListQuery } from '../contacts/search.schemas.js'
import { type SearchEngine, searchFromQuery } from '../contacts/search.service.js'
import { iterateWithBulkHeapGrowth } from '../shared/heap-growth.js'
import { errorResponses, StringEnum } from '../shared/schemas.js'
import { type ExportFormat, exportContacts } from './exports.service.js'

const { page: _page, size: _size, limit: _limit, cursor: _cursor, ...filters } = ListQuery.properties

export const ExportQuery = Type.Object(
  {
    format: Type.Optional(
      StringEnum(['csv', 'ndjson'] as const, {
        description: 'csv (the default) or ndjson: one contact per line.',
      }),
    ),
    ...filters,
  },
  { additionalProperties: Type.Union([Type.String(), Type.Array(Type.String())]) },
)
type ExportQuery = Static<typeof ExportQuery>

const MEDIA_TYPES: Record<ExportFormat, string> = {
  csv: 'text/csv; charset=utf-8',
  ndjson: 'application/x-ndjson; charset=utf-8',
}

export const exportRoutes: FastifyPluginAsyncTypebox<{ engine: SearchEngine }> = async (app, { engine }) => {
  app.get(
    '/contact/export',
    {
      schema: {
        tags: ['Import and export'],
        operationId: 'export_contacts_api_v1_contact_export_get',
        summary: 'Export contacts as CSV or NDJSON',
        description: `Every contact of the organization, or those the filters select (the same filters, \`q\` and \`sort\` as \`GET /contact\`), streamed a page at a time: any number of contacts in constant memory.

CSV columns, always in this order: \`id, first_name, last_name, email, phone_number\` (the telephone channel), \`external_id, channels, user_attributes\` (JSON), \`last_seen, last_sent, first_assistant_id, last_assistant_id, first_widget_id, last_widget_id, created_at, updated_at\`, then \`custom_fields.<name>\` for each defined custom field by name, then \`custom_fields\` (JSON) for values without a definition. The file imports back as it is. NDJSON lines are contacts as \`GET /contact/{contact_id}\` returns them.`,
        querystring: ExportQuery,
        response: {
          200: Type.Unsafe<unknown>({
            description: 'The contacts.',
            content: {
              'text/csv': { schema: { type: 'string' } },
              'application/x-ndjson': { schema: { type: 'string' } },
            },
          }),
          ...errorResponses(401, 422),
        },
      },
    },
    async (request, reply) => {
      const { orgId } = principalOf(request)
      const { format = 'csv', ...rest } = request.query as ExportQuery
      // Read before anything is sent, so that a bad filter is still a 422.
      const search = await searchFromQuery(engine.db, orgId, rest as Parameters<typeof searchFromQuery>[2])
      const day = new Date().toISOString().slice(0, 10)
      return reply
        .type(MEDIA_TYPES[format])
        .header('content-disposition', `attachment; filename="contacts-${day}.${format}"`)
        .send(Readable.from(iterateWithBulkHeapGrowth(exportContacts(engine, orgId, search, format))))
    },
  )
}
