import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { after, describe, test } from 'node:test'
import { createApiKey } from '../src/api-keys/api-keys.service.js'
import { openDatabase } from '../src/db/database.js'
import { migrateToLatest } from '../src/db/migrations.js'
import { createOrganization } from '../src/organizations/organizations.service.js'
import { BACKENDS, type TestBackend, type TestDatabase } from './helpers/backends.js'
import { CLI, type ServerProcess, startServerProcess } from './helpers/processes.js'
import { type ReceivedRequest, type Receiver, startReceiver } from './helpers/receiver.js'

const LOOPBACK = '127.0.0.0/8,::1/128'

/** A fresh database with one organization and a full_access key, as an operator sets one up. */
async function setUp(backend: TestBackend) {
  const database = await backend.createDatabase()
  const handle = openDatabase(database.url)
  await migrateToLatest(handle)
  const org = await createOrganization(handle.db, 'webhooks')
  const { key } = await createApiKey(handle.db, { orgId: org.id, name: 'k', role: 'full_access' })
  return {
    database,
    key,
    /** Ids of every event recorded so far, read from the database itself. */
    async eventIds() {
      const rows = await handle.db.selectFrom('contact_events').select('id').execute()
      return rows.map((row) => row.id)
    },
    close: () => handle.close(),
  }
}

