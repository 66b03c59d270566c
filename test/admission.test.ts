import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import Fastify from 'fastify'
import { ConfigError, loadConfig } from '../src/config.js'
import { ArrivalQueue, admitInArrivalOrder } from '../src/http/admission.js'
import { startTestApp } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

/**
 * Sends `count` requests at once to an app whose gate starts `perTurn` a turn, and records, for
 * each request in the order its handler began, its number and the event-loop turn it began in.
 */
async function handlerStarts(perTurn: number, count: number) {
  const app = Fastify()
  const admission = admitInArrivalOrder(app, perTurn)
  let turn = 0
  let ticking = true
  const tick = () => {
    turn++
    if (ticking) setImmediate(tick)
  }
  setImmediate(tick)
  const starts: { request: number; turn: number; stillWaiting: number }[] = []
  app.get('/job/:n', async (request) => {
    starts.push({
      request: Number((request.params as { n: string }).n),
      turn,
      stillWaiting: admission.waiting(),
    })
    return { ok: true }
  })
  await app.ready()
  try {
    const responses = await Promise.all(
      Array.from({ length: count }, (_, n) => app.inject({ method: 'GET', url: `/job/${n}` })),
    )
    for (const response of responses) assert.equal(response.statusCode, 200)
  } finally {
    ticking = false
    await app.close()
  }
  const perTurnCounts = new Map<number, number>()
  for (const start of starts) perTurnCounts.set(start.turn, (perTurnCounts.get(start.turn) ?? 0) + 1)
  return {
    order: starts.map((start) => start.request),
    perTurnCounts: [...perTurnCounts.values()],
    stillWaiting: starts.map((start) => start.stillWaiting),
    waitingAfter: admission.waiting(),
  }
}

describe('admission: requests start in the order they arrived, a few per turn of the event loop', () => {
  test('at most REQUESTS_PER_TURN requests start in one turn, in the order they arrived', async () => {
    const { order, perTurnCounts } = await handlerStarts(3, 10)
    assert.deepEqual(
      order,
      Array.from({ length: 10 }, (_, n) => n),
    )
    assert.ok(
      perTurnCounts.every((count) => count <= 3),
      `requests started per turn: ${perTurnCounts}`,
    )
    assert.equal(perTurnCounts.length, 4, `requests started per turn: ${perTurnCounts}`)
  })

  test('the queue counts the requests still waiting for their turn (the metrics gauge reads it)', async () => {
    const { stillWaiting, waitingAfter } = await handlerStarts(3, 10)
    // Read by each handler as it began: every request read after it is still waiting.
    assert.deepEqual(stillWaiting, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0])
    assert.equal(waitingAfter, 0)
  })

  test('the queue hands items out first in, first out, and a queue that never empties keeps few slots', () => {
    const queue = new ArrivalQueue<number>(64)
    queue.push(0)
    queue.push(1)
    const out: number[] = []
    // Steady load: one in, one out, 100,000 times, the queue never empty.
    for (let n = 2; n < 100_002; n++) {
      queue.push(n)
      out.push(queue.shift() as number)
      assert.equal(queue.length, 2)
      assert.ok(queue.slots <= 2 * 64 + 2, `${queue.slots} slots held for 2 waiting items`)
    }
    assert.deepEqual(
      out,
      Array.from({ length: 100_000 }, (_, n) => n),
    )
    assert.equal(queue.shift(), 100_000)
    assert.equal(queue.shift(), 100_001)
    assert.equal(queue.shift(), undefined)
    assert.equal(queue.slots, 0)
  })

  test('0 turns the gate off: every request read in a turn starts in that turn', async () => {
    const { perTurnCounts } = await handlerStarts(0, 10)
    assert.deepEqual(perTurnCounts, [10])
  })

  test('REQUESTS_PER_TURN is read from the environment, 8 by default, and refused when not a count', () => {
    assert.equal(loadConfig({}).requestsPerTurn, 8)
    assert.equal(loadConfig({ REQUESTS_PER_TURN: '0' }).requestsPerTurn, 0)
    assert.equal(loadConfig({ REQUESTS_PER_TURN: '32' }).requestsPerTurn, 32)
    assert.throws(() => loadConfig({ REQUESTS_PER_TURN: '-1' }), ConfigError)
    assert.throws(() => loadConfig({ REQUESTS_PER_TURN: 'many' }), /REQUESTS_PER_TURN/)
  })

  for (const backend of BACKENDS) {
    test(`${backend.name}: one request a turn, 30 concurrent creates and then 30 concurrent reads over real sockets are all answered`, {
      skip: backend.skip,
    }, async () => {
      const testApp = await startTestApp(backend, { config: { requestsPerTurn: 1 } })
      try {
        const org = await testApp.createOrg()
        const address = await testApp.app.listen({ host: '127.0.0.1', port: 0 })
        const headers = { 'content-type': 'application/json', 'x-api-key': org.key }
        const created = await Promise.all(
          Array.from({ length: 30 }, (_, n) =>
            fetch(`${address}/api/v1/contact`, {
              method: 'POST',
              headers,
              body: JSON.stringify({ first_name: `Turn${n}`, email: `turn${n}@example.com` }),
            }).then(async (response) => ({
              status: response.status,
              body: (await response.json()) as { data: { id: string } },
            })),
          ),
        )
        assert.deepEqual(
          created.map((response) => response.status),
          Array(30).fill(201),
        )
        const read = await Promise.all(
          created.map((response) =>
            fetch(`${address}/api/v1/contact/${response.body.data.id}`, { headers }).then(async (answer) => ({
              status: answer.status,
              firstName: ((await answer.json()) as { data: { first_name: string } }).data.first_name,
            })),
          ),
        )
        assert.deepEqual(
          read.map((answer) => answer.status),
          Array(30).fill(200),
        )
        assert.deepEqual(
          read.map((answer) => answer.firstName).sort(),
          Array.from({ length: 30 }, (_, n) => `Turn${n}`).sort(),
        )
      } finally {
        await testApp.close()
      }
    })
  }
})
