import closeWithGrace from 'close-with-grace'
import Fastify, { type FastifyInstance } from 'fastify'
import { pino } from 'pino'
import { buildApp } from './app.js'
import { type Config, dispatcherOptionsOf } from './config.js'
import { foldContactCounts, purgeTrash } from './contacts/contacts.service.js'
import { databaseOptionsOf, openDatabase } from './db/database.js'
import { startPendingListCleaner } from './db/gin-pending-lists.js'
import { migrateToLatest } from './db/migrations.js'
import { organizationSizes, refreshStaleStatistics } from './db/planner-statistics.js'
import { type ImportRunner, startImportRunner } from './imports/imports.service.js'
import { manageHeapGrowth } from './shared/heap-growth.js'
import { setV8FlagUnlessGiven } from './shared/v8-flags.js'
import { startDispatcher } from './webhooks/dispatcher.js'

const TRASH_PURGE_INTERVAL_MS = 60 * 60 * 1000
const COUNT_FOLD_INTERVAL_MS = 60 * 1000
/** How often PostgreSQL's tables are checked for statistics gone stale (db/planner-statistics.ts). */
const STATISTICS_CHECK_INTERVAL_MS = 10 * 1000

/**
 * Two V8 settings that keep the server's resident memory down:
 *
 * - The heap is let grow less between full collections than V8 would, and less while the
 *   process serves the API than while it runs an import or export (shared/heap-growth.ts, with
 *   what it costs a batch upsert).
 * - The webhook client (undici) parses answers with a WebAssembly build of llhttp. Soon after the
 *   first delivery V8 recompiles that module with its optimizing compiler, in the background,
 *   which took the server's resident memory up by 28 MB for a moment and by 10 MB for good.
 *   Its baseline compiler's code parses an answer in about the same CPU time (it is a few
 *   hundred bytes), so WebAssembly stays on the baseline compiler.
 */
function limitMemory() {
  manageHeapGrowth()
  setV8FlagUnlessGiven('--liftoff-only')
}

/**
 * Opens the database, brings its schema up to date, and serves until SIGINT/SIGTERM, then stops
 * accepting, lets in-flight requests finish (bounded) and closes the database.
 */
export async function startServer(
  config: Config,
  options: {
    /** Routes added beside the app's own (the benchmark's fixed-JSON ceiling). */
    extraRoutes?: (app: FastifyInstance) => void
  } = {},
): Promise<void> {
  limitMemory()
  const database = await openMigrated(config)
  const app = await buildApp(config, { database })
  options.extraRoutes?.(app)
  // While shutting down, answers close their connection: a keep-alive connection that finishes
  // its request after close() began would otherwise hold the server open until the grace period ends.
  let closing = false
  app.addHook('onSend', async (_request, reply) => {
    if (closing) reply.header('connection', 'close')
  })
  const purge = () =>
    purgeTrash(database.db, config.trashRetentionDays)
      .then((count) => count > 0 && app.log.info({ count }, 'erased contacts past their time in the trash'))
      .catch((err) => app.log.error({ err }, 'emptying the trash failed'))
  void purge()
  const purgeTimer = setInterval(purge, TRASH_PURGE_INTERVAL_MS).unref()
  const foldTimer =
    database.dialect === 'postgres'
      ? setInterval(
          () =>
            foldContactCounts(database.db).catch((err) =>
              app.log.error({ err }, 'folding contact counts failed'),
            ),
          COUNT_FOLD_INTERVAL_MS,
        ).unref()
      : undefined
  let statisticsCheck: Promise<unknown> | null = null
  const sizesAtLastRefresh = organizationSizes()
  const statisticsTimer =
    database.dialect === 'postgres'
      ? setInterval(() => {
          // A check still running (an ANALYZE of a large table) is not doubled.
          statisticsCheck ??= refreshStaleStatistics(database.db, sizesAtLastRefresh)
            .then((tables) => tables.length > 0 && app.log.info({ tables }, 'refreshed planner statistics'))
            .catch((err) => app.log.warn({ err }, 'refreshing planner statistics failed'))
            .finally(() => {
              statisticsCheck = null
            })
        }, STATISTICS_CHECK_INTERVAL_MS).unref()
      : undefined
  const ginCleaner =
    database.dialect === 'postgres' && config.ginCleanIntervalMs > 0
      ? startPendingListCleaner(database.db, {
          intervalMs: config.ginCleanIntervalMs,
          onError: (err) => app.log.warn({ err }, 'moving GIN pending lists into their indexes failed'),
        })
      : null
  const dispatcher = config.webhookDispatcher
    ? startDispatcher(
        database.db,
        dispatcherOptionsOf(config),
        app.log.child({ component: 'webhooks' }),
        app.metrics ? app.metrics.deliveryAttempted : undefined,
      )
    : null
  const importRunner = config.importRunner ? startImports(app, config) : null
  const admin = app.metrics && config.metricsPort !== undefined ? await metricsServer(app, config) : null
  closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
    if (err) app.log.error({ err }, 'shutting down after an uncaught error')
    else app.log.info({ signal }, 'shutting down')
    clearInterval(purgeTimer)
    clearInterval(foldTimer)
    clearInterval(statisticsTimer)
    closing = true
    await app.close()
    await admin?.close()
    // Deliveries in flight finish (bounded by the webhook timeout) and are recorded.
    await dispatcher?.stop()
    // The job in progress finishes its batch and is handed back, to be resumed where it stopped.
    await importRunner?.stop()
    await ginCleaner?.stop()
    await statisticsCheck
    await database.close()
  })
  await app.listen({ host: config.host, port: config.port })
}