async function api(server: ServerProcess, key: string, method: string, path: string, body?: unknown) {
  const response = await fetch(`${server.url}/api/v1${path}`, {
    method,
    headers: { 'x-api-key': key, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })
  const text = await response.text()
  assert.ok(response.status < 300, `${method} ${path}: ${response.status} ${text}`)
  return JSON.parse(text).data
}

const overlaps = (a: ReceivedRequest, b: ReceivedRequest) =>
  a.receivedAt < (b.answeredAt ?? Number.POSITIVE_INFINITY) &&
  b.receivedAt < (a.answeredAt ?? Number.POSITIVE_INFINITY)

for (const backend of BACKENDS) {
  describe(`webhook delivery through a crash on ${backend.name}`, { skip: backend.skip }, () => {
    const cleanups: (() => Promise<unknown>)[] = []
    after(async () => {
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
    })

    test('a server killed mid-delivery and started again delivers every event, at least once', async () => {
      const setup = await setUp(backend)
      cleanups.push(
        () => setup.database.drop(),
        () => setup.close(),
      )
      // The first delivery hangs: the server is killed while it waits for the answer.
      const receiver: Receiver = await startReceiver((_request, index) =>
        index === 0 ? 'hang' : { status: 200, delayMs: 5 },
      )
      cleanups.push(() => receiver.close())
      const env = {
        DATABASE_URL: setup.database.url,
        WEBHOOK_ALLOWED_NETWORKS: LOOPBACK,
        WEBHOOK_TIMEOUT_MS: '1000',
        WEBHOOK_POLL_INTERVAL_MS: '100',
        WEBHOOK_RETRY_BASE_MS: '100',
        WEBHOOK_RETRY_MAX_DELAY_MS: '500',
      }
      const first = await startServerProcess(env)
      cleanups.push(() => first.stop())
      await api(first, setup.key, 'POST', '/outbound_webhook', { endpoint: `${receiver.url}/crash` })
      for (let i = 0; i < 20; i++)
        await api(first, setup.key, 'POST', '/contact', { first_name: `Crash ${i}` })
      await receiver.until(() => receiver.received.length >= 1)
      first.process.kill('SIGKILL')
      await once(first.process, 'exit')
      const interrupted = receiver.received[0]?.eventId as string

      const second = await startServerProcess(env)
      cleanups.push(() => second.stop())
      const events = await setup.eventIds()
      assert.equal(events.length, 20)
      await receiver.until(
        () => events.every((id) => receiver.acknowledged(id) >= 1),
        20_000,
        'every event to be acknowledged after the restart',
      )
      assert.ok(receiver.received.filter((r) => r.eventId === interrupted).length >= 2)
      await second.stop()
    })
  })
}

for (const backend of BACKENDS) {
  describe(`a dispatcher process of its own on ${backend.name}`, { skip: backend.skip }, () => {
    const cleanups: (() => Promise<unknown>)[] = []
    after(async () => {
      for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
    })

    test('servers with WEBHOOK_DISPATCHER=false queue deliveries; `contacts dispatch` sends them', async () => {
      const setup = await setUp(backend)
      cleanups.push(
        () => setup.database.drop(),
        () => setup.close(),
      )
      const receiver = await startReceiver()
      cleanups.push(() => receiver.close())
      const env = { DATABASE_URL: setup.database.url, WEBHOOK_ALLOWED_NETWORKS: LOOPBACK }
      const server = await startServerProcess({ ...env, WEBHOOK_DISPATCHER: 'false' })
      cleanups.push(() => server.stop())
      await api(server, setup.key, 'POST', '/outbound_webhook', { endpoint: `${receiver.url}/apart` })
      for (let i = 0; i < 5; i++)
        await api(server, setup.key, 'POST', '/contact', { first_name: `Apart ${i}` })
      await new Promise((resolve) => setTimeout(resolve, 1_500))
      assert.equal(receiver.received.length, 0, 'the server itself delivers nothing')

      const dispatcher = spawn(process.execPath, [CLI, 'dispatch'], {
        env: { ...process.env, ...env, LOG_LEVEL: 'info' },
      })
      cleanups.push(async () => {
        if (dispatcher.exitCode === null && dispatcher.signalCode === null) {
          dispatcher.kill('SIGTERM')
          await once(dispatcher, 'exit')
        }
      })
      const events = await setup.eventIds()
      await receiver.until(
        () => events.every((id) => receiver.acknowledged(id) === 1),
        15_000,
        'the dispatcher process to deliver every event',
      )
      // With nothing left to send, it waits for more instead of ending.
      await new Promise((resolve) => setTimeout(resolve, 1_500))
      assert.equal(dispatcher.exitCode, null, 'the dispatcher keeps running while idle')
      await api(server, setup.key, 'POST', '/contact', { first_name: 'Later' })
      const later = (await setup.eventIds()).filter((id) => !events.includes(id))
      assert.equal(later.length, 1)
      await receiver.until(
        () => later.every((id) => receiver.acknowledged(id) === 1),
        15_000,
        'the dispatcher process to deliver an event written while it was idle',
      )
      dispatcher.kill('SIGTERM')
      const [exitCode] = await once(dispatcher, 'exit')
      assert.equal(exitCode, 0, 'it stops cleanly on SIGTERM')
    })
  })
}

const postgres = BACKENDS.find((backend) => backend.name === 'postgres') as TestBackend

describe('two server processes delivering from one PostgreSQL', { skip: postgres.skip }, () => {
  let setup: Awaited<ReturnType<typeof setUp>>
  let database: TestDatabase
  const servers: ServerProcess[] = []
  let receiver: Receiver
  after(async () => {
    for (const server of servers) await server.stop()
    await receiver?.close()
    await setup?.close()
    await database?.drop()
  })

  test('each delivery is sent by one process at a time, and each event exactly once when nothing fails', async () => {
    setup = await setUp(postgres)
    database = setup.database
    receiver = await startReceiver(() => ({ status: 200, delayMs: 5 + Math.floor(Math.random() * 20) }))
    const env = {
      DATABASE_URL: database.url,
      WEBHOOK_ALLOWED_NETWORKS: LOOPBACK,
      WEBHOOK_POLL_INTERVAL_MS: '20',
      WEBHOOK_CONCURRENCY: '4',
    }
    servers.push(...(await Promise.all([startServerProcess(env), startServerProcess(env)])))
    const [a, b] = servers as [ServerProcess, ServerProcess]
    await api(a, setup.key, 'POST', '/outbound_webhook', { endpoint: `${receiver.url}/both` })
    const batch = await api(a, setup.key, 'POST', '/contact/batch/upsert', {
      contacts: Array.from({ length: 200 }, (_, i) => ({ email: `both${i}@example.com` })),
    })
    const ids: string[] = batch.results.map((r: { id: string }) => r.id)
    await Promise.all(
      ids
        .slice(0, 100)
        .map((id, i) => api(i % 2 ? a : b, setup.key, 'PUT', `/contact/${id}`, { first_name: `Both ${i}` })),
    )
    const events = await setup.eventIds()
    assert.equal(events.length, 300)
    await receiver.until(
      () => events.every((id) => receiver.acknowledged(id) >= 1),
      30_000,
      'every event to be delivered',
    )
    const byEvent = new Map<string, ReceivedRequest[]>()
    for (const request of receiver.received)
      byEvent.set(request.eventId, [...(byEvent.get(request.eventId) ?? []), request])
    for (const [eventId, requests] of byEvent) {
      assert.equal(requests.length, 1, `event ${eventId} was delivered ${requests.length} times`)
      for (let i = 0; i < requests.length; i++)
        for (let j = i + 1; j < requests.length; j++)
          assert.ok(!overlaps(requests[i] as ReceivedRequest, requests[j] as ReceivedRequest))
    }
    // Each contact's events arrived in order: created before updated.
    const order = receiver.received.map(
      (r) => JSON.parse(r.body) as { event: string; data: { contact_id: string } },
    )
    for (const id of ids.slice(0, 100)) {
      const kinds = order.filter((e) => e.data.contact_id === id).map((e) => e.event)
      assert.deepEqual(kinds, ['contact.created', 'contact.updated'])
    }
  })
})
