import assert from 'node:assert/strict'
import { once } from 'node:events'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { CompiledQuery, sql } from 'kysely'
import {
  claimDueDeliveries,
  completeDeliveries,
  dueDeliveries,
  findDelivery,
  insertAttempts,
  listAttempts,
  queueFromLog,
} from '../src/webhooks/webhooks.repository.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'
import { type Receiver, startReceiver } from './helpers/receiver.js'

const README = fileURLToPath(new URL('../../README.md', import.meta.url))
const LOOPBACK = '127.0.0.0/8,::1/128'

type Verify = (secret: string, signatureHeader: string, rawBody: string, toleranceSeconds?: number) => boolean

/** The verification snippet exactly as the README documents it, loaded as a module. */
async function readmeVerifier(): Promise<Verify> {
  const readme = await readFile(README, 'utf8')
  const marker = readme.indexOf('<!-- webhook-verification -->')
  assert.ok(marker >= 0, 'the README documents webhook verification')
  const block = /```js\n([\s\S]*?)```/.exec(readme.slice(marker))?.[1]
  assert.ok(block, 'the README has the snippet')
  const dir = await mkdtemp(join(tmpdir(), 'verify-'))
  const file = join(dir, 'verify.mjs')
  await writeFile(file, block)
  try {
    return ((await import(file)) as { verifyWebhook: Verify }).verifyWebhook
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

async function eventually<T>(
  read: () => Promise<T>,
  ok: (value: T) => boolean,
  what: string,
  timeoutMs = 15_000,
) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await read()
    if (ok(value)) return value
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}: ${JSON.stringify(value)}`)
    await sleep(25)
  }
}

for (const backend of BACKENDS) {
  describe(`webhook management on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    let other: TestOrg
    before(async () => {
      // No networks allowed: the operator's default.
      t = await startTestApp(backend)
      org = await t.createOrg()
      other = await t.createOrg()
    })
    after(() => t?.close())

    const call = (method: string, url: string, payload?: unknown, key = org.key) =>
      t.api(key, method, url, payload)

    test('targets inside the network are refused with a 422 that names the endpoint', async () => {
      for (const endpoint of [
        'http://127.0.0.1:8080/hook',
        'http://localhost/hook',
        'http://[::1]/hook',
        'http://[::ffff:127.0.0.1]/hook',
        'http://0.0.0.0/hook',
        'http://10.1.2.3/hook',
        'http://172.20.0.5/hook',
        'http://192.168.1.10/hook',
        'http://169.254.169.254/latest/meta-data',
        'http://[fd00::1]/hook',
        'http://[fe80::1]/hook',
        'ftp://example.com/hook',
        'http://user:secret@93.184.216.34/hook',
        'not a url',
      ]) {
        const response = await call('POST', '/outbound_webhook', { endpoint })
        assert.equal(response.statusCode, 422, endpoint)
        assert.deepEqual(response.json().detail[0].loc, ['body', 'endpoint'], endpoint)
      }
      assert.equal((await call('GET', '/outbound_webhook/list')).json().data.items.length, 0)
    })

    test('create, list, get, update, rotate and delete; the secret is shown only when made', async () => {
      const created = await call('POST', '/outbound_webhook', {
        endpoint: 'https://93.184.216.34/hooks/contacts',
        name: 'CRM',
        enabled: true,
      })
      assert.equal(created.statusCode, 201, created.body)
      const webhook = created.json().data
      assert.match(webhook.secret, /^whsec_[\w-]{43}$/)
      assert.equal(webhook.secret_hint, `whsec_…${webhook.secret.slice(-4)}`)
      assert.deepEqual(webhook.events, [
        'contact.created',
        'contact.updated',
        'contact.deleted',
        'contact.restored',
        'contact.merged',
        'contact.erased',
      ])
      assert.equal(webhook.org_id, org.id)
      assert.equal(webhook.enabled, true)

      for (const path of ['/outbound_webhook/list', '/outbound_webhook']) {
        const list = (await call('GET', path)).json().data
        assert.deepEqual(
          list.items.map((w: { id: string }) => w.id),
          [webhook.id],
        )
        assert.equal(list.items[0].secret, undefined)
      }
      const fetched = (await call('GET', `/outbound_webhook/${webhook.id}`)).json().data
      assert.equal(fetched.secret, undefined)
      assert.equal(fetched.name, 'CRM')

      const updated = await call('PUT', `/outbound_webhook/${webhook.id}`, {
        name: 'CRM sync',
        events: ['contact.updated', 'contact.created'],
        enabled: false,
      })
      assert.equal(updated.statusCode, 200, updated.body)
      assert.deepEqual(updated.json().data.events, ['contact.created', 'contact.updated'])
      assert.equal(updated.json().data.enabled, false)
      const refused = await call('PUT', `/outbound_webhook/${webhook.id}`, { endpoint: 'http://10.0.0.1/' })
      assert.equal(refused.statusCode, 422)
      assert.equal(
        (await call('GET', `/outbound_webhook/${webhook.id}`)).json().data.endpoint,
        webhook.endpoint,
      )

      const rotated = (await call('POST', `/outbound_webhook/${webhook.id}/rotate_secret`)).json().data
      assert.notEqual(rotated.secret, webhook.secret)

      assert.equal(
        (await call('GET', `/outbound_webhook/${webhook.id}`, undefined, other.key)).statusCode,
        404,
      )
      assert.equal(
        (await call('DELETE', `/outbound_webhook/${webhook.id}`, undefined, other.key)).statusCode,
        404,
      )
      assert.equal((await call('DELETE', `/outbound_webhook/${webhook.id}`)).statusCode, 200)
      const gone = await call('GET', `/outbound_webhook/${webhook.id}`)
      assert.equal(gone.statusCode, 404)
      assert.equal(gone.json().code, 'webhook_not_found')
    })

    test('a webhook is owed the events written while it is enabled, and only those, whenever they are queued', async () => {
      // No dispatcher runs here: deliveries stay pending, and the log shows what is owed.
      const created = await call('POST', '/outbound_webhook', {
        endpoint: 'https://93.184.216.34/hooks/owed',
        events: ['contact.created'],
      })
      assert.equal(created.statusCode, 201, created.body)
      const webhook = created.json().data as { id: string }
      const contact = async (first_name: string) => {
        const response = await call('POST', '/contact', { first_name })
        assert.equal(response.statusCode, 201, response.body)
        return response.json().data.id as string
      }
      const owedLog = async () =>
        (await call('GET', `/outbound_webhook/${webhook.id}/logs?limit=100`)).json().data.items as {
          contact_id: string
          status: string
        }[]
      const written = await contact('Written while enabled')
      const update = (body: object) => call('PUT', `/outbound_webhook/${webhook.id}`, body)
      assert.equal((await update({ enabled: false })).statusCode, 200)
      const whileDisabled = await contact('Written while disabled')
      assert.equal((await update({ enabled: true })).statusCode, 200)
      const afterwards = await contact('Written after enabling again')
      // Another event type than the webhook takes, and another organization's write: not owed.
      await call('PUT', `/contact/${afterwards}`, { last_name: 'Changed' })
      await call('POST', '/contact', { first_name: 'Elsewhere' }, other.key)
      const log = await owedLog()
      assert.deepEqual(log.map((delivery) => delivery.contact_id).sort(), [written, afterwards].sort())
      assert.ok(log.every((delivery) => delivery.status === 'pending'))
      assert.ok(!log.some((delivery) => delivery.contact_id === whileDisabled))
      // Looking again queues nothing twice.
      assert.equal((await owedLog()).length, 2)
      assert.equal((await call('DELETE', `/outbound_webhook/${webhook.id}`)).statusCode, 200)
    })

    test("the delivery log lists deliveries of one millisecond in their events' order", async () => {
      const created = await call('POST', '/outbound_webhook', {
        endpoint: 'https://93.184.216.34/hooks/ordered',
        events: ['contact.created'],
      })
      const webhook = created.json().data as { id: string }
      // One batch: its events share their time, so only the ids order them.
      const batch = await call('POST', '/contact/batch/upsert', {
        contacts: Array.from({ length: 40 }, (_, i) => ({ email: `ordered-${i}@example.com` })),
      })
      assert.equal(batch.statusCode, 200, batch.body)
      const log = (await call('GET', `/outbound_webhook/${webhook.id}/logs?limit=100`)).json().data.items as {
        id: string
        event_id: string
        created_at: string
      }[]
      assert.equal(log.length, 40)
      assert.equal(new Set(log.map((delivery) => delivery.created_at)).size, 1)
      const eventIds = log.map((delivery) => delivery.event_id)
      assert.deepEqual(eventIds, [...eventIds].sort().reverse())
      for (const delivery of log) {
        assert.match(delivery.id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
        assert.equal(delivery.id.slice(0, 19), delivery.event_id.slice(0, 19))
      }
      assert.equal((await call('DELETE', `/outbound_webhook/${webhook.id}`)).statusCode, 200)
    })

    test('a claimed delivery is completed only under its lease, and each attempt is recorded once', async () => {
      // No dispatcher runs here: the test claims and reports as one would.
      const created = await call('POST', '/outbound_webhook', {
        endpoint: 'https://93.184.216.34/hooks/leased',
        events: ['contact.created'],
      })
      const webhook = created.json().data as { id: string }
      assert.equal((await call('POST', '/contact', { first_name: 'Leased' })).statusCode, 201)
      const { db } = t.database
      const now = new Date().toISOString()
      const claim = (token: string) =>
        db.transaction().execute(async (trx) => {
          if (backend.name === 'sqlite') await queueFromLog(trx)
          const leaseUntil = new Date(Date.now() + 60_000).toISOString()
          const claimed = await claimDueDeliveries(trx, now, leaseUntil, token, 64, null)
          return claimed.filter((delivery) => delivery.webhook_id === webhook.id)
        })
      const [delivery, ...more] = await claim('first')
      assert.ok(delivery)
      assert.deepEqual(more, [])
      assert.deepEqual(await claim('second'), [], 'a leased delivery is not claimed again')

      const report = (leaseToken: string, statusCode: number) =>
        db.transaction().execute(async (trx) => {
          await insertAttempts(trx, [
            {
              org_id: org.id,
              delivery_id: delivery.id,
              attempt: 1,
              webhook_id: webhook.id,
              attempted_at: now,
              status_code: statusCode,
              error: null,
              duration_ms: 3,
            },
          ])
          await completeDeliveries(
            trx,
            [{ org_id: org.id, id: delivery.id, lease_token: leaseToken, last_status_code: statusCode }],
            now,
          )
        })
      const stored = async () => findDelivery(db, org.id, webhook.id, delivery.id)
      await report('a dispatcher that lost the lease', 200)
      assert.equal((await stored())?.status, 'pending', 'only the holder of the lease completes it')
      await report('first', 204)
      const completed = await stored()
      assert.equal(completed?.status, 'succeeded')
      assert.equal(completed?.attempts, 1)
      assert.equal(completed?.last_status_code, 204)
      assert.equal(completed?.lease_token, null)
      const attempts = await listAttempts(db, org.id, delivery.id)
      assert.deepEqual(
        attempts.map((attempt) => [attempt.attempt, attempt.status_code]),
        [[1, 200]],
        'the first report of an attempt stands',
      )
      assert.equal((await call('DELETE', `/outbound_webhook/${webhook.id}`)).statusCode, 200)
    })

    if (backend.name === 'postgres') {
      test("a claim reads the due index in order, whatever the planner's statistics say", async () => {
        // A database of its own, its statistics taken while nothing was due.
        const solo = await startTestApp(backend)
        try {
          const owner = await solo.createOrg()
          const { db } = solo.database
          const created = await solo.api(owner.key, 'POST', '/outbound_webhook', {
            endpoint: 'https://93.184.216.34/hooks/backlog',
          })
          assert.equal(created.statusCode, 201, created.body)
          await sql`analyze webhook_deliveries, contact_events, webhooks`.execute(db)
          await sql`
            with e as (
              insert into contact_events (org_id, id, contact_id, type, actor_type, actor_id, created_at, data)
              select ${owner.id}::uuid, gen_random_uuid(), gen_random_uuid(), 'contact.updated', 'api_key', null, now(), '{}'
              from generate_series(1, 8000) returning seq, org_id, contact_id, created_at)
            insert into webhook_deliveries
              (org_id, id, webhook_id, event_seq, contact_id, status, attempts, next_attempt_at, created_at)
            select org_id, gen_random_uuid(), ${created.json().data.id}::uuid, seq, contact_id, 'pending', 0, created_at, created_at
            from e`.execute(db)
          const planOfClaim = async (trx: typeof db) => {
            const compiled = dueDeliveries(trx, new Date().toISOString(), 64, 'all', '').compile()
            const { rows } = await trx.executeQuery<{ 'QUERY PLAN': string }>(
              CompiledQuery.raw(`explain ${compiled.sql}`, [...compiled.parameters]),
            )
            return rows.map((row) => row['QUERY PLAN']).join('\n')
          }
          // Planned as it comes, the query reads and sorts every due delivery to return 64.
          assert.match(await planOfClaim(db), /Sort/)
          await db.transaction().execute(async (trx) => {
            const inAMinute = new Date(Date.now() + 60_000).toISOString()
            const claimed = await claimDueDeliveries(
              trx,
              new Date().toISOString(),
              inAMinute,
              'check',
              64,
              null,
            )
            assert.equal(claimed.length, 64)
            // In the claim's transaction it is planned in the due index's order, stopped at 64.
            const plan = await planOfClaim(trx)
            assert.doesNotMatch(plan, /Sort/, plan)
            assert.match(plan, /Index Scan using webhook_deliveries_due_idx on webhook_deliveries d/, plan)
          })
        } finally {
          await solo.close()
        }
      })

      test("a claim's in-order check reads the order index, whatever the planner's statistics say", async () => {
        const { db } = t.database
        const created = await call('POST', '/outbound_webhook', {
          endpoint: 'https://93.184.216.34/hooks/burst',
          enabled: false,
        })
        const webhookId = created.json().data.id as string
        // A history of delivered events, the planner's statistics taken then, and a burst after.
        const queue = (count: number, status: 'pending' | 'succeeded') =>
          sql`
          with e as (
            insert into contact_events (org_id, id, contact_id, type, actor_type, actor_id, created_at, data)
            select ${org.id}::uuid, gen_random_uuid(), gen_random_uuid(), 'contact.updated', 'api_key', null, now(), '{}'
            from generate_series(1, ${count}) returning seq, org_id, contact_id, created_at)
          insert into webhook_deliveries
            (org_id, id, webhook_id, event_seq, contact_id, status, attempts, next_attempt_at, created_at)
          select org_id, gen_random_uuid(), ${webhookId}::uuid, seq, contact_id, ${status}, 0, created_at, created_at
          from e`.execute(db)
        await queue(3000, 'succeeded')
        await sql`analyze webhook_deliveries`.execute(db)
        await queue(3000, 'pending')
        const compiled = dueDeliveries(db, new Date().toISOString(), 64, 'all', '').compile()
        const { rows } = await t.database.db.executeQuery<{ 'QUERY PLAN': unknown }>(
          CompiledQuery.raw(`explain (format json) ${compiled.sql}`, [...compiled.parameters]),
        )
        const scans: { Alias?: string; 'Index Name'?: string }[] = []
        const walk = (node: unknown): void => {
          if (Array.isArray(node)) {
            for (const item of node) walk(item)
            return
          }
          if (node === null || typeof node !== 'object') return
          const record = node as Record<string, unknown>
          if (record.Alias === 'p') scans.push(record)
          for (const value of Object.values(record)) walk(value)
        }
        walk(rows[0]?.['QUERY PLAN'])
        assert.deepEqual(
          scans.map((scan) => scan['Index Name']),
          ['webhook_deliveries_order_idx'],
          JSON.stringify(rows[0]),
        )
        assert.equal((await call('DELETE', `/outbound_webhook/${webhookId}`)).statusCode, 200)
      })
    }

    test('a read_only key can look at webhooks but not change them', async () => {
      const response = await call(
        'POST',
        '/outbound_webhook',
        { endpoint: 'https://93.184.216.34/' },
        org.readOnlyKey,
      )
      assert.equal(response.statusCode, 403)
      assert.equal((await call('GET', '/outbound_webhook/list', undefined, org.readOnlyKey)).statusCode, 200)
    })
  })

  describe(`webhook deliveries on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    let receiver: Receiver
    let verifyWebhook: Verify
    before(async () => {
      t = await startTestApp(backend, {
        dispatcher: true,
        config: {
          webhookAllowedNetworks: LOOPBACK,
          webhookPollIntervalMs: 50,
          webhookRetryBaseMs: 40,
          webhookRetryMaxDelayMs: 150,
          webhookTimeoutMs: 500,
        },
      })
      org = await t.createOrg()
      receiver = await startReceiver()
      verifyWebhook = await readmeVerifier()
    })
    after(async () => {
      await t?.close()
      await receiver?.close()
    })

    const call = (method: string, url: string, payload?: unknown) => t.api(org.key, method, url, payload)
    const webhookTo = async (path: string, body: object = {}) => {
      const response = await call('POST', '/outbound_webhook', {
        endpoint: `${receiver.url}${path}`,
        ...body,
      })
      assert.equal(response.statusCode, 201, response.body)
      return response.json().data as { id: string; secret: string }
    }
    const contact = async (body: object) => {
      const response = await call('POST', '/contact', body)
      assert.equal(response.statusCode, 201, response.body)
      return response.json().data.id as string
    }
    const at = (path: string) => () => receiver.received.filter((r) => r.path === path)
    /** The webhook's delivery log once its newest delivery has succeeded. */
    const succeededLog = (webhookId: string, what: string) =>
      eventually(
        async () => (await call('GET', `/outbound_webhook/${webhookId}/logs`)).json().data.items,
        (items) => items[0]?.status === 'succeeded',
        what,
      )

    test('a delivery is the history event, signed as the README shows how to verify', async () => {
      const webhook = await webhookTo('/signed', { events: ['contact.created'] })
      const id = await contact({ first_name: 'Signed', email: 'signed@example.com' })
      await receiver.until(() => at('/signed')().length >= 1)
      const [delivery] = at('/signed')()
      assert.ok(delivery)
      const [event] = (await call('GET', `/contact/${id}/history`)).json().data.items
      assert.deepEqual(JSON.parse(delivery.body), event)
      assert.equal(delivery.headers['x-contacts-event-id'], event.id)
      assert.equal(delivery.headers['x-contacts-event'], 'contact.created')
      assert.equal(delivery.headers['content-type'], 'application/json')
      const signature = String(delivery.headers['x-contacts-signature'])
      assert.match(signature, /^t=\d+,v1=[0-9a-f]{64}$/)
      assert.equal(verifyWebhook(webhook.secret, signature, delivery.body), true)
      assert.equal(verifyWebhook(webhook.secret, signature, delivery.body.replace('Signed', 'Forged')), false)
      assert.equal(verifyWebhook(`${webhook.secret}x`, signature, delivery.body), false)
      const old = signature.replace(/t=\d+/, `t=${Math.floor(Date.now() / 1000) - 3600}`)
      assert.equal(
        verifyWebhook(webhook.secret, old, delivery.body),
        false,
        'a replayed timestamp is refused',
      )
    })

    test('a webhook naming fields is sent only the updates that change one of them, and its other events', async () => {
      const webhook = await webhookTo('/fields', { fields: ['email', 'custom_fields'] })
      assert.deepEqual((await call('GET', `/outbound_webhook/${webhook.id}`)).json().data.fields, [
        'email',
        'custom_fields',
      ])
      const everything = await webhookTo('/every-update')
      const id = await contact({ first_name: 'Fields', email: 'fields@example.com' })
      assert.equal((await call('PUT', `/contact/${id}`, { first_name: 'Renamed' })).statusCode, 200)
      assert.equal((await call('PUT', `/contact/${id}`, { email: 'moved@example.com' })).statusCode, 200)
      assert.equal((await call('PUT', `/contact/${id}`, { last_name: 'Again' })).statusCode, 200)
      assert.equal((await call('DELETE', `/contact/${id}`)).statusCode, 200)
      await receiver.until(() => at('/every-update')().length === 5 && at('/fields')().length === 3)
      const sent = (path: string) =>
        at(path)().map((delivery) => {
          const { event, data } = JSON.parse(delivery.body)
          return [event, Object.keys(data.changes ?? {})]
        })
      assert.deepEqual(sent('/fields'), [
        ['contact.created', []],
        ['contact.updated', ['email']],
        ['contact.deleted', []],
      ])
      assert.deepEqual(
        sent('/every-update').map(([event]) => event),
        ['contact.created', 'contact.updated', 'contact.updated', 'contact.updated', 'contact.deleted'],
      )

      // null sends every update again; a field that events do not report is a 422.
      const cleared = await call('PUT', `/outbound_webhook/${webhook.id}`, { fields: null })
      assert.equal(cleared.statusCode, 200, cleared.body)
      assert.equal(cleared.json().data.fields, null)
      const unknown = await call('PUT', `/outbound_webhook/${webhook.id}`, { fields: ['version'] })
      assert.equal(unknown.statusCode, 422)
      assert.deepEqual(unknown.json().detail[0].loc, ['body', 'fields', 0])
      for (const { id: webhookId } of [webhook, everything]) {
        assert.equal((await call('DELETE', `/outbound_webhook/${webhookId}`)).statusCode, 200)
      }
    })

    test('a write wakes the dispatcher: its delivery does not wait for the next poll', async () => {
      const own = await startTestApp(backend, {
        dispatcher: true,
        config: { webhookAllowedNetworks: LOOPBACK, webhookPollIntervalMs: 600_000 },
      })
      try {
        const owner = await own.createOrg()
        const webhook = await own.call(owner.key, {
          method: 'POST',
          url: '/api/v1/outbound_webhook',
          payload: { endpoint: `${receiver.url}/woken`, events: ['contact.created', 'contact.updated'] },
        })
        assert.equal(webhook.statusCode, 201, webhook.body)
        // Past the claim that the webhook's creation itself sets off.
        await sleep(200)
        // Ten minutes to the next poll: only the write's own wake-up brings a delivery this soon.
        const created = await own.call(owner.key, {
          method: 'POST',
          url: '/api/v1/contact',
          payload: { first_name: 'Woken' },
        })
        assert.equal(created.statusCode, 201, created.body)
        await receiver.until(() => at('/woken')().length === 1)
        const updated = await own.call(owner.key, {
          method: 'PUT',
          url: `/api/v1/contact/${created.json().data.id}`,
          payload: { first_name: 'Woken again' },
        })
        assert.equal(updated.statusCode, 200, updated.body)
        await receiver.until(() => at('/woken')().length === 2)
        assert.deepEqual(
          at('/woken')().map((delivery) => JSON.parse(delivery.body).event),
          ['contact.created', 'contact.updated'],
        )
      } finally {
        await own.close()
      }
    })

    test('a receiver that fails three times gets the event on the fourth attempt, and never again', async () => {
      const webhook = await webhookTo('/flaky', { events: ['contact.created'] })
      receiver.decide = (request) => {
        if (request.path !== '/flaky') return { status: 200 }
        return { status: at('/flaky')().length <= 3 ? 500 : 200 }
      }
      await contact({ first_name: 'Flaky' })
      await receiver.until(() => at('/flaky')().length >= 4)
      await sleep(600)
      const requests = at('/flaky')()
      assert.equal(requests.length, 4, 'acknowledged once, never sent again')
      assert.equal(new Set(requests.map((r) => r.eventId)).size, 1)
      const log = await succeededLog(webhook.id, 'the delivery to be recorded')
      assert.equal(log.length, 1)
      assert.equal(log[0].attempts, 4)
      assert.equal(log[0].last_status_code, 200)
      const detail = (await call('GET', `/outbound_webhook/${webhook.id}/logs/${log[0].id}`)).json().data
      assert.deepEqual(
        detail.attempts_log.map((a: { status_code: number }) => a.status_code),
        [500, 500, 500, 200],
      )
      const gaps = requests
        .slice(1)
        .map((r, i) => r.receivedAt - (requests[i] as { receivedAt: number }).receivedAt)
      assert.ok(
        gaps.every((gap) => gap >= 15),
        `retries wait (backoff): ${gaps.join(', ')} ms`,
      )
      assert.equal((await call('GET', `/outbound_webhook/${webhook.id}`)).json().data.failing_since, null)
      receiver.decide = () => ({ status: 200 })
    })

    test("each contact's events arrive in order, even when deliveries are slow and concurrent", async () => {
      await webhookTo('/ordered', { events: ['contact.updated'] })
      receiver.decide = (request) =>
        request.path === '/ordered'
          ? { status: 200, delayMs: Math.floor(Math.random() * 25) }
          : { status: 200 }
      const ids = await Promise.all([1, 2, 3, 4].map((n) => contact({ first_name: `Ordered ${n}` })))
      for (let i = 1; i <= 15; i++) {
        await Promise.all(ids.map((id) => call('PUT', `/contact/${id}`, { last_name: String(i) })))
      }
      await receiver.until(() => at('/ordered')().length >= 60, 20_000)
      for (const id of ids) {
        const names = at('/ordered')()
          .map((r) => JSON.parse(r.body))
          .filter((event) => event.data.contact_id === id)
          .map((event) => Number(event.data.contact.last_name))
        assert.deepEqual(
          names,
          Array.from({ length: 15 }, (_, i) => i + 1),
        )
      }
      receiver.decide = () => ({ status: 200 })
    })

    test('an endpoint that does not answer in time is retried, with the reason in the log', async () => {
      const webhook = await webhookTo('/slow', { events: ['contact.created'] })
      receiver.decide = (request) =>
        request.path === '/slow' && at('/slow')().length === 1 ? 'hang' : { status: 200 }
      await contact({ first_name: 'Slow' })
      const log = await succeededLog(webhook.id, 'the delivery to succeed after a timeout')
      const detail = (await call('GET', `/outbound_webhook/${webhook.id}/logs/${log[0].id}`)).json().data
      assert.match(detail.attempts_log[0].error, /no answer within 500 ms/)
      assert.equal(detail.attempts_log.at(-1).status_code, 200)
      receiver.decide = () => ({ status: 200 })
    })

    test('a redirect is not followed: the attempt fails with its status and where it pointed', async () => {
      const webhook = await webhookTo('/moved', { events: ['contact.created'] })
      receiver.decide = (request) =>
        request.path === '/moved' && at('/moved')().length === 1
          ? { status: 302, headers: { location: 'https://elsewhere.example/hook' } }
          : { status: 200 }
      await contact({ first_name: 'Moved' })
      const log = await succeededLog(webhook.id, 'the delivery to succeed on its retry')
      const detail = (await call('GET', `/outbound_webhook/${webhook.id}/logs/${log[0].id}`)).json().data
      assert.deepEqual(
        detail.attempts_log.map((attempt: { status_code: number; error: string | null }) => [
          attempt.status_code,
          attempt.error,
        ]),
        [
          [302, 'redirect to https://elsewhere.example/hook not followed'],
          [200, null],
        ],
      )
      assert.equal(at('/moved')().length, 2, 'the redirect target was never called')
      receiver.decide = () => ({ status: 200 })
    })

    test('an endpoint that acknowledges and then never stops sending is cut off, and the delivery counts', async () => {
      const endless = http.createServer((request, response) => {
        request.resume()
        request.on('end', () => {
          response.writeHead(200, { 'content-type': 'text/plain' })
          const chunk = 'x'.repeat(16 * 1024)
          const timer = setInterval(() => response.write(chunk), 1)
          response.on('close', () => clearInterval(timer))
        })
      })
      endless.listen(0, '127.0.0.1')
      await once(endless, 'listening')
      try {
        const { port } = endless.address() as AddressInfo
        const created = await call('POST', '/outbound_webhook', {
          endpoint: `http://127.0.0.1:${port}/endless`,
          events: ['contact.created'],
        })
        assert.equal(created.statusCode, 201, created.body)
        const webhook = created.json().data as { id: string }
        await contact({ first_name: 'Endless' })
        const log = await succeededLog(webhook.id, 'the delivery to be recorded as succeeded')
        assert.equal(log[0].attempts, 1)
        assert.equal(log[0].last_status_code, 200)
      } finally {
        endless.closeAllConnections()
        endless.close()
      }
    })

    test('writes are not held up by a webhook that hangs', async () => {
      await webhookTo('/hang', { events: ['contact.updated'] })
      receiver.decide = (request) => (request.path === '/hang' ? 'hang' : { status: 200 })
      const id = await contact({ first_name: 'Quick' })
      const started = performance.now()
      for (let i = 0; i < 20; i++)
        assert.equal((await call('PUT', `/contact/${id}`, { last_name: `q${i}` })).statusCode, 200)
      assert.ok(performance.now() - started < 5_000)
      receiver.decide = () => ({ status: 200 })
    })
  })

  describe(`failing webhooks on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    let receiver: Receiver
    before(async () => {
      t = await startTestApp(backend, {
        dispatcher: true,
        config: {
          webhookAllowedNetworks: LOOPBACK,
          webhookPollIntervalMs: 50,
          webhookRetryBaseMs: 40,
          webhookRetryMaxDelayMs: 100,
          // Stand-ins for the defaults' 24 hours.
          webhookRetryWindowMs: 300,
          webhookDisableAfterMs: 900,
        },
      })
      org = await t.createOrg()
      receiver = await startReceiver(() => ({ status: 503 }))
    })
    after(async () => {
      await t?.close()
      await receiver?.close()
    })
    const call = (method: string, url: string, payload?: unknown) => t.api(org.key, method, url, payload)

    test('a delivery is given up after the retry window; a webhook failing throughout is disabled, with the reason; enabling it and redelivering resume', async () => {
      const created = await call('POST', '/outbound_webhook', { endpoint: `${receiver.url}/down` })
      const webhook = created.json().data
      const first = (await call('POST', '/contact', { first_name: 'First' })).json().data.id
      const log = await eventually(
        async () => (await call('GET', `/outbound_webhook/${webhook.id}/logs`)).json().data.items,
        (items) => items[0]?.status === 'failed',
        'the first delivery to be given up',
      )
      assert.ok(log[0].attempts >= 2, 'retried before giving up')
      assert.equal(log[0].last_status_code, 503)
      assert.equal(log[0].next_attempt_at, null)
      assert.notEqual((await call('GET', `/outbound_webhook/${webhook.id}`)).json().data.failing_since, null)

      // Events keep failing until the endpoint has failed for the whole disable period.
      const disabled = await eventually(
        async () => {
          await call('PUT', `/contact/${first}`, { last_name: String(Date.now()) })
          return (await call('GET', `/outbound_webhook/${webhook.id}`)).json().data
        },
        (w) => w.enabled === false,
        'the webhook to be disabled',
      )
      assert.match(disabled.disabled_reason, /failed for .* hours/)
      assert.match(disabled.disabled_reason, /HTTP 503/)
      assert.notEqual(disabled.disabled_at, null)

      // Disabled: new events are not queued for it.
      const before = (await call('GET', `/outbound_webhook/${webhook.id}/logs?limit=1000`)).json().data.items
        .length
      await call('PUT', `/contact/${first}`, { last_name: 'while disabled' })
      await sleep(200)
      const logAfter = (await call('GET', `/outbound_webhook/${webhook.id}/logs?limit=1000`)).json().data
        .items
      assert.equal(logAfter.length, before)

      // The owner fixes the endpoint, enables the webhook, and redelivers what was given up.
      receiver.decide = () => ({ status: 204 })
      const enabled = (await call('PUT', `/outbound_webhook/${webhook.id}`, { enabled: true })).json().data
      assert.equal(enabled.enabled, true)
      assert.equal(enabled.disabled_reason, null)
      const given = logAfter.find(
        (d: { status: string; event: string }) => d.status === 'failed' && d.event === 'contact.created',
      )
      const redelivered = await call('POST', `/outbound_webhook/${webhook.id}/logs/${given.id}/redeliver`)
      assert.equal(redelivered.statusCode, 201, redelivered.body)
      assert.equal(redelivered.json().data.redelivery_of, given.id)
      assert.equal(redelivered.json().data.event_id, given.event_id)
      await receiver.until(
        () => receiver.received.some((r) => r.eventId === given.event_id && r.status === 204),
        10_000,
        'the redelivery',
      )
      const again = await call(
        'POST',
        `/outbound_webhook/${webhook.id}/logs/${redelivered.json().data.id}/redeliver`,
      )
      assert.ok([201, 409].includes(again.statusCode))
    })
  })
}
