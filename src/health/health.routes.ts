import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import { sql } from 'kysely'
import type { DatabaseHandle } from '../db/database.js'
import { pendingMigrations } from '../db/migrations.js'

const Status = Type.Object({ status: Type.String(), detail: Type.Optional(Type.String()) })

/** Liveness and readiness for orchestrators; neither needs a key, and neither reveals data. */
export const healthRoutes: FastifyPluginAsyncTypebox<{ database: DatabaseHandle }> = async (
  app,
  { database },
) => {
  app.get('/healthz', { schema: { hide: true, response: { 200: Status } }, logLevel: 'warn' }, async () => ({
    status: 'ok',
  }))
  app.get(
    '/readyz',
    { schema: { hide: true, response: { 200: Status, 503: Status } }, logLevel: 'warn' },
    async (request, reply) => {
      try {
        await sql`select 1`.execute(database.db)
        const pending = await pendingMigrations(database)
        if (pending.length > 0) {
          return reply
            .code(503)
            .send({ status: 'unavailable', detail: `${pending.length} migration(s) pending` })
        }
        return { status: 'ready' }
      } catch (error) {
        request.log.warn({ err: error }, 'readiness check failed')
        return reply.code(503).send({ status: 'unavailable', detail: 'database unreachable' })
      }
    },
  )
}
