import { timingSafeEqual } from 'node:crypto'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { sql } from 'kysely'
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client'
import type { DatabaseHandle } from '../db/database.js'
import type { AdmissionQueue } from '../http/admission.js'
import { unqueuedDeliveries } from '../webhooks/webhooks.repository.js'

/**
 * The service's Prometheus metrics, one registry per app (so that several apps in one process,
 * as in the tests, never mix their counts): requests by route and status, their latency, those
 * waiting for their turn, the database pool, the webhook queue, and the process itself.
 */
export interface Metrics {
  registry: Registry
  /** Counts a delivery attempt's outcome (the dispatcher calls it). */
  deliveryAttempted(outcome: 'succeeded' | 'failed' | 'given_up'): void
  /** Counts the rows an import batch applied, by outcome (the import runner calls it). */
  importRows(outcomes: Record<'created' | 'updated' | 'unchanged' | 'failed', number>): void
  /** Reads the webhook queue's size and lag, and the import jobs, from the database before a scrape. */
  refreshQueue(): Promise<void>
}

export function createMetrics(database: DatabaseHandle, admission: AdmissionQueue): Metrics {
  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  new Gauge({
    name: 'contacts_http_requests_waiting',
    help: 'Requests read and waiting for their turn to start (REQUESTS_PER_TURN start per turn of the event loop).',
    registers: [registry],
    collect() {
      this.set(admission.waiting())
    },
  })
  new Gauge({
    name: 'contacts_db_pool_connections',
    help: 'PostgreSQL pool connections by state (total, idle, waiting requests); absent on SQLite.',
    labelNames: ['state'] as const,
    registers: [registry],
    collect() {
      const stats = database.poolStats()
      if (!stats) return
      this.set({ state: 'total' }, stats.total)
      this.set({ state: 'idle' }, stats.idle)
      this.set({ state: 'waiting' }, stats.waiting)
    },
  })
  if (database.transactionStats()) {
    new Counter({
      name: 'contacts_sqlite_transactions_total',
      help: 'SQLite transactions committed.',
      registers: [registry],
      collect() {
        this.reset()
        this.inc(database.transactionStats()?.transactions ?? 0)
      },
    })
    new Counter({
      name: 'contacts_sqlite_commits_total',
      help: 'SQLite COMMITs that stored those transactions (transactions arriving together share one).',
      registers: [registry],
      collect() {
        this.reset()
        this.inc(database.transactionStats()?.commits ?? 0)
      },
    })
  }
  if (database.writerCheckpointStats()) {
    new Counter({
      name: 'contacts_sqlite_writer_checkpoints_total',
      help: "WAL checkpoints run on the server's own connection (to start the WAL over); every request waits while one runs.",
      registers: [registry],
      collect() {
        this.reset()
        this.inc(database.writerCheckpointStats()?.writerCheckpoints ?? 0)
      },
    })
    new Counter({
      name: 'contacts_sqlite_writer_checkpoint_seconds_total',
      help: "Seconds spent in the WAL checkpoints run on the server's own connection.",
      registers: [registry],
      collect() {
        this.reset()
        this.inc(database.writerCheckpointStats()?.writerCheckpointSeconds ?? 0)
      },
    })
  }
  const pending = new Gauge({
    name: 'contacts_webhook_deliveries_pending',
    help: 'Webhook deliveries not yet acknowledged (due now or waiting for a retry).',
    registers: [registry],
  })
  const lag = new Gauge({
    name: 'contacts_webhook_delivery_lag_seconds',
    help: 'Age of the oldest delivery that is due and not yet acknowledged; 0 when none is due.',
    registers: [registry],
  })
  const importJobs = new Gauge({
    name: 'contacts_import_jobs',
    help: 'Import jobs waiting or running (all processes), by status.',
    labelNames: ['status'] as const,
    registers: [registry],
  })
  const importProgress = new Gauge({
    name: 'contacts_import_progress_ratio',
    help: 'Share of its file a running import job has applied (bytes read / bytes), by job id.',
    labelNames: ['job_id'] as const,
    registers: [registry],
  })
  const importRows = new Counter({
    name: 'contacts_import_rows_total',
    help: 'Rows applied by the import jobs this process ran, by outcome.',
    labelNames: ['outcome'] as const,
    registers: [registry],
  })
  const refreshImports = async () => {
    const jobs = await database.db
      .selectFrom('import_jobs')
      .select(['id', 'status', 'bytes', 'bytes_read'])
      .where('status', 'in', ['queued', 'running'])
      .limit(1000)
      .execute()
    importJobs.reset()
    importProgress.reset()
    importJobs.set({ status: 'queued' }, jobs.filter((job) => job.status === 'queued').length)
    importJobs.set({ status: 'running' }, jobs.filter((job) => job.status === 'running').length)
    for (const job of jobs) {
      if (job.status !== 'running') continue
      const bytes = Number(job.bytes)
      importProgress.set({ job_id: job.id }, bytes > 0 ? Number(job.bytes_read) / bytes : 0)
    }
  }
  // Both gauges come from the pending deliveries, read at scrape time; on SQLite they include the
  // deliveries the log owes but the dispatcher has not queued yet (all due since their event).
  const refreshDeliveries = async () => {
    const now = new Date().toISOString()
    const { rows } = await sql<{ pending: number | string; oldest_due: Date | string | null }>`
      select count(*) as pending,
             min(case when next_attempt_at <= ${now} then next_attempt_at end) as oldest_due
      from webhook_deliveries where status = 'pending'`.execute(database.db)
    const [row] = rows
    const unqueued =
      database.dialect === 'sqlite' ? await unqueuedDeliveries(database.db) : { count: 0, oldest: null }
    const times = [row?.oldest_due, unqueued.oldest]
      .filter((time) => time !== null && time !== undefined)
      .map((time) => new Date(time).getTime())
    pending.set(Number(row?.pending ?? 0) + unqueued.count)
    lag.set(times.length > 0 ? Math.max(0, (Date.now() - Math.min(...times)) / 1000) : 0)
  }
  const attempts = new Counter({
    name: 'contacts_webhook_delivery_attempts_total',
    help: 'Webhook delivery attempts made by this process, by outcome (given_up: failed for the last time).',
    labelNames: ['outcome'] as const,
    registers: [registry],
  })
  return {
    registry,
    deliveryAttempted: (outcome) => attempts.inc({ outcome }),
    importRows: (outcomes) => {
      for (const [outcome, count] of Object.entries(outcomes))
        if (count > 0) importRows.inc({ outcome }, count)
    },
    refreshQueue: async () => {
      await Promise.all([refreshDeliveries(), refreshImports()])
    },
  }
}

