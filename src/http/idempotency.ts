import { createHash } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import type { Kysely } from 'kysely'
import { isUniqueViolation } from '../db/errors.js'
import type { Database } from '../db/schema.js'
import { AppError, ValidationFailedError } from '../errors.js'

declare module 'fastify' {
  interface FastifyRequest {
    idempotency: { orgId: string; key: string } | null
  }
}

export const IDEMPOTENCY_WINDOW_MS = 24 * 60 * 60 * 1000
/** A first request still "in progress" after this long died with its process; a retry may take over. */
const ABANDONED_AFTER_MS = 60 * 1000
const MAX_KEY_LENGTH = 255

/** What makes two requests "the same": method, route, path and query parameters, and body. */
function requestHash(request: FastifyRequest): string {
  const { api_key: _key, ...query } = (request.query ?? {}) as Record<string, unknown>
  return createHash('sha256')
    .update(
      JSON.stringify([request.method, request.routeOptions.url, request.params, query, request.body ?? null]),
    )
    .digest('hex')
}

const isExpired = (createdAt: Date | string, window: number) =>
  Date.now() - new Date(createdAt).getTime() > window

/**
 * Idempotency-Key on POST: the first request with a key is served and its response (status and
 * body) kept for 24 hours, per organization; a retry with the same key and the same request gets
 * that response again, without the work being done twice; the same key with another request is
 * 422. Server errors are not kept, so a request that failed that way can be retried for real.
 */
export function registerIdempotency(app: FastifyInstance, db: Kysely<Database>) {
  app.decorateRequest('idempotency', null)

  const claimKey = async (request: FastifyRequest, reply: FastifyReply) => {
    const header = request.headers['idempotency-key']
    if (request.method !== 'POST' || header === undefined || !request.principal) return
    const key = Array.isArray(header) ? header[0] : header
    if (key === undefined || key === '' || key.length > MAX_KEY_LENGTH) {
      throw new ValidationFailedError([
        {
          loc: ['header', 'Idempotency-Key'],
          msg: `Must be 1 to ${MAX_KEY_LENGTH} characters`,
          type: 'value_error',
        },
      ])
    }
    const orgId = request.principal.orgId
    const hash = requestHash(request)
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await db
          .insertInto('idempotency_keys')
          .values({
            org_id: orgId,
            key,
            request_hash: hash,
            status_code: null,
            response_body: null,
            created_at: new Date().toISOString(),
          })
          .execute()
        request.idempotency = { orgId, key }
        return
      } catch (error) {
        if (!isUniqueViolation(error)) throw error
      }
      const stored = await db
        .selectFrom('idempotency_keys')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('key', '=', key)
        .executeTakeFirst()
      if (!stored) continue
      const abandoned = stored.status_code === null && isExpired(stored.created_at, ABANDONED_AFTER_MS)
      if (isExpired(stored.created_at, IDEMPOTENCY_WINDOW_MS) || abandoned) {
        await forget(db, orgId, key)
        continue
      }
      if (stored.request_hash !== hash) {
        throw new ValidationFailedError(
          [
            {
              loc: ['header', 'Idempotency-Key'],
              msg: 'This Idempotency-Key was already used with a different request',
              type: 'idempotency_key_reused',
            },
          ],
          'idempotency_key_reused',
        )
      }
      if (stored.status_code === null || stored.response_body === null) {
        throw new AppError(
          'idempotency_in_progress',
          'A request with this Idempotency-Key is still in progress',
        )
      }
      return reply
        .code(stored.status_code)
        .header('idempotent-replayed', 'true')
        .type('application/json; charset=utf-8')
        .send(stored.response_body)
    }
  }

  const keepAnswer = async (request: FastifyRequest, reply: FastifyReply, payload: unknown) => {
    const claim = request.idempotency
    if (!claim) return payload
    request.idempotency = null
    if (reply.statusCode >= 500 || typeof payload !== 'string') {
      await forget(db, claim.orgId, claim.key)
      return payload
    }
    await db
      .updateTable('idempotency_keys')
      .set({ status_code: reply.statusCode, response_body: payload })
      .where('org_id', '=', claim.orgId)
      .where('key', '=', claim.key)
      .execute()
    return payload
  }

  // Hooks of the POST routes only: every other request would run two hooks for nothing.
  app.addHook('onRoute', (route) => {
    const methods = Array.isArray(route.method) ? route.method : [route.method]
    if (!methods.includes('POST')) return
    route.preValidation = [...hooksOf(route.preValidation), claimKey]
    route.onSend = [...hooksOf(route.onSend), keepAnswer]
  })
}

const hooksOf = <T>(hooks: T | T[] | undefined): T[] =>
  hooks === undefined ? [] : Array.isArray(hooks) ? hooks : [hooks]

async function forget(db: Kysely<Database>, orgId: string, key: string) {
  await db.deleteFrom('idempotency_keys').where('org_id', '=', orgId).where('key', '=', key).execute()
}

/** Drops remembered responses older than the window; returns how many. */
export async function purgeIdempotencyKeys(db: Kysely<Database>, now = Date.now()): Promise<number> {
  const cutoff = new Date(now - IDEMPOTENCY_WINDOW_MS).toISOString()
  let purged = 0
  for (const { id } of await db.selectFrom('organizations').select('id').execute()) {
    const result = await db
      .deleteFrom('idempotency_keys')
      .where('org_id', '=', id)
      .where('created_at', '<', cutoff)
      .executeTakeFirst()
    purged += Number(result.numDeletedRows)
  }
  return purged
}
