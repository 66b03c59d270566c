import assert from 'node:assert/strict'
import { connect, type Socket } from 'node:net'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import BetterSqlite3 from 'better-sqlite3'
import pg from 'pg'
import { hashApiKey } from '../src/api-keys/api-key-secret.js'
import { findActiveApiKeyByHash } from '../src/api-keys/api-keys.repository.js'
import { revokeApiKey } from '../src/api-keys/api-keys.service.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

/** Sends raw bytes on a fresh connection and collects what comes back until the server closes it. */
function rawConnection(port: number) {
  const socket: Socket = connect(port, '127.0.0.1')
  let received = ''
  socket.setEncoding('utf8')
  socket.on('data', (chunk) => {
    received += chunk
  })
  const closed = new Promise<number>((resolve) => {
    const opened = Date.now()
    socket.on('close', () => resolve(Date.now() - opened))
  })
  socket.on('error', () => {})
  return { socket, closed, received: () => received }
}

function jsonBodyOf(rawResponse: string) {
  return JSON.parse(rawResponse.slice(rawResponse.indexOf('\r\n\r\n') + 4))
}

for (const backend of BACKENDS) {
  describe(`timeouts and saturation on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    let port: number

    before(async () => {
      t = await startTestApp(backend, {
        config: {
          requestTimeoutMs: 400,
          keepAliveTimeoutMs: 300,
          databaseStatementTimeoutMs: 300,
          databasePoolTimeoutMs: 100,
          databasePoolSize: 2,
        },
      })
      org = await t.createOrg()
      await t.app.listen({ host: '127.0.0.1', port: 0 })
      port = (t.app.server.address() as { port: number }).port
    })
    after(() => t?.close())

    const createContact = async (first_name: string) =>
      (await t.call(org.key, { method: 'POST', url: '/api/v1/contact', payload: { first_name } })).json().data
        .id as string
    const contactCount = async () =>
      (await t.database.db.selectFrom('contacts').select('id').where('org_id', '=', org.id).execute()).length

    test('a client that stops sending mid-body gets a JSON 408 and nothing is written', async () => {
      const countBefore = await contactCount()
      const connection = rawConnection(port)
      connection.socket.write(
        `POST /api/v1/contact HTTP/1.1\r\nHost: x\r\nX-API-Key: ${org.key}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"first_name":`,
      )
      const heldFor = await connection.closed
      const answer = connection.received()
      assert.match(answer, /^HTTP\/1\.1 408 /)
      assert.deepEqual(jsonBodyOf(answer), {
        detail: 'The request was not received in time',
        code: 'request_timeout',
      })
      // Bounded by the timeout plus Node's checking tick, not by the client.
      assert.ok(heldFor < 5_000, `connection held for ${heldFor} ms`)
      assert.equal(await contactCount(), countBefore)
    })

    test('a client that never finishes its headers gets the same JSON 408', async () => {
      const connection = rawConnection(port)
      connection.socket.write('GET /api/v1/contact HTTP/1.1\r\nHost: x\r\nX-Api-Key: in-')
      const heldFor = await connection.closed
      assert.match(connection.received(), /^HTTP\/1\.1 408 /)
      assert.equal(jsonBodyOf(connection.received()).code, 'request_timeout')
      assert.ok(heldFor < 5_000, `connection held for ${heldFor} ms`)
    })

    test('an idle keep-alive connection is closed after the keep-alive timeout', async () => {
      const connection = rawConnection(port)
      connection.socket.write('GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\n\r\n')
      const heldFor = await connection.closed
      assert.match(connection.received(), /^HTTP\/1\.1 200 /)
      assert.ok(heldFor >= 250 && heldFor < 5_000, `idle connection closed after ${heldFor} ms`)
    })

    /** Holds the write lock on one contact (PostgreSQL) or on the whole database (SQLite). */
    async function holdWriteLock(contactId: string): Promise<() => Promise<void>> {
      if (backend.name === 'postgres') {
        const client = new pg.Client({ connectionString: t.testDatabase.url })
        await client.connect()
        await client.query('begin')
        await client.query('select id from contacts where org_id = $1 and id = $2 for update', [
          org.id,
          contactId,
        ])
        return async () => {
          await client.query('rollback')
          await client.end()
        }
      }
      const other = new BetterSqlite3(t.testDatabase.url.slice('sqlite:'.length))
      other.exec('begin immediate')
      return async () => {
        other.exec('rollback')
        other.close()
      }
    }

    test('a write stuck behind a lock past the statement timeout is a 503 and changes nothing', async () => {
      const id = await createContact('Locked')
      const release = await holdWriteLock(id)
      try {
        const response = await t.call(org.key, {
          method: 'PUT',
          url: `/api/v1/contact/${id}`,
          payload: { first_name: 'Changed' },
        })
        assert.equal(response.statusCode, 503, response.body)
        assert.deepEqual(response.json(), {
          detail: 'The database took too long to answer; retry later',
          code: 'database_timeout',
        })
        assert.equal(response.headers['retry-after'], '1')
      } finally {
        await release()
      }
      const after = await t.call(org.key, { method: 'GET', url: `/api/v1/contact/${id}` })
      assert.equal(after.json().data.first_name, 'Locked')
      const retried = await t.call(org.key, {
        method: 'PUT',
        url: `/api/v1/contact/${id}`,
        payload: { first_name: 'Changed' },
      })
      assert.equal(retried.statusCode, 200)
    })

    // Only PostgreSQL has a pool: SQLite works through one connection.
    if (backend.name === 'postgres')
      test('when every pooled connection stays busy, a request waits a bounded time and gets 503', async () => {
        const [first, second] = [await createContact('One'), await createContact('Two')]
        const release = await holdWriteLock(first)
        const releaseSecond = await holdWriteLock(second)
        try {
          // Both pooled connections wait on the held row locks...
          const stuck = [first, second].map((id) =>
            t.call(org.key, { method: 'PUT', url: `/api/v1/contact/${id}`, payload: { last_name: 'X' } }),
          )
          await sleep(50)
          // ...so this read finds no connection within the pool timeout.
          const started = Date.now()
          const starved = await t.call(org.key, { method: 'GET', url: '/api/v1/contact' })
          assert.equal(starved.statusCode, 503, starved.body)
          assert.equal(starved.json().code, 'database_busy')
          assert.ok(Date.now() - started < 2_000)
          for (const answer of await Promise.all(stuck)) assert.equal(answer.json().code, 'database_timeout')
        } finally {
          await release()
          await releaseSecond()
        }
        const healthy = await t.call(org.key, { method: 'GET', url: '/api/v1/contact' })
        assert.equal(healthy.statusCode, 200)
      })
  })

  describe(`unknown and revoked keys are indistinguishable on ${backend.name}`, {
    skip: backend.skip,
  }, () => {
    let t: TestApp
    let revokedKey: string
    const unknownKey = `in-${'Q'.repeat(43)}`

    before(async () => {
      t = await startTestApp(backend)
      const org = await t.createOrg()
      await t.call(org.key, { method: 'GET', url: '/api/v1/contact' })
      await revokeApiKey(t.database.db, org.keyId)
      revokedKey = org.key
    })
    after(() => t?.close())

    test('the key lookup finds a revoked key no more than an unknown one', async () => {
      assert.equal(await findActiveApiKeyByHash(t.database.db, hashApiKey(revokedKey)), undefined)
      assert.equal(await findActiveApiKeyByHash(t.database.db, hashApiKey(unknownKey)), undefined)
    })

    test('both are answered in the same time, headers and body', async () => {
      const timings: Record<'unknown' | 'revoked', number[]> = { unknown: [], revoked: [] }
      const remaining: Record<'unknown' | 'revoked', unknown[]> = { unknown: [], revoked: [] }
      const answers = new Set<string>()
      // Interleaved, so that drift in the machine's load touches both alike.
      for (let round = 0; round < 300; round += 1) {
        for (const [kind, key] of [
          ['unknown', unknownKey],
          ['revoked', revokedKey],
        ] as const) {
          const started = process.hrtime.bigint()
          const response = await t.app.inject({
            method: 'GET',
            url: '/api/v1/contact',
            headers: { 'x-api-key': key },
          })
          timings[kind].push(Number(process.hrtime.bigint() - started))
          // A refused key is counted by its rate limit like any other: each key's budget goes
          // down request by request, checked for both kinds below.
          const {
            date: _date,
            'x-request-id': _id,
            'ratelimit-remaining': left,
            // The seconds left in each key's window, which began when the key was first used.
            'ratelimit-reset': reset,
            ...headers
          } = response.headers
          remaining[kind].push(left)
          answers.add(JSON.stringify([response.statusCode, headers, response.body, typeof reset]))
        }
      }
      assert.equal(answers.size, 1, [...answers].join('\n'))
      // Where each count starts differs (the revoked key was used once before it was revoked).
      for (const [kind, counts] of Object.entries(remaining)) {
        const steps = counts.slice(1).map((count, i) => Number(counts[i]) - Number(count))
        assert.ok(
          steps.every((step) => step === 1),
          `${kind}: ${counts.slice(0, 5).join(', ')}…`,
        )
      }
      const median = (values: number[]) => values.sort((a, b) => a - b)[values.length >> 1] as number
      const ratio = median(timings.revoked) / median(timings.unknown)
      assert.ok(ratio > 0.7 && ratio < 1.4, `revoked/unknown median time ratio ${ratio.toFixed(2)}`)
    })
  })
}
