import { randomBytes } from 'node:crypto'
import { Stream } from 'node:stream'
import swagger from '@fastify/swagger'
import swaggerUi from '@fastify/swagger-ui'
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox'
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest, LogController } from 'fastify'
import type { DestinationStream } from 'pino'
import { apiKeyAuth } from './auth/auth.hook.js'
import type { Config } from './config.js'
import { contactRoutes } from './contacts/contacts.routes.js'
import { customFieldRoutes } from './custom-fields/custom-fields.routes.js'
import { type DatabaseHandle, databaseOptionsOf, openDatabase } from './db/database.js'
import type { ErrorCode } from './errors.js'
import { exportRoutes } from './exports/exports.routes.js'
import { healthRoutes } from './health/health.routes.js'
import { admitInArrivalOrder } from './http/admission.js'
import { boundBodyReading } from './http/body-timeout.js'
import { answerClientError, toHttpError } from './http/errors.js'
import { registerIdempotency } from './http/idempotency.js'
import { loggerOptions } from './http/logging.js'
import { completeDocument } from './http/openapi.js'
import { limitByAddress, limitByKey, rateLimitStore } from './http/rate-limits.js'
import { validatorCompiler } from './http/validation.js'
import { importRoutes } from './imports/imports.routes.js'
import type { Metrics } from './metrics/metrics.js'
import { type SetupState, settingsRoutes } from './settings/settings.routes.js'
import { cursorCodecOnce } from './shared/cursor.js'
import { assertBodyNesting, withoutLoneSurrogates } from './shared/json-bounds.js'
import { ErrorResponse, ValidationErrorResponse } from './shared/schemas.js'
import { countUsers } from './users/users.service.js'
import { targetPolicy } from './webhooks/targets.js'
import { webhookRoutes } from './webhooks/webhooks.routes.js'

declare module 'fastify' {
  interface FastifyInstance {
    database: DatabaseHandle
    /** Present when metrics are configured (METRICS_TOKEN or METRICS_PORT). */
    metrics: Metrics | null
    /** Whoever runs import jobs in this process listens here for newly queued ones (serve.ts). */
    importQueued: EventTarget
  }
}

/**
 * One access line per request, written when it completes (method, redacted URL, status, time),
 * instead of Fastify's two: the log is half as costly to write and each line says everything.
 */
class AccessLog extends LogController {
  override incomingRequest() {}

  override requestCompleted(error: Error | null, request: FastifyRequest, reply: FastifyReply) {
    const line = { req: request, res: { statusCode: reply.statusCode }, responseTime: reply.elapsedTime }
    if (error) reply.log.error({ ...line, err: error }, 'request errored')
    else reply.log.info(line, 'request completed')
  }
}

export interface BuildOptions {
  /** An already-open database (the app then leaves closing it to the caller). */
  database?: DatabaseHandle
  /** Where log lines go; standard output when absent. */
  logStream?: DestinationStream
}

const API_DESCRIPTION = `Contacts of the people who talk to your assistants.

Wire-compatible with the Insighto.ai Contacts API v1: authenticate with \`?api_key=in-…\` (as the
original) or, better, the \`X-API-Key\` header, which keeps the key out of access logs and browser
history. Successes are wrapped as \`{"message", "meta", "data"}\`; errors are \`{"detail", "code"}\`,
and validation errors list each problem as \`{"loc", "msg", "type"}\` in \`detail\`.`

/**
 * Builds the whole HTTP application without listening, so that the server, the tests and the
 * benchmarks run exactly the same options, hooks and schemas.
 */
