import { type SchemaOptions, type Static, type TSchema, Type } from '@sinclair/typebox'
import type { FastifyReply } from 'fastify'
import { ValidationFailedError } from '../errors.js'

/**
 * `T | null` as `{"type": [T, "null"]}` rather than `anyOf`: Ajv and fast-json-stringify both
 * handle the type array faster, and OpenAPI 3.1 renders it the same way FastAPI documents nullables.
 */
export function Nullable<T extends TSchema>(schema: T, options: SchemaOptions = {}) {
  const { type, ...rest } = schema as unknown as { type: string }
  return Type.Unsafe<Static<T> | null>({ ...rest, ...options, type: [type, 'null'] })
}

export const MAX_NAME_LENGTH = 320

export const Uuid = (options: SchemaOptions = {}) => Type.String({ format: 'uuid', ...options })
export const DateTime = (options: SchemaOptions = {}) => Type.String({ format: 'date-time', ...options })

/** A free-form JSON object (channels, attributes, custom fields); bounded in src/shared/json-bounds.ts. */
export const JsonObject = (options: SchemaOptions = {}) =>
  Type.Record(Type.String(), Type.Unknown(), { maxProperties: 200, ...options })

export const SUCCESS_MESSAGES = {
  created: 'Data created successfully',
  retrieved: 'Data retrieved successfully',
  updated: 'Data updated successfully',
  deleted: 'Data deleted successfully',
} as const

/** The original API's success envelope: `{message, meta, data}`. */
export function Envelope<T extends TSchema>(data: T, message: keyof typeof SUCCESS_MESSAGES) {
  return Type.Object({
    message: Nullable(Type.String(), { examples: [SUCCESS_MESSAGES[message]] }),
    meta: Type.Object({}),
    data,
  })
}

export function envelope<T>(message: keyof typeof SUCCESS_MESSAGES, data: T) {
  return { message: SUCCESS_MESSAGES[message], meta: {}, data }
}

export const ErrorResponse = Type.Object(
  {
    detail: Type.String(),
    code: Type.Optional(Type.String({ description: 'Stable machine-readable error code.' })),
    existing_id: Type.Optional(
      Type.String({
        format: 'uuid',
        description: 'With identity_conflict: the contact that holds the identity.',
      }),
    ),
    merged_into: Type.Optional(
      Type.String({
        format: 'uuid',
        description: 'With contact_merged: the contact this one was merged into.',
      }),
    ),
  },
  { $id: 'ErrorResponse', title: 'Error' },
)

export const ValidationErrorResponse = Type.Object(
  {
    detail: Type.Array(
      Type.Object({
        loc: Type.Array(Type.Union([Type.String(), Type.Integer()])),
        msg: Type.String(),
        type: Type.String(),
      }),
    ),
    code: Type.Optional(Type.String()),
  },
  { $id: 'HTTPValidationError', title: 'HTTPValidationError' },
)

const errorRef = Type.Ref(ErrorResponse)
const validationRef = Type.Ref(ValidationErrorResponse)

/** The error responses a route can return, for its schema (serialization and the OpenAPI document). */
export function errorResponses(...statuses: (400 | 401 | 403 | 404 | 409 | 412 | 413 | 415 | 422 | 429)[]) {
  const responses: Record<number, TSchema> = {}
  for (const status of statuses) responses[status] = status === 422 ? validationRef : errorRef
  return responses
}

export const PaginationQuery = Type.Object({
  page: Type.Integer({ minimum: 1, default: 1, description: 'Page number, from 1.' }),
  size: Type.Integer({ minimum: 1, maximum: 100, default: 50, description: 'Items per page (1 to 100).' }),
})
export type PaginationQuery = Static<typeof PaginationQuery>

export function Page<T extends TSchema>(item: T) {
  return Type.Object({
    items: Type.Array(item),
    total: Type.Integer(),
    page: Type.Integer(),
    size: Type.Integer(),
    pages: Type.Integer(),
    next_page: Nullable(Type.Integer()),
    previous_page: Nullable(Type.Integer()),
  })
}

export interface PageOf<T> {
  items: T[]
  total: number
  page: number
  size: number
  pages: number
  next_page: number | null
  previous_page: number | null
}

/**
 * Page arithmetic shared by every list route. A page past the end is empty and its
 * previous_page points at the last page that holds items, so a client can always step back.
 */
