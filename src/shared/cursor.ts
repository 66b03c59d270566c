import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Database } from '../db/schema.js'
import { ValidationFailedError } from '../errors.js'

export type CursorValue = string | number | null

/**
 * A cursor is the sort values of the last item a page returned, bound to the query that produced
 * it (organization, filters, sort) and signed, so a client can neither edit it nor reuse it for
 * another query: either would otherwise skip or repeat contacts without anyone noticing.
 */
export interface CursorCodec {
  encode(queryKey: string, values: readonly CursorValue[]): string
  decode(queryKey: string, cursor: string): CursorValue[]
}

const CURSOR_SECRET_NAME = 'cursor_signing_key'

/** The key cursors are signed with, shared by every process that serves the database. */
export async function loadCursorSecret(db: Kysely<Database>): Promise<Buffer> {
  const existing = await db
    .selectFrom('service_secrets')
    .select('value')
    .where('name', '=', CURSOR_SECRET_NAME)
    .executeTakeFirst()
  if (existing) return Buffer.from(existing.value, 'base64url')
  const value = randomBytes(32).toString('base64url')
  // Two processes starting together may both get here; the first insert wins and both read it.
  await db
    .insertInto('service_secrets')
    .values({ name: CURSOR_SECRET_NAME, value })
    .onConflict((oc) => oc.column('name').doNothing())
    .execute()
  return loadCursorSecret(db)
}

/** A stable digest of what a query asks for; a cursor is only valid for the same digest. */
export function queryKeyOf(parts: unknown): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('base64url').slice(0, 16)
}

export class InvalidCursorError extends Error {}
const invalidCursor = () => new InvalidCursorError()

export function cursorCodec(secret: Buffer): CursorCodec {
  const sign = (payload: string) => createHmac('sha256', secret).update(payload).digest().subarray(0, 16)
  return {
    encode(queryKey, values) {
      const payload = Buffer.from(JSON.stringify([queryKey, values])).toString('base64url')
      return `${payload}.${sign(payload).toString('base64url')}`
    },
    decode(queryKey, cursor) {
      const [payload, signature, ...rest] = cursor.split('.')
      if (!payload || !signature || rest.length > 0) throw invalidCursor()
      const given = Buffer.from(signature, 'base64url')
      const expected = sign(payload)
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalidCursor()
      const [key, values] = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as [
        string,
        CursorValue[],
      ]
      if (key !== queryKey || !Array.isArray(values)) throw invalidCursor()
      return values
    },
  }
}

/**
 * The codec, made on first use: the signing key lives in the database, which the app may be
 * built on before its migrations have run.
 */
export function cursorCodecOnce(db: Kysely<Database>): () => Promise<CursorCodec> {
  let codec: Promise<CursorCodec> | undefined
  return () => {
    codec ??= loadCursorSecret(db).then(cursorCodec)
    codec.catch(() => {
      codec = undefined
    })
    return codec
  }
}

/** A cursor's values, or the 422 that names where the bad cursor came from. */
export function readCursor(
  codec: CursorCodec,
  queryKey: string,
  cursor: string,
  loc: (string | number)[],
): CursorValue[] {
  try {
    return codec.decode(queryKey, cursor)
  } catch (error) {
    if (!(error instanceof InvalidCursorError)) throw error
    const msg = 'The cursor is not one this service issued for this query; start again without a cursor'
    throw new ValidationFailedError([{ loc, msg, type: 'value_error' }], 'invalid_cursor')
  }
}

/** The (time, id) position of a row in a list ordered by that time, as a cursor carries it. */
export const timeAndId = (time: Date | string, id: string): CursorValue[] => [
  new Date(time).toISOString(),
  id,
]

/** The (time, id) position a cursor of such a list holds; a 422 for a bad cursor. */
export function readTimeAndId(
  codec: CursorCodec,
  queryKey: string,
  cursor: string,
): { time: string; id: string } {
  const [time, id, ...rest] = readCursor(codec, queryKey, cursor, ['query', 'cursor'])
  if (typeof time !== 'string' || typeof id !== 'string' || rest.length > 0) {
    throw new Error('a signed cursor holds something other than a time and an id')
  }
  return { time, id }
}
