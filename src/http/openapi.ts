import { createRequire } from 'node:module'
import type { sample as Sample } from 'openapi-sampler'
import { AppError, type ErrorCode, ValidationFailedError } from '../errors.js'
import { toHttpError } from './errors.js'

type JsonObject = Record<string, unknown>
interface MediaType {
  schema?: JsonObject
  example?: unknown
  examples?: unknown
}
interface Response {
  description?: string
  content?: Record<string, MediaType>
}
interface Parameter {
  in?: string
  required?: boolean
  schema?: JsonObject
}
interface Operation {
  parameters?: Parameter[]
  summary?: string
  description?: string
  requestBody?: { content?: Record<string, MediaType> }
  responses?: Record<string, Response>
}
interface Document {
  paths?: Record<string, Record<string, Operation>>
  components?: { schemas?: Record<string, JsonObject> }
}

/** What each error status of the API means, and the error its example shows. */
const ERROR_STATUSES: Record<string, { description: string; example: (path: string) => unknown }> = {
  '401': {
    description: 'No API key (`not_authenticated`), or one that is unknown or revoked (`invalid_api_key`).',
    example: () => errorBody('invalid_api_key', 'Invalid API key'),
  },
  '403': {
    description:
      'A `read_only` key on a route that writes (`read_only_key`), or an `org_id` that is not the key’s organization (`organization_mismatch`).',
    example: () => errorBody('read_only_key', 'This API key is read-only'),
  },
  '404': {
    description: 'Nothing with this id in your organization; `code` says what was looked for.',
    example: (path) => errorBody(...notFoundOf(path)),
  },
  '409': {
    description: 'The request conflicts with stored data; `code` says how (see the error catalogue).',
    example: () =>
      errorBody('identity_conflict', 'Another contact already has this email', {
        existing_id: '0193a5a2-5b0d-7c6f-8e3a-2e1a0b9c8d7e',
      }),
  },
  '412': {
    description: 'The contact is no longer at the version named in If-Match; nothing changed.',
    example: () =>
      errorBody('precondition_failed', 'The contact has changed since the version named in If-Match'),
  },
  '413': {
    description: 'The body is larger than the limit (`payload_too_large`).',
    example: () => errorBody('payload_too_large', 'Request body is too large'),
  },
  '415': {
    description: 'The body is not of a type this route reads (`unsupported_media_type`).',
    example: () => errorBody('unsupported_media_type', 'Send the file as text/csv, not application/json'),
  },
  '422': {
    description: 'The request does not match the schema: every problem, each with `loc`, `msg` and `type`.',
    example: () =>
      toHttpError(
        new ValidationFailedError([
          { loc: ['body', 'last_seen'], msg: 'Input should be a valid datetime', type: 'datetime_parsing' },
        ]),
      ).body,
  },
  '429': {
    description:
      'Too many requests for this key or address (`rate_limited`); retry after `Retry-After` seconds.',
    example: () => errorBody('rate_limited', 'Rate limit exceeded, retry in 1 second'),
  },
  '500': {
    description: 'An unexpected error (`internal_error`); its cause is in the server log only.',
    example: () => toHttpError(new Error('not shown')).body,
  },
  '503': {
    description:
      'The database is unreachable, busy or slow (`database_unavailable`, `database_busy`, `database_timeout`); retry after `Retry-After` seconds.',
    example: () => errorBody('database_unavailable', 'The database is unavailable'),
  },
  '507': {
    description:
      'The database has no room left (`storage_full`): its disk is full; nothing was written, and the same request succeeds once space is freed.',
    example: () =>
      errorBody('storage_full', 'The database has no room left to store this change; nothing was written'),
  },
}

const errorBody = (code: ErrorCode, detail: string, details: Record<string, string> = {}) =>
  toHttpError(new AppError(code, detail, details)).body

function notFoundOf(path: string): [ErrorCode, string] {
  if (path.includes('/logs/')) return ['delivery_not_found', 'Delivery not found']
  if (path.includes('outbound_webhook')) return ['webhook_not_found', 'Webhook not found']
  if (path.includes('/import/')) return ['import_not_found', 'Import not found']
  if (path.includes('custom_field')) return ['custom_field_not_found', 'Custom field not found']
  return ['contact_not_found', 'Contact not found']
}

/**
 * Completes the generated document where declaring it route by route would only repeat itself:
 * the errors every API route can return (no key, rate limit, a database outage, an unexpected
 * failure; a read_only key on writes; an oversized or invalid body where there is a body), a
 * description and an example for every error, and an example for every request and response
 * body, taken from the schema's own `examples` when it has one and otherwise sampled from the
 * schema (openapi-sampler), so that each example is valid by construction.
 */
export function completeDocument<T>(generated: T): T {
  const document = generated as Document
  const errorSchema = { $ref: '#/components/schemas/ErrorResponse' }
  const validationSchema = { $ref: '#/components/schemas/HTTPValidationError' }
  for (const [path, item] of Object.entries(document.paths ?? {})) {
    for (const [method, operation] of Object.entries(item)) {
      operation.responses ??= {}
      // A query parameter with a default is the client's to leave out (the server fills it in).
      for (const parameter of operation.parameters ?? []) {
        if (parameter.in === 'query' && parameter.schema?.default !== undefined) parameter.required = false
      }
      if (path.startsWith('/api/v1/')) {
        const statuses = ['401', '429', '500', '503', '507']
        if (method !== 'get') statuses.push('403')
        if (operation.requestBody) statuses.push('413', '422')
        for (const status of statuses) {
          operation.responses[status] ??= {
            content: { 'application/json': { schema: status === '422' ? validationSchema : errorSchema } },
          }
        }
      }
      for (const [status, response] of Object.entries(operation.responses)) {
        const known = ERROR_STATUSES[status]
        if (known) {
          response.description = known.description
          for (const media of Object.values(response.content ?? {})) media.example ??= known.example(path)
        } else {
          if (!response.description || response.description === 'Default Response') {
            response.description = status.startsWith('2') ? 'Success.' : 'See the error catalogue.'
          }
          for (const media of Object.values(response.content ?? {})) exemplify(media, document)
        }
      }
      for (const media of Object.values(operation.requestBody?.content ?? {})) exemplify(media, document)
    }
  }
  return generated
}

/**
 * The example generator, loaded when the document is first built (by the first request for it),
 * not by every server; it is CommonJS, so it loads synchronously, as the document is built.
 */
const requireSampler = createRequire(import.meta.url)
const sampleOf: typeof Sample = (...args) =>
  (requireSampler('openapi-sampler') as { sample: typeof Sample }).sample(...args)

function exemplify(media: MediaType, document: Document) {
  if (media.example !== undefined || media.examples !== undefined || !media.schema) return
  const own = media.schema.examples
  media.example =
    Array.isArray(own) && own.length > 0 ? own[0] : sampleOf(media.schema, { skipReadOnly: true }, document)
}
