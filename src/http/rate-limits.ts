import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyRequest } from 'fastify'
import type { Redis } from 'ioredis'
import { presentedKeyHash } from '../auth/auth.hook.js'
import type { Config } from '../config.js'
import { AppError } from '../errors.js'

/**
 * One Redis connection per process when REDIS_URL is set, so that several processes serving one
 * database share their counts; counted in memory otherwise. Rate limiting fails open: if Redis is
 * unreachable requests are served (and the error logged) rather than refused.
 */
export async function rateLimitStore(config: Config): Promise<Redis | undefined> {
  if (!config.redisUrl) return undefined
  // Loaded only when used: the client and its dependencies cost a process without Redis several
  // MB of resident memory.
  const { Redis } = await import('ioredis')
  return new Redis(config.redisUrl, { connectTimeout: 1000, maxRetriesPerRequest: 1, lazyConnect: false })
}

const tooMany = (_request: FastifyRequest, context: { after: string }) =>
  new AppError('rate_limited', `Rate limit exceeded, retry in ${context.after}`)

/**
 * Two limits on the API, with the IETF RateLimit-* headers and Retry-After on 429: per client
 * address (registered on the outer scope) and per API key (on the inner one, so its headers are
 * the ones a client sees). Keys are counted by a hash, never by the key itself.
 */
export async function limitByAddress(app: FastifyInstance, config: Config, redis: Redis | undefined) {
  await app.register(rateLimit, {
    max: config.rateLimitPerAddress,
    timeWindow: config.rateLimitWindowMs,
    nameSpace: 'contacts-rate-address-',
    enableDraftSpec: true,
    skipOnError: true,
    errorResponseBuilder: tooMany,
    ...(redis ? { redis } : {}),
  })
}

export async function limitByKey(app: FastifyInstance, config: Config, redis: Redis | undefined) {
  await app.register(rateLimit, {
    max: config.rateLimitPerKey,
    timeWindow: config.rateLimitWindowMs,
    nameSpace: 'contacts-rate-key-',
    keyGenerator: (request) => presentedKeyHash(request)?.slice(0, 32) ?? `address:${request.ip}`,
    enableDraftSpec: true,
    skipOnError: true,
    errorResponseBuilder: tooMany,
    ...(redis ? { redis } : {}),
  })
}
