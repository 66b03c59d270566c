import type { FastifyInstance, InjectOptions, LightMyRequestResponse } from 'fastify'
import type { DestinationStream } from 'pino'
import * as apiKeys from '../../src/api-keys/api-keys.service.js'
import { buildApp } from '../../src/app.js'
import { type Config, dispatcherOptionsOf, loadConfig } from '../../src/config.js'
import { type DatabaseHandle, databaseOptionsOf, openDatabase } from '../../src/db/database.js'
import { migrateToLatest } from '../../src/db/migrations.js'
import * as organizations from '../../src/organizations/organizations.service.js'
import { startImports } from '../../src/serve.js'
import { startDispatcher } from '../../src/webhooks/dispatcher.js'
import type { TestBackend, TestDatabase } from './backends.js'

export interface TestOrg {
  id: string
  name: string
  /** A full_access key. */
  key: string
  readOnlyKey: string
  keyId: string
}

export interface TestApp {
  app: FastifyInstance
  database: DatabaseHandle
  testDatabase: TestDatabase
  createOrg(name?: string): Promise<TestOrg>
  /** app.inject with the key put in the query string, as the original API takes it. */
  call(key: string | null, options: InjectOptions & { url: string }): Promise<LightMyRequestResponse>
  /** `call` on a route under /api/v1, with an optional JSON body. */
  api(key: string | null, method: string, path: string, payload?: unknown): Promise<LightMyRequestResponse>
  close(): Promise<void>
}

let orgCounter = 0

/** The real app, on a fresh database of the backend, with the real migrations. */
export async function startTestApp(
  backend: TestBackend,
  options: {
    logStream?: DestinationStream
    config?: Partial<Config>
    dispatcher?: boolean
    /** Runs import jobs beside the app, as `serve` does. */
    importRunner?: boolean
  } = {},
) {
  const testDatabase = await backend.createDatabase()
  // Suites send thousands of requests a minute with one key; the limits have tests of their own.
  const config = loadConfig(
    {},
    {
      databaseUrl: testDatabase.url,
      logLevel: options.logStream ? 'info' : 'silent',
      rateLimitPerKey: 1_000_000_000,
      rateLimitPerAddress: 1_000_000_000,
      databasePoolSize: 5,
      ...options.config,
    },
  )
  const database = openDatabase(config.databaseUrl, databaseOptionsOf(config))
  await migrateToLatest(database)
  const app = await buildApp(config, { database, logStream: options.logStream })
  await app.ready()
  // As `serve` runs it: the webhook dispatcher beside the app, on the same database.
  const dispatcher = options.dispatcher
    ? startDispatcher(database.db, dispatcherOptionsOf(config), app.log, app.metrics?.deliveryAttempted)
    : null
  const importRunner = options.importRunner ? startImports(app, config) : null

  const testApp: TestApp = {
    app,
    database,
    testDatabase,
    async createOrg(name) {
      orgCounter += 1
      const org = await organizations.createOrganization(
        database.db,
        name ?? `org-${process.pid}-${orgCounter}`,
      )
      const full = await apiKeys.createApiKey(database.db, {
        orgId: org.id,
        name: 'full',
        role: 'full_access',
      })
      const readOnly = await apiKeys.createApiKey(database.db, {
        orgId: org.id,
        name: 'ro',
        role: 'read_only',
      })
      return { id: org.id, name: org.name, key: full.key, readOnlyKey: readOnly.key, keyId: full.id }
    },
    call(key, { url, ...rest }) {
      const withKey =
        key === null ? url : `${url}${url.includes('?') ? '&' : '?'}api_key=${encodeURIComponent(key)}`
      return app.inject({ ...rest, url: withKey })
    },
    api(key, method, path, payload) {
      return this.call(key, {
        method: method as 'GET',
        url: `/api/v1${path}`,
        ...(payload ? { payload: payload as object } : {}),
      })
    },
    async close() {
      await dispatcher?.stop()
      await importRunner?.stop()
      await app.close()
      await database.close()
      await testDatabase.drop()
    },
  }
  return testApp
}
