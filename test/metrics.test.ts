import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'
import { type ServerProcess, startServerProcess } from './helpers/processes.js'
import { type Receiver, startReceiver } from './helpers/receiver.js'

const TOKEN = 'metrics-token-for-the-tests'

/** The value of the one series whose line starts with `name{` and holds every label given. */
function seriesValue(text: string, name: string, labels: Record<string, string>): number | undefined {
  const line = text
    .split('\n')
    .find(
      (l) =>
        l.startsWith(`${name}{`) &&
        Object.entries(labels).every(([key, value]) => l.includes(`${key}="${value}"`)),
    )
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1))
}

for (const backend of BACKENDS) {
  describe(`metrics on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    let receiver: Receiver
    before(async () => {
      t = await startTestApp(backend, {
        dispatcher: true,
        importRunner: true,
        config: { metricsToken: TOKEN, webhookAllowedNetworks: '127.0.0.0/8', webhookPollIntervalMs: 50 },
      })
      org = await t.createOrg()
      receiver = await startReceiver()
    })
    after(async () => {
      await t?.close()
      await receiver?.close()
    })
    const scrape = (authorization?: string) =>
      t.app.inject({ method: 'GET', url: '/metrics', headers: authorization ? { authorization } : {} })

    test('after traffic, /metrics has request counts and latency by route pattern and status', async () => {
      await t.call(org.key, {
        method: 'POST',
        url: '/api/v1/outbound_webhook',
        payload: { endpoint: `${receiver.url}/m`, events: ['contact.created'] },
      })
      const created = await t.call(org.key, {
        method: 'POST',
        url: '/api/v1/contact',
        payload: { first_name: 'M' },
      })
      const id = created.json().data.id
      for (let i = 0; i < 3; i++) await t.call(org.key, { method: 'GET', url: `/api/v1/contact/${id}` })
      await t.call(org.key, { method: 'PUT', url: `/api/v1/contact/${id}`, payload: { last_name: 'N' } })
      await t.call(org.key, { method: 'GET', url: '/api/v1/contact/00000000-0000-4000-8000-000000000000' })
      await receiver.until(() => receiver.received.some((r) => r.status === 200))
      // The dispatcher records an outcome in its next cycle, a few milliseconds after the answer.
      let response = await scrape(`Bearer ${TOKEN}`)
      for (
        let i = 0;
        i < 100 && /^contacts_webhook_deliveries_pending 0$/m.test(response.body) === false;
        i++
      ) {
        await new Promise((resolve) => setTimeout(resolve, 50))
        response = await scrape(`Bearer ${TOKEN}`)
      }
      assert.equal(response.statusCode, 200)
      assert.match(String(response.headers['content-type']), /^text\/plain/)
      const text = response.body
      const route = '/api/v1/contact/:contact_id'
      assert.equal(
        seriesValue(text, 'contacts_http_requests_total', { method: 'GET', route, status: '200' }),
        3,
      )
      assert.equal(
        seriesValue(text, 'contacts_http_requests_total', { method: 'GET', route, status: '404' }),
        1,
      )
      assert.equal(
        seriesValue(text, 'contacts_http_requests_total', { method: 'PUT', route, status: '200' }),
        1,
      )
      assert.equal(
        seriesValue(text, 'contacts_http_request_duration_seconds_count', {
          method: 'GET',
          route,
          status: '200',
        }),
        3,
      )
      assert.equal(
        seriesValue(text, 'contacts_http_request_duration_seconds_bucket', {
          le: '+Inf',
          method: 'PUT',
          route,
          status: '200',
        }),
        1,
      )
      assert.ok(!text.includes(id), 'series are per route pattern, never per contact')
      assert.ok(!text.includes(org.key), 'no key in any label')
      assert.match(text, /^process_cpu_user_seconds_total \d/m)
      assert.match(text, /^nodejs_heap_size_used_bytes \d/m)
      assert.ok(
        (seriesValue(text, 'contacts_webhook_delivery_attempts_total', { outcome: 'succeeded' }) ?? 0) >= 1,
      )
      assert.match(text, /^contacts_webhook_deliveries_pending 0$/m)
      assert.match(text, /^contacts_webhook_delivery_lag_seconds 0$/m)
      // Nothing else is in flight while the scrape runs: no request waits for its turn.
      assert.match(text, /^contacts_http_requests_waiting 0$/m)
      if (backend.name === 'postgres')
        assert.ok((seriesValue(text, 'contacts_db_pool_connections', { state: 'total' }) ?? 0) >= 1)
      else assert.ok(!text.includes('contacts_db_pool_connections{'))
      if (backend.name === 'sqlite') {
        const unlabelled = (name: string) => Number(new RegExp(`^${name} (\\d+)$`, 'm').exec(text)?.[1] ?? 0)
        const transactions = unlabelled('contacts_sqlite_transactions_total')
        const commits = unlabelled('contacts_sqlite_commits_total')
        assert.ok(
          transactions >= 1 && commits >= 1 && commits <= transactions,
          `${transactions} / ${commits}`,
        )
        // A few writes leave the WAL far below the size at which the writer checkpoints itself.
        assert.match(text, /^contacts_sqlite_writer_checkpoints_total 0$/m)
        assert.match(text, /^contacts_sqlite_writer_checkpoint_seconds_total 0$/m)
      } else {
        assert.ok(!text.includes('contacts_sqlite_transactions_total '))
        assert.ok(!text.includes('contacts_sqlite_writer_checkpoints_total '))
      }
    })

    test('import jobs: their rows by outcome, and the jobs waiting or running', async () => {
      const upload = await t.call(org.key, {
        method: 'POST',
        url: '/api/v1/contact/import',
        headers: { 'content-type': 'text/csv' },
        payload: 'email,custom_fields.n\nm1@example.com,1\nm2@example.com,2\n,3\n',
      })
      assert.equal(upload.statusCode, 202, upload.body)
      const id = upload.json().data.id
      for (let i = 0; i < 200; i++) {
        const job = (await t.call(org.key, { method: 'GET', url: `/api/v1/contact/import/${id}` })).json()
          .data
        if (job.status === 'completed') break
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      const text = (await scrape(`Bearer ${TOKEN}`)).body
      assert.equal(seriesValue(text, 'contacts_import_rows_total', { outcome: 'created' }), 2)
      assert.equal(seriesValue(text, 'contacts_import_rows_total', { outcome: 'failed' }), 1)
      assert.equal(seriesValue(text, 'contacts_import_jobs', { status: 'running' }), 0)
      assert.equal(seriesValue(text, 'contacts_import_jobs', { status: 'queued' }), 0)
    })

    test('/metrics wants the token', async () => {
      for (const authorization of [undefined, 'Bearer wrong-token-of-the-same-size!', `Basic ${TOKEN}`]) {
        const response = await scrape(authorization)
        assert.equal(response.statusCode, 401)
        assert.equal(response.json().code, 'not_authenticated')
      }
    })
  })
}

describe('metrics configuration', () => {
  test('without a token or a metrics port there is no /metrics', async () => {
    const sqlite = BACKENDS.find((b) => b.name === 'sqlite')
    const t = await startTestApp(sqlite as (typeof BACKENDS)[number])
    try {
      assert.equal((await t.app.inject({ method: 'GET', url: '/metrics' })).statusCode, 404)
    } finally {
      await t.close()
    }
  })

  test('with METRICS_PORT, /metrics is served there and not on the API port', async () => {
    const sqlite = BACKENDS.find((b) => b.name === 'sqlite') as (typeof BACKENDS)[number]
    const database = await sqlite.createDatabase()
    let server: ServerProcess | undefined
    try {
      server = await startServerProcess({ DATABASE_URL: database.url, METRICS_PORT: '0' })
      const adminUrl = /metrics listening at (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(server.log())?.[1]
      assert.ok(adminUrl, server.log())
      assert.equal((await fetch(`${server.url}/metrics`)).status, 404)
      await fetch(`${server.url}/healthz`)
      const scraped = await fetch(adminUrl)
      assert.equal(scraped.status, 200)
      assert.match(
        await scraped.text(),
        /contacts_http_requests_total\{method="GET",route="\/healthz",status="200"\} 1/,
      )
    } finally {
      await server?.stop()
      await database.drop()
    }
  })
})
