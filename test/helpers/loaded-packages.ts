/**
 * A program, run by footprint.test.ts in a process of its own (DATABASE_URL in its environment):
 * it starts the app as the server does (dispatcher and import runner included, metrics off), serves
 * a few requests, then fetches the OpenAPI document, and prints which of the packages a server may
 * do without were loaded after each step, as one JSON line.
 */
import { createRequire } from 'node:module'
import { createApiKey } from '../../src/api-keys/api-keys.service.js'
import { buildApp } from '../../src/app.js'
import { dispatcherOptionsOf, loadConfig } from '../../src/config.js'
import { databaseOptionsOf, openDatabase } from '../../src/db/database.js'
import { migrateToLatest } from '../../src/db/migrations.js'
import { createOrganization } from '../../src/organizations/organizations.service.js'
import { startImports } from '../../src/serve.js'
import { startDispatcher } from '../../src/webhooks/dispatcher.js'

export const OPTIONAL_PACKAGES = ['pg', 'better-sqlite3', 'prom-client', 'undici', 'openapi-sampler'] as const

/** CommonJS packages (all of these are) stay in require's cache once loaded, wherever from. */
const moduleCache = createRequire(import.meta.url).cache
const loaded = () =>
  OPTIONAL_PACKAGES.filter((name) =>
    Object.keys(moduleCache).some((path) => path.includes(`/node_modules/${name}/`)),
  )

const config = loadConfig(process.env, { logLevel: 'silent', webhookPollIntervalMs: 50 })
const database = openDatabase(config.databaseUrl, databaseOptionsOf(config))
await migrateToLatest(database)
const app = await buildApp(config, { database })
const dispatcher = startDispatcher(database.db, dispatcherOptionsOf(config), app.log)
const imports = startImports(app, config)
const org = await createOrganization(database.db, 'footprint')
const { key } = await createApiKey(database.db, { orgId: org.id, name: 'footprint', role: 'full_access' })
const headers = { 'x-api-key': key }
const created = await app.inject({
  method: 'POST',
  url: '/api/v1/contact',
  headers,
  payload: { first_name: 'Ada' },
})
const { id } = created.json().data as { id: string }
await app.inject({ method: 'PUT', url: `/api/v1/contact/${id}`, headers, payload: { last_name: 'Lovelace' } })
await app.inject({ method: 'GET', url: `/api/v1/contact/${id}`, headers })
await app.inject({ method: 'GET', url: '/api/v1/contact?page=1&size=5', headers })
// Long enough for the dispatcher to have looked at the log twice.
await new Promise((resolve) => setTimeout(resolve, 150))
const afterRequests = loaded()
await app.inject({ method: 'GET', url: '/openapi.json' })
const afterDocument = loaded()
await imports.stop()
await dispatcher.stop()
await app.close()
await database.close()
process.stdout.write(`${JSON.stringify({ afterRequests, afterDocument })}\n`)
