import assert from 'node:assert/strict'
import { existsSync, statSync } from 'node:fs'
import { after, before, describe, test } from 'node:test'
import type { FastifyInstance } from 'fastify'
import { buildApp } from '../src/app.js'
import { type Config, loadConfig } from '../src/config.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'
import { startServerProcess } from './helpers/processes.js'

for (const backend of BACKENDS) {
  describe(`safe retries and no lost updates on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg

    before(async () => {
      t = await startTestApp(backend)
      org = await t.createOrg()
    })
    after(() => t?.close())

    const post = (url: string, payload: object, headers: Record<string, string>, key = org.key) =>
      t.call(key, { method: 'POST', url: `/api/v1${url}`, payload, headers })
    const contactCount = async (orgId = org.id) =>
      (await t.database.db.selectFrom('contacts').select('id').where('org_id', '=', orgId).execute()).length
    /** An app of its own on the same database with these rate limits, closed after `use`. */
    async function withLimits(limits: Partial<Config>, use: (app: FastifyInstance) => Promise<void>) {
      const limited = await buildApp(
        loadConfig({}, { databaseUrl: t.testDatabase.url, logLevel: 'silent', ...limits }),
      )
      try {
        await use(limited)
      } finally {
        await limited.close()
      }
    }

    describe('Idempotency-Key', () => {
      test('a retried POST returns the first response and does the work once', async () => {
        const before = await contactCount()
        const first = await post('/contact', { first_name: 'Once' }, { 'idempotency-key': 'create-once' })
        const again = await post('/contact', { first_name: 'Once' }, { 'idempotency-key': 'create-once' })
        assert.equal(first.statusCode, 201)
        assert.equal(again.statusCode, 201)
        assert.equal(again.body, first.body)
        assert.equal(again.headers['idempotent-replayed'], 'true')
        assert.equal(await contactCount(), before + 1)
      })

      test('the same key with a different body is 422 and does nothing', async () => {
        await post('/contact', { first_name: 'A' }, { 'idempotency-key': 'reused' })
        const before = await contactCount()
        const reused = await post('/contact', { first_name: 'B' }, { 'idempotency-key': 'reused' })
        assert.equal(reused.statusCode, 422)
        assert.equal(reused.json().code, 'idempotency_key_reused')
        assert.equal(await contactCount(), before)
      })

      test('keys are scoped to the organization', async () => {
        const other = await t.createOrg()
        const mine = await post('/contact', { first_name: 'Mine' }, { 'idempotency-key': 'shared-key' })
        const theirs = await post(
          '/contact',
          { first_name: 'Mine' },
          { 'idempotency-key': 'shared-key' },
          other.key,
        )
        assert.equal(theirs.statusCode, 201)
        assert.notEqual(theirs.json().data.id, mine.json().data.id)
        assert.equal(theirs.headers['idempotent-replayed'], undefined)
      })

      test('remembered responses survive a restart of the service', async () => {
        const first = await post(
          '/contact/upsert?email=durable%40example.com',
          {},
          { 'idempotency-key': 'durable' },
        )
        const config = loadConfig({}, { databaseUrl: t.testDatabase.url, logLevel: 'silent' })
        const restarted = await buildApp(config)
        try {
          const again = await restarted.inject({
            method: 'POST',
            url: '/api/v1/contact/upsert?email=durable%40example.com',
            headers: { 'x-api-key': org.key, 'idempotency-key': 'durable' },
            payload: {},
          })
          assert.equal(again.statusCode, first.statusCode)
          assert.equal(again.body, first.body)
        } finally {
          await restarted.close()
        }
      })

      test('batch upserts replay too, and a validation error is remembered like any answer', async () => {
        const body = { contacts: [{ email: 'batch-idem@example.com' }] }
        const first = await post('/contact/batch/upsert', body, { 'idempotency-key': 'batch-1' })
        const again = await post('/contact/batch/upsert', body, { 'idempotency-key': 'batch-1' })
        assert.equal(again.body, first.body)
        assert.equal(again.json().data.results[0].status, 'created')
        const invalid = await post('/contact', { first_name: 1 }, { 'idempotency-key': 'invalid-1' })
        const invalidAgain = await post('/contact', { first_name: 1 }, { 'idempotency-key': 'invalid-1' })
        assert.equal(invalid.statusCode, 422)
        assert.equal(invalidAgain.headers['idempotent-replayed'], 'true')
      })

      test('simultaneous requests with one key do the work once', async () => {
        const before = await contactCount()
        const answers = await Promise.all(
          Array.from({ length: 6 }, () =>
            post('/contact', { first_name: 'Burst' }, { 'idempotency-key': 'burst' }),
          ),
        )
        const statuses = answers.map((a) => a.statusCode)
        assert.ok(
          statuses.every((s) => s === 201 || s === 409),
          `statuses ${statuses}`,
        )
        assert.equal(await contactCount(), before + 1)
      })
    })

    describe('ETag and If-Match', () => {
      test('every contact answer carries an ETag that changes with each write', async () => {
        const created = await post('/contact', { first_name: 'Versioned' }, {})
        const etag = created.headers.etag as string
        assert.match(etag, /^"\d+"$/)
        const id = created.json().data.id
        const read = await t.call(org.key, { method: 'GET', url: `/api/v1/contact/${id}` })
        assert.equal(read.headers.etag, etag)
        const updated = await t.call(org.key, {
          method: 'PUT',
          url: `/api/v1/contact/${id}`,
          payload: { last_name: 'X' },
        })
        assert.notEqual(updated.headers.etag, etag)
        assert.equal('version' in created.json().data, false, 'the body keeps the original shape')
      })

      test('PUT, PATCH and DELETE with a stale If-Match are 412 and change nothing', async () => {
        const created = await post('/contact', { first_name: 'Stale' }, {})
        const id = created.json().data.id
        const stale = created.headers.etag as string
        const fresh = (
          await t.call(org.key, {
            method: 'PUT',
            url: `/api/v1/contact/${id}`,
            payload: { last_name: 'Now' },
          })
        ).headers.etag as string
        const before = (await t.call(org.key, { method: 'GET', url: `/api/v1/contact/${id}` })).body
        for (const [method, payload] of [
          ['PUT', { first_name: 'Lost' }],
          ['PATCH', { first_name: 'Lost' }],
          ['DELETE', undefined],
        ] as const) {
          const response = await t.call(org.key, {
            method,
            url: `/api/v1/contact/${id}`,
            headers: { 'if-match': stale },
            ...(payload ? { payload } : {}),
          })
          assert.equal(response.statusCode, 412, method)
          assert.equal(response.json().code, 'precondition_failed')
        }
        assert.equal((await t.call(org.key, { method: 'GET', url: `/api/v1/contact/${id}` })).body, before)
        const weak = await t.call(org.key, {
          method: 'PUT',
          url: `/api/v1/contact/${id}`,
          headers: { 'if-match': `W/${fresh}` },
          payload: { first_name: 'Weak' },
        })
        assert.equal(weak.statusCode, 412, 'a weak tag never matches If-Match')
        const ok = await t.call(org.key, {
          method: 'PATCH',
          url: `/api/v1/contact/${id}`,
          headers: { 'if-match': `"999999", ${fresh}` },
          payload: { first_name: 'Current' },
        })
        assert.equal(ok.statusCode, 200)
        const star = await t.call(org.key, {
          method: 'DELETE',
          url: `/api/v1/contact/${id}`,
          headers: { 'if-match': '*' },
        })
        assert.equal(star.statusCode, 200)
      })

      test('of two writers holding the same ETag, exactly one wins', async () => {
        const created = await post('/contact', { first_name: 'Race' }, {})
        const id = created.json().data.id
        const etag = created.headers.etag as string
        const answers = await Promise.all(
          Array.from({ length: 5 }, (_, i) =>
            t.call(org.key, {
              method: 'PUT',
              url: `/api/v1/contact/${id}`,
              headers: { 'if-match': etag },
              payload: { first_name: `W${i}` },
            }),
          ),
        )
        assert.deepEqual(answers.map((a) => a.statusCode).sort(), [200, 412, 412, 412, 412])
      })
    })

    test('rate limits answer 429 with Retry-After and the RateLimit headers, per key', () =>
      withLimits({ rateLimitPerKey: 3 }, async (limited) => {
        const call = (key: string) =>
          limited.inject({ method: 'GET', url: '/api/v1/contact', headers: { 'x-api-key': key } })
        const first = await call(org.key)
        assert.equal(first.headers['ratelimit-limit'], '3')
        assert.equal(first.headers['ratelimit-remaining'], '2')
        assert.ok(Number(first.headers['ratelimit-reset']) > 0)
        await call(org.key)
        await call(org.key)
        const refused = await call(org.key)
        assert.equal(refused.statusCode, 429)
        assert.ok(Number(refused.headers['retry-after']) > 0)
        assert.equal(refused.json().code, 'rate_limited')
        assert.equal(typeof refused.json().detail, 'string')
        assert.equal((await call(org.readOnlyKey)).statusCode, 200, 'another key has its own budget')
      }))

    test('the limit per address counts requests with a wrong key or none, so keys cannot be guessed at will', () =>
      withLimits({ rateLimitPerAddress: 3 }, async (limited) => {
        const call = (headers: Record<string, string>) =>
          limited.inject({ method: 'GET', url: '/api/v1/contact', headers })
        const guesses = []
        for (let i = 0; i < 3; i++) guesses.push((await call({ 'x-api-key': `in-guess-${i}` })).statusCode)
        assert.deepEqual(guesses, [401, 401, 401])
        const refused = await call({ 'x-api-key': 'in-guess-3' })
        assert.equal(refused.statusCode, 429)
        assert.equal(refused.json().code, 'rate_limited')
        assert.equal((await call({})).statusCode, 429, 'a request without a key counts too')
        assert.equal(
          (await call({ 'x-api-key': org.key })).statusCode,
          429,
          'a valid key does not lift the limit of an address that spent it',
        )
      }))

    test('a read-only key is refused on a write before its body is read, and counted', () =>
      withLimits({ rateLimitPerKey: 2 }, async (limited) => {
        const write = () =>
          limited.inject({
            method: 'POST',
            url: '/api/v1/contact',
            headers: { 'x-api-key': org.readOnlyKey, 'content-type': 'application/json' },
            payload: '{"first_name": "never parsed"',
          })
        // The body is not even JSON: the key's refusal comes before anything reads it.
        const refusals = [(await write()).statusCode, (await write()).statusCode]
        assert.deepEqual(refusals, [403, 403])
        assert.equal((await write()).statusCode, 429)
      }))

    test('SIGTERM lets in-flight requests finish, exits 0, and leaves SQLite checkpointed', async () => {
      const server = await startServerProcess({ DATABASE_URL: t.testDatabase.url })
      const create = (i: number) =>
        fetch(`${server.url}/api/v1/contact`, {
          method: 'POST',
          headers: { 'x-api-key': org.key, 'content-type': 'application/json' },
          body: JSON.stringify({ first_name: `Inflight ${i}` }),
        }).then(
          (response) => response.status,
          () => 'refused' as const,
        )
      assert.equal(await create(-1), 201, 'the server serves before the signal')
      const requests = Array.from({ length: 40 }, (_, i) => create(i))
      // The signal arrives once the burst is being served, with the rest of it still in flight.
      await Promise.race(requests)
      server.process.kill('SIGTERM')
      const statuses = await Promise.all(requests)
      const code = await new Promise(
        (resolve) => server.process.on('exit', resolve).exitCode !== null && resolve(server.process.exitCode),
      )
      assert.equal(code, 0, server.log().split('\n').slice(-6).join('\n'))
      assert.ok(
        statuses.every((s) => s === 201 || s === 'refused' || s === 503),
        `statuses ${statuses}`,
      )
      // Every write that was started was finished and answered: none cut off after its commit.
      const stored = await t.database.db
        .selectFrom('contacts')
        .select('id')
        .where('org_id', '=', org.id)
        .where('first_name', 'like', 'Inflight %')
        .execute()
      assert.equal(stored.length, statuses.filter((s) => s === 201).length + 1)
      if (backend.name === 'sqlite') {
        const wal = `${t.testDatabase.url.slice('sqlite:'.length)}-wal`
        assert.ok(!existsSync(wal) || statSync(wal).size === 0, 'the WAL was checkpointed into the database')
      }
    })
  })
}