const sameToken = (given: string, expected: string) => {
  const a = Buffer.from(given)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

/**
 * Request counts and latency by route pattern (never the raw URL, whose ids would make a series
 * per contact) and status.
 */
export function instrumentRequests(app: FastifyInstance, metrics: Metrics) {
  const labels = ['method', 'route', 'status'] as const
  const requests = new Counter({
    name: 'contacts_http_requests_total',
    help: 'HTTP requests served, by method, route pattern and status.',
    labelNames: labels,
    registers: [metrics.registry],
  })
  const duration = new Histogram({
    name: 'contacts_http_request_duration_seconds',
    help: 'Time to serve an HTTP request, by method, route pattern and status.',
    labelNames: labels,
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [metrics.registry],
  })
  app.addHook('onResponse', async (request: FastifyRequest, reply: FastifyReply) => {
    const route = request.routeOptions.url ?? 'unmatched'
    const values = { method: request.method, route, status: String(reply.statusCode) }
    requests.inc(values)
    duration.observe(values, reply.elapsedTime / 1000)
  })
}

/**
 * GET /metrics in Prometheus' text format, for a token (`Authorization: Bearer …`) when one is
 * configured; on an admin port of its own the port is the protection.
 */
export function metricsRoute(app: FastifyInstance, metrics: Metrics, token: string | null) {
  app.get('/metrics', { schema: { hide: true }, logLevel: 'warn' }, async (request, reply) => {
    if (token !== null) {
      const given = /^Bearer (.+)$/.exec(request.headers.authorization ?? '')?.[1] ?? ''
      if (!sameToken(given, token)) {
        return reply
          .code(401)
          .header('www-authenticate', 'Bearer')
          .send({ detail: 'A valid metrics token is required', code: 'not_authenticated' })
      }
    }
    await metrics.refreshQueue()
    return reply.type(metrics.registry.contentType).send(await metrics.registry.metrics())
  })
}