export async function buildApp(config: Config, options: BuildOptions = {}): Promise<FastifyInstance> {
  const ownsDatabase = options.database === undefined
  const database = options.database ?? openDatabase(config.databaseUrl, databaseOptionsOf(config))

  const app = Fastify({
    logger: loggerOptions(config.logLevel, options.logStream),
    logController: new AccessLog(),
    bodyLimit: config.bodyLimitBytes,
    trustProxy: config.trustProxy,
    requestTimeout: config.requestTimeoutMs,
    keepAliveTimeout: config.keepAliveTimeoutMs,
    // Node checks request timeouts on this tick (30 s by default), which would let a slow client
    // hold a connection up to 30 s past its limit.
    http: { connectionsCheckingInterval: Math.min(1_000, config.requestTimeoutMs) },
    clientErrorHandler: answerClientError,
    return503OnClosing: true,
    // Errors the router raises before any route runs (a malformed URL, a parameter too long) get
    // the same shape as every other error.
    frameworkErrors: (error, _request, reply: FastifyReply) => {
      const { status, body } = toHttpError(error)
      reply.code(status).type('application/json; charset=utf-8').send(JSON.stringify(body))
    },
    routerOptions: { maxParamLength: 200 },
  }).withTypeProvider<TypeBoxTypeProvider>()

  // Before every other hook, so that nothing of a request runs before its turn.
  const admission = admitInArrivalOrder(app, config.requestsPerTurn)
  app.decorate('database', database)
  app.decorate('importQueued', new EventTarget())
  // Metrics cost every request a little, so they are kept only where someone can read them; and
  // their module (prom-client, 2 MB of heap) is loaded only then.
  const metricsOn = config.metricsToken !== undefined || config.metricsPort !== undefined
  const metricsModule = metricsOn ? await import('./metrics/metrics.js') : null
  const metrics = metricsModule ? metricsModule.createMetrics(database, admission) : null
  app.decorate('metrics', metrics)
  if (metricsModule && metrics) {
    metricsModule.instrumentRequests(app, metrics)
    // On the API's port only behind the token; with a metrics port, there instead (serve.ts).
    if (config.metricsPort === undefined)
      metricsModule.metricsRoute(app, metrics, config.metricsToken ?? null)
  }
  if (ownsDatabase) app.addHook('onClose', async () => database.close())
  app.setValidatorCompiler(validatorCompiler)
  app.addSchema(ErrorResponse)
  app.addSchema(ValidationErrorResponse)

  // FastAPI reads a body without a content type as JSON and refuses other types with a 422;
  // clients written for it may rely on both, so this parser does the same.
  const defaultJsonParser = app.getDefaultJsonParser('error', 'error')
  const parseJson: typeof defaultJsonParser = (request, body, done) =>
    defaultJsonParser(request, body, (error, value) =>
      error ? done(error, undefined) : done(null, withoutLoneSurrogates(body as string, value)),
    )
  app.removeContentTypeParser('application/json')
  app.addContentTypeParser('application/json', { parseAs: 'string' }, parseJson)
  app.addContentTypeParser(/^application\/[\w.+-]+\+json$/, { parseAs: 'string' }, parseJson)
  app.addContentTypeParser('*', { parseAs: 'string' }, (request, body, done) => {
    if (request.headers['content-type'] === undefined) return parseJson(request, body as string, done)
    done(null, body)
  })

  app.setErrorHandler((error, request, reply) => {
    const { status, body } = toHttpError(error)
    if (status >= 500) request.log.error({ err: error }, 'request failed')
    // The database is saturated or slow, not broken: tell well-behaved clients when to come back.
    if (status === 503) reply.header('retry-after', '1')
    return reply.code(status).send(body)
  })
  boundBodyReading(app, config.requestTimeoutMs)
  app.addHook('preValidation', async (request) => {
    // A stream (an import's upload) is read by its route, not parsed here.
    if (typeof request.body === 'object' && request.body !== null && !(request.body instanceof Stream))
      assertBodyNesting(request.body)
  })
  app.setNotFoundHandler((_request, reply) =>
    reply.code(404).send({ detail: 'Not Found', code: 'route_not_found' satisfies ErrorCode }),
  )

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'Contacts API', version: '1.0.0', description: API_DESCRIPTION },
      servers: [{ url: '/', description: 'The server that serves this document' }],
      components: {
        securitySchemes: {
          api_key: {
            type: 'apiKey',
            in: 'query',
            name: 'api_key',
            description: 'Your API key, as the original API takes it. Format: starts with in-.',
          },
          ApiKeyHeader: {
            type: 'apiKey',
            in: 'header',
            name: 'X-API-Key',
            description: 'The same key, as a header.',
          },
        },
      },
      security: [{ api_key: [] }, { ApiKeyHeader: [] }],
    },
    // Only tagged routes are API operations; the Settings pages and health checks are not.
    hideUntagged: true,
    // Shared schemas are named by their $id in the document (ErrorResponse, HTTPValidationError).
    refResolver: {
      buildLocalReference: (json, _baseUri, _fragment, i) =>
        typeof json.$id === 'string' ? json.$id : `def-${i}`,
    },
    transformObject: (generated) =>
      'openapiObject' in generated ? completeDocument(generated.openapiObject) : generated.swaggerObject,
  })
  await app.register(swaggerUi, { routePrefix: '/docs', logLevel: 'warn', staticCSP: true })
  app.get('/openapi.json', { schema: { hide: true }, logLevel: 'warn' }, async () => app.swagger())

  await app.register(healthRoutes, { database })
  const redis = await rateLimitStore(config)
  if (redis) {
    redis.on('error', (err) => app.log.warn({ err }, 'rate limit store unreachable'))
    app.addHook('onClose', async () => {
      redis.disconnect()
    })
  }
  await app.register(
    async (api) => {
      await limitByAddress(api, config, redis)
      await api.register(async (authenticated) => {
        await limitByKey(authenticated, config, redis)
        // After the rate limits (route hooks of onRequest), so that requests with a wrong key
        // count against their address too, and before the body is read.
        authenticated.addHook('preParsing', apiKeyAuth(database))
        registerIdempotency(authenticated, database.db)
        const cursors = cursorCodecOnce(database.db)
        await authenticated.register(contactRoutes, {
          db: database.db,
          engine: { db: database.db, dialect: database.dialect, cursors },
        })
        const engine = { db: database.db, dialect: database.dialect, cursors }
        await authenticated.register(importRoutes, {
          db: database.db,
          cursors,
          maxBytes: config.importMaxBytes,
          jobQueued: () => app.importQueued.dispatchEvent(new Event('queued')),
        })
        await authenticated.register(exportRoutes, { engine })
        await authenticated.register(customFieldRoutes, { db: database.db, cursors })
        await authenticated.register(webhookRoutes, {
          db: database.db,
          cursors,
          policy: targetPolicy(config.webhookAllowedNetworks),
        })
      })
    },
    { prefix: '/api/v1' },
  )
  await app.register(settingsRoutes, {
    prefix: '/settings',
    db: database.db,
    setup: await firstRunSetup(database, app),
    secureCookies: config.secureCookies,
    trashRetentionDays: config.trashRetentionDays,
    webhookPolicy: targetPolicy(config.webhookAllowedNetworks),
    cursors: cursorCodecOnce(database.db),
    dialect: database.dialect,
    imports: {
      maxBytes: config.importMaxBytes,
      jobQueued: () => app.importQueued.dispatchEvent(new Event('queued')),
    },
  })
  return app
}

/**
 * While nobody can sign in, the Settings page offers to create the owner, but only to whoever
 * holds this token, printed in the log of the process that serves the page: reaching the port
 * first is not enough to own the installation.
 */
async function firstRunSetup(database: DatabaseHandle, app: FastifyInstance): Promise<SetupState> {
  if ((await countUsers(database.db)) > 0) return { token: null }
  const token = randomBytes(18).toString('base64url')
  app.log.warn(
    `first run: open /settings/setup and enter the setup token ${token} to create the owner account`,
  )
  return { token }
}
