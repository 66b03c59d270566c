import type { FastifyRequest, preParsingAsyncHookHandler } from 'fastify'
import { hashApiKey } from '../api-keys/api-key-secret.js'
import { authenticateApiKey, type Principal } from '../api-keys/api-keys.service.js'
import type { DatabaseHandle } from '../db/database.js'
import { AppError } from '../errors.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Routes that change data; a read_only key is refused on them before the body is read. */
    writes?: boolean
  }
  interface FastifyRequest {
    principal: Principal | null
  }
}

function presentedKey(request: FastifyRequest): string | undefined {
  const header = request.headers['x-api-key']
  if (typeof header === 'string' && header !== '') return header
  const query = (request.query as Record<string, unknown> | undefined)?.api_key
  return typeof query === 'string' && query !== '' ? query : undefined
}

const keyHashes = new WeakMap<FastifyRequest, string | undefined>()

/**
 * The hash of the key a request presents (undefined without one), made once per request: the
 * rate limit counts requests by it, and authentication looks the key up by it.
 */
export function presentedKeyHash(request: FastifyRequest): string | undefined {
  if (keyHashes.has(request)) return keyHashes.get(request)
  const key = presentedKey(request)
  const hash = key === undefined ? undefined : hashApiKey(key)
  keyHashes.set(request, hash)
  return hash
}

/** Authentication for /api/v1: the key in `X-API-Key` or, as in the original, `?api_key=`. */
export function apiKeyAuth(database: DatabaseHandle): preParsingAsyncHookHandler {
  return async (request) => {
    const key = presentedKey(request)
    if (key === undefined) throw new AppError('not_authenticated', 'Not authenticated')
    const principal = await authenticateApiKey(
      database.db,
      key,
      database.foreignWriteCounter,
      presentedKeyHash(request),
    )
    if (!principal) throw new AppError('invalid_api_key', 'Invalid API key')
    if (request.routeOptions.config.writes && principal.role !== 'full_access') {
      throw new AppError('read_only_key', 'This API key is read-only and cannot change data')
    }
    request.principal = principal
  }
}

export function principalOf(request: FastifyRequest): Principal {
  if (!request.principal) throw new AppError('not_authenticated', 'Not authenticated')
  return request.principal
}
