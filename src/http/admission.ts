import type { FastifyInstance } from 'fastify'

/**
 * Starts at most `perTurn` requests per turn of the event loop, in the order they arrived.
 *
 * Node reads every connection that is ready in one turn and runs each request as far as it goes
 * before it looks at the sockets again. Under load that is a batch of up to one request per
 * connection (50 in the bench), and a request that arrives just after the batch was read waits for
 * all of it and then for its place in the next one. A bare node:http server served the same
 * connections in the same order turn after turn, and those it served last in a turn missed the
 * next one and came last in the turn after: about two batches' wait, and its p99 was about twice
 * its mean wait at any cost a request. The batch's requests are also all alive at once, their
 * objects and promise chains interleaved.
 *
 * Here each request waits in a queue of its own (in the order Node read them) until its turn, and
 * each turn starts the next `perTurn` of them, then lets the event loop poll again: a request that
 * arrives is read, and a new connection accepted, within `perTurn` requests' work. Nothing is
 * refused or dropped; a waiting request holds no database connection or lock, so the queue can
 * never wait on itself. Measured, the CPU each request costs the server fell as well (see the
 * README's performance section).
 */
export interface AdmissionQueue {
  /** Requests read but not started yet. */
  waiting(): number
}

export function admitInArrivalOrder(app: FastifyInstance, perTurn: number): AdmissionQueue {
  if (perTurn <= 0) return { waiting: () => 0 }
  const waiting: Array<() => void> = []
  let head = 0
  let scheduled = false

  const startNext = () => {
    scheduled = false
    const end = Math.min(head + perTurn, waiting.length)
    while (head < end) {
      const start = waiting[head] as () => void
      waiting[head] = noop
      head++
      start()
    }
    if (head === waiting.length) {
      waiting.length = 0
      head = 0
    } else {
      scheduleTurn()
    }
  }
  const scheduleTurn = () => {
    if (scheduled) return
    scheduled = true
    setImmediate(startNext)
  }

  app.addHook('onRequest', (_request, _reply, done) => {
    waiting.push(done as () => void)
    scheduleTurn()
  })
  return { waiting: () => waiting.length - head }
}

const noop = () => {}