/** The import runner beside an app, started at once on each job the app queues. */
export function startImports(app: FastifyInstance, config: Config): ImportRunner {
  const runner = startImportRunner(app.database.db, app.log.child({ component: 'imports' }), {
    pollIntervalMs: 2_000,
    leaseMs: config.importLeaseMs,
    ...(app.metrics ? { onBatch: app.metrics.importRows } : {}),
  })
  app.importQueued.addEventListener('queued', () => runner.wake())
  return runner
}

/**
 * /metrics alone on METRICS_PORT (of HOST), for a network that only operators reach; the token,
 * when also set, is required there too.
 */
async function metricsServer(app: FastifyInstance, config: Config): Promise<FastifyInstance> {
  const admin = Fastify({ logger: false })
  if (app.metrics) {
    const { metricsRoute } = await import('./metrics/metrics.js')
    metricsRoute(admin, app.metrics, config.metricsToken ?? null)
  }
  const address = await admin.listen({ host: config.host, port: config.metricsPort ?? 0 })
  app.log.info(`metrics listening at ${address}/metrics`)
  return admin
}

/**
 * `contacts dispatch`: a process that only delivers webhooks, for deployments that keep delivery
 * work off the API's processes (run those with WEBHOOK_DISPATCHER=false). Any number may run
 * against one PostgreSQL; they share the work through the same claims as in-server dispatchers.
 */
export async function startDispatcherProcess(config: Config): Promise<void> {
  limitMemory()
  const log = pino({ level: config.logLevel })
  const database = await openMigrated(config)
  const dispatcher = startDispatcher(
    database.db,
    dispatcherOptionsOf(config),
    log.child({ component: 'webhooks' }),
  )
  // The dispatcher's timers do not hold a process open (a server's listening socket does), and on
  // SQLite nothing else would: this keeps the process waiting for work until it is told to stop.
  const keepRunning = setInterval(() => {}, 2 ** 31 - 1)
  closeWithGrace({ delay: 10_000 }, async ({ signal, err }) => {
    if (err) log.error({ err }, 'shutting down after an uncaught error')
    else log.info({ signal }, 'shutting down')
    clearInterval(keepRunning)
    await dispatcher.stop()
    await database.close()
  })
  log.info('webhook dispatcher running')
}

/** The configured database, its schema brought up to date; closed again if that fails. */
async function openMigrated(config: Config) {
  const database = openDatabase(config.databaseUrl, databaseOptionsOf(config))
  try {
    await migrateToLatest(database)
  } catch (error) {
    await database.close().catch(() => {})
    throw error
  }
  return database
}
