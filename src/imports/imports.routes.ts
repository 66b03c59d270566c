import { Readable } from 'node:stream'
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { Kysely } from 'kysely'
import { principalOf } from '../auth/auth.hook.js'
import type { Database } from '../db/schema.js'
import { AppError } from '../errors.js'
import type { CursorCodec } from '../shared/cursor.js'
import { Envelope, envelope, errorResponses } from '../shared/schemas.js'
import { ImportJob, ImportJobPage, ImportJobParams, ImportListQuery, ImportQuery } from './imports.schemas.js'
import * as imports from './imports.service.js'

const tags = ['Import and export']

/** The body types an import reads as CSV; each arrives as a stream, never buffered whole. */
const CSV_TYPES = ['text/csv', 'application/csv', 'text/plain', 'application/octet-stream']

export const importRoutes: FastifyPluginAsyncTypebox<{
  db: Kysely<Database>
  cursors: () => Promise<CursorCodec>
  maxBytes: number
  /** Nudges this process's import runner, if it has one, so a queued job starts at once. */
  jobQueued: () => void
}> = async (app, { db, cursors, maxBytes, jobQueued }) => {
  // Scoped to this plugin: only the import route takes its body as a stream.
  app.addContentTypeParser(CSV_TYPES, (_request, payload, done) => done(null, payload))

  app.post(
    '/contact/import',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'import_contacts_api_v1_contact_import_post',
        summary: 'Import contacts from a CSV file',
        description: `Send the file as the body (\`Content-Type: text/csv\`); it is streamed into storage, so its size is bounded by IMPORT_MAX_BYTES (1 GiB by default), not by memory. The answer (202) is the queued job; follow it with \`GET /contact/import/{job_id}\`.

The first line is the header. Each row is an upsert matched on \`email\` (case-insensitively), \`phone_number\` (in E.164) or \`external_id\`: a known person is updated, anyone else created. Empty cells leave a field as it is; \`custom_fields\`, \`user_attributes\` and \`channels\` are merged key by key. A row that would change nothing writes nothing, so importing a file again reports every row as unchanged. A row that cannot be imported (a malformed value, an unreadable line, an identity held by another contact) is skipped with its reason, and the rest go on. UTF-8, with or without a byte order mark; CRLF or LF line ends; quoted fields may hold delimiters and line breaks.`,
        querystring: ImportQuery,
        body: Type.Unsafe<Readable>({
          description: 'The CSV file.',
          content: { 'text/csv': { schema: { type: 'string' } } },
        }),
        response: {
          202: Envelope(ImportJob, 'created'),
          ...errorResponses(401, 403, 413, 415, 422),
        },
      },
      // The body is a stream here: no schema validates it, the import reads it.
      validatorCompiler: ({ httpPart }) => (httpPart === 'body' ? () => true : (undefined as never)),
    },
    async (request, reply) => {
      const body = request.body as unknown
      if (!(body instanceof Readable)) {
        throw new AppError(
          'unsupported_media_type',
          `Send the file as text/csv, not ${request.headers['content-type']}`,
        )
      }
      const job = await imports.receiveImport(db, principalOf(request), body, request.query, { maxBytes })
      jobQueued()
      return reply.code(202).send(envelope('created', job))
    },
  )

  app.get(
    '/contact/import',
    {
      schema: {
        tags,
        operationId: 'list_imports_api_v1_contact_import_get',
        summary: 'List import jobs',
        description: 'The organization’s import jobs, newest first, a page at a time (`limit`, `cursor`).',
        querystring: ImportListQuery,
        response: { 200: Envelope(ImportJobPage, 'retrieved'), ...errorResponses(401, 422) },
      },
    },
    async (request) =>
      envelope(
        'retrieved',
        await imports.listImportJobs(db, cursors, principalOf(request).orgId, request.query),
      ),
  )

  app.get(
    '/contact/import/:job_id',
    {
      schema: {
        tags,
        operationId: 'read_import_api_v1_contact_import__job_id__get',
        summary: 'Follow an import job',
        description:
          'The job’s status and progress: `bytes_read` of `bytes`, and the rows read so far as created, updated, unchanged and failed. Counts only grow, and each batch of rows is counted when it is committed.',
        params: ImportJobParams,
        response: { 200: Envelope(ImportJob, 'retrieved'), ...errorResponses(401, 404, 422) },
      },
    },
    async (request) =>
      envelope(
        'retrieved',
        await imports.getImportJob(db, principalOf(request).orgId, request.params.job_id),
      ),
  )

  app.get(
    '/contact/import/:job_id/failures',
    {
      schema: {
        tags,
        operationId: 'read_import_failures_api_v1_contact_import__job_id__failures_get',
        summary: 'Download the rows an import skipped',
        description:
          'A CSV file: `line` (where the row ends in the uploaded file), `reason`, then the row’s cells under the file’s own header, so that the rows can be fixed and imported again.',
        params: ImportJobParams,
        response: {
          200: Type.Unsafe<unknown>({
            description: 'The failed rows.',
            content: { 'text/csv': { schema: { type: 'string' } } },
          }),
          ...errorResponses(401, 404, 422),
        },
      },
    },
    async (request, reply) => {
      const { orgId } = principalOf(request)
      const job = await imports.getImportJob(db, orgId, request.params.job_id)
      return reply
        .type('text/csv; charset=utf-8')
        .header('content-disposition', `attachment; filename="import-${job.id}-failures.csv"`)
        .send(Readable.from(imports.failedRowsCsv(db, orgId, job.id)))
    },
  )
}
