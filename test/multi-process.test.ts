import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Redis } from 'ioredis'
import { createApiKey } from '../src/api-keys/api-keys.service.js'
import { openDatabase } from '../src/db/database.js'
import { migrateToLatest } from '../src/db/migrations.js'
import { createOrganization } from '../src/organizations/organizations.service.js'
import { BACKENDS, type TestDatabase } from './helpers/backends.js'
import { type ServerProcess, startServerProcess } from './helpers/processes.js'

/**
 * Two server processes on one PostgreSQL and one Redis, as a horizontally scaled deployment runs.
 * Without Redis the suite is skipped and says so, unless REQUIRE_REDIS=1 (as in CI).
 */
const REDIS_URL = process.env.TEST_REDIS_URL ?? 'redis://127.0.0.1:6379'

async function probeRedis(): Promise<string | false> {
  const client = new Redis(REDIS_URL, { lazyConnect: true, connectTimeout: 2000, maxRetriesPerRequest: 0 })
  client.on('error', () => {})
  try {
    await client.connect()
    await client.ping()
    return false
  } catch (error) {
    const reason = `multi-process suite skipped: cannot reach Redis at ${REDIS_URL} (${(error as Error).message})`
    if (process.env.REQUIRE_REDIS === '1') throw new Error(`REQUIRE_REDIS=1 but ${reason}`)
    return reason
  } finally {
    client.disconnect()
  }
}
const redisSkip = await probeRedis()
if (redisSkip) process.stderr.write(`${redisSkip}\n`)

const postgres = BACKENDS.find((backend) => backend.name === 'postgres')

describe('two server processes on one PostgreSQL and Redis', { skip: postgres?.skip || redisSkip }, () => {
  let database: TestDatabase
  let servers: ServerProcess[]
  let key: string
  let limitedKey: string
  const LIMIT = 10

  before(async () => {
    database = await (postgres as NonNullable<typeof postgres>).createDatabase()
    const setup = openDatabase(database.url)
    await migrateToLatest(setup)
    const org = await createOrganization(setup.db, 'scaled')
    key = (await createApiKey(setup.db, { orgId: org.id, name: 'k', role: 'full_access' })).key
    limitedKey = (await createApiKey(setup.db, { orgId: org.id, name: 'limited', role: 'read_only' })).key
    await setup.close()
    const env = {
      DATABASE_URL: database.url,
      REDIS_URL,
      RATE_LIMIT_PER_KEY: String(LIMIT),
      RATE_LIMIT_WINDOW_MS: '60000',
    }
    servers = await Promise.all([startServerProcess(env), startServerProcess(env)])
  })
  after(async () => {
    await Promise.all((servers ?? []).map((server) => server.stop()))
    await database?.drop()
  })

  const call = (server: ServerProcess, path: string, init: RequestInit = {}, apiKey = key) =>
    fetch(`${server.url}/api/v1${path}`, {
      ...init,
      headers: { 'x-api-key': apiKey, 'content-type': 'application/json', ...(init.headers ?? {}) },
    })

  test('an update raced from both processes with one If-Match succeeds exactly once', async () => {
    const [first, second] = servers as [ServerProcess, ServerProcess]
    const created = await call(first, '/contact', {
      method: 'POST',
      body: JSON.stringify({ first_name: 'Shared' }),
    })
    const { data } = (await created.json()) as { data: { id: string } }
    const etag = created.headers.get('etag') as string
    const answers = await Promise.all(
      [first, second, first, second].map((server, i) =>
        call(server, `/contact/${data.id}`, {
          method: 'PUT',
          headers: { 'if-match': etag },
          body: JSON.stringify({ first_name: `P${i}` }),
        }),
      ),
    )
    assert.deepEqual(answers.map((answer) => answer.status).sort(), [200, 412, 412, 412])
  })

  test('the per-key rate limit holds across both processes', async () => {
    const statuses: number[] = []
    for (let i = 0; i < LIMIT + 2; i++) {
      statuses.push((await call(servers[i % 2] as ServerProcess, '/contact', {}, limitedKey)).status)
    }
    assert.equal(statuses.filter((status) => status === 200).length, LIMIT)
    assert.deepEqual(statuses.slice(LIMIT), [429, 429])
    const refused = await call(servers[1] as ServerProcess, '/contact', {}, limitedKey)
    assert.equal(refused.status, 429)
    assert.ok(Number(refused.headers.get('retry-after')) > 0)
  })
})