export function pageOf<T>(items: T[], total: number, { page, size }: PaginationQuery): PageOf<T> {
  const pages = Math.ceil(total / size)
  return {
    items,
    total,
    page,
    size,
    pages,
    next_page: page < pages ? page + 1 : null,
    previous_page: page > 1 ? Math.min(page - 1, Math.max(pages, 1)) : null,
  }
}

export const offsetOf = ({ page, size }: PaginationQuery) => (page - 1) * size

/** A closed set of strings as `enum` (one clear validation message, unlike a union of literals). */
export const StringEnum = <const T extends readonly string[]>(values: T, options: SchemaOptions = {}) =>
  Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options })

export const MAX_CURSOR_LIMIT = 1000

/** Cursor paging, offered by every list beside the original `page` and `size`. */
export const CursorPagingQuery = {
  limit: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: MAX_CURSOR_LIMIT,
      description:
        'Items per page with cursor paging (1 to 1000); answers carry next_cursor instead of totals.',
    }),
  ),
  cursor: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 2000,
      description: 'The `next_cursor` of the previous answer; valid only for the same query.',
    }),
  ),
}

/** `page`/`size` without defaults, so that a list can tell whether they were given. */
export const OptionalPagination = {
  page: Type.Optional(Type.Integer({ minimum: 1, description: 'Page number, from 1 (default 1).' })),
  size: Type.Optional(
    Type.Integer({ minimum: 1, maximum: 100, description: 'Items per page, 1 to 100 (default 50).' }),
  ),
}

export const ListPagingQuery = Type.Object({ ...OptionalPagination, ...CursorPagingQuery })
export type ListPagingQuery = Static<typeof ListPagingQuery>

export const NextCursor = Nullable(Type.String(), {
  description: 'Pass as `cursor` for the items after these; null on the last page.',
})

/** The original page, plus a cursor to continue from its last item. */
export function PageWithCursor<T extends TSchema>(item: T) {
  return Type.Object({ ...Page(item).properties, next_cursor: NextCursor })
}

/** A page of cursor paging: no total (counting a large organization costs more than the page). */
export function CursorPage<T extends TSchema>(item: T) {
  return Type.Object({ items: Type.Array(item), limit: Type.Integer(), next_cursor: NextCursor })
}

/** Either kind of page, as a list answers depending on the paging asked for. */
export const ListResult = <T extends TSchema>(item: T) => Type.Union([PageWithCursor(item), CursorPage(item)])

/**
 * A list route's answer: `schema`, its declared 200 (either shape, as the OpenAPI document shows
 * it), and `send`, which writes an answer with the serializer of the shape it has.
 * fast-json-stringify writes a union by first validating the whole answer against a branch with
 * Ajv: a page of 50 contacts had every item's dates and ids checked against their formats before
 * it was written, 6% of the list's CPU in a profile. A page has a total, a cursor page has not, so
 * the answer names its shape; each shape's serializer is compiled once per route.
 */
export function listAnswer<T extends TSchema>(item: T) {
  const page = Envelope(PageWithCursor(item), 'retrieved')
  const cursorPage = Envelope(CursorPage(item), 'retrieved')
  return {
    schema: Envelope(ListResult(item), 'retrieved'),
    send: (reply: FastifyReply, result: PageOf<unknown> | CursorPageOf<unknown>) =>
      reply
        .header('content-type', 'application/json; charset=utf-8')
        .serializer(reply.compileSerializationSchema('total' in result ? page : cursorPage, '200'))
        .send(envelope('retrieved', result)),
  }
}

export interface CursorPageOf<T> {
  items: T[]
  limit: number
  next_cursor: string | null
}

/**
 * Which paging a list query asks for: the original pages unless `limit` or `cursor` is given.
 * Mixing the two is a 422 rather than a guess.
 */
export function pagingOf(
  query: ListPagingQuery,
): { mode: 'page'; page: number; size: number } | { mode: 'cursor'; limit: number; cursor?: string } {
  if (query.cursor === undefined && query.limit === undefined) {
    return { mode: 'page', page: query.page ?? 1, size: query.size ?? 50 }
  }
  if (query.page !== undefined || query.size !== undefined) {
    throw new ValidationFailedError([
      {
        loc: ['query', query.page !== undefined ? 'page' : 'size'],
        msg: 'page and size cannot be combined with limit or cursor',
        type: 'value_error',
      },
    ])
  }
  return query.cursor === undefined
    ? { mode: 'cursor', limit: query.limit ?? 50 }
    : { mode: 'cursor', limit: query.limit ?? 50, cursor: query.cursor }
}
