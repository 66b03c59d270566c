/**
 * A program, run by footprint.test.ts in a process of its own on the database at DATABASE_URL
 * (which the test creates and drops): it starts the app as the server does (dispatcher and import
 * runner included, metrics off), serves a few requests, then fetches the OpenAPI document, and
 * prints which of the packages a server may do without were loaded after each step, as one JSON
 * line.
 */
import { createRequire } from 'node:module'
import { startTestApp } from './app.js'

const OPTIONAL_PACKAGES = ['pg', 'better-sqlite3', 'prom-client', 'undici', 'openapi-sampler'] as const

/** CommonJS packages (all of these are) stay in require's cache once loaded, wherever from. */
const moduleCache = createRequire(import.meta.url).cache
const loaded = () =>
  OPTIONAL_PACKAGES.filter((name) =>
    Object.keys(moduleCache).some((path) => path.includes(`/node_modules/${name}/`)),
  )

const url = process.env.DATABASE_URL as string
const t = await startTestApp(
  {
    name: url.startsWith('sqlite:') ? 'sqlite' : 'postgres',
    skip: false,
    createDatabase: async () => ({ url, drop: async () => {} }),
  },
  { dispatcher: true, importRunner: true, config: { webhookPollIntervalMs: 50 } },
)
const org = await t.createOrg()
const created = await t.api(org.key, 'POST', '/contact', { first_name: 'Ada' })
const { id } = created.json().data as { id: string }
await t.api(org.key, 'PUT', `/contact/${id}`, { last_name: 'Lovelace' })
await t.api(org.key, 'GET', `/contact/${id}`)
await t.api(org.key, 'GET', '/contact?page=1&size=5')
// Long enough for the dispatcher to have looked at the log twice.
await new Promise((resolve) => setTimeout(resolve, 150))
const afterRequests = loaded()
await t.app.inject({ method: 'GET', url: '/openapi.json' })
const afterDocument = loaded()
await t.close()
process.stdout.write(`${JSON.stringify({ afterRequests, afterDocument })}\n`)
