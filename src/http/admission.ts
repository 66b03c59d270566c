import type { FastifyInstance } from 'fastify'

/** What the metrics read of the queue. */
export interface AdmissionQueue {
  /** Requests read but not started yet. */
  waiting(): number
}

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
export function admitInArrivalOrder(app: FastifyInstance, perTurn: number): AdmissionQueue {
  if (perTurn <= 0) return { waiting: () => 0 }
  const waiting = new ArrivalQueue<() => void>()
  let scheduled = false

  const startNext = () => {
    scheduled = false
    try {
      for (let started = 0; started < perTurn; started++) {
        const start = waiting.shift()
        if (start === undefined) break
        start()
      }
    } finally {
      // Whatever one request does, the others still get their turns.
      if (waiting.length > 0) scheduleTurn()
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
  return { waiting: () => waiting.length }
}

/**
 * First in, first out, without Array.shift's copy of the whole array at every call. The slots
 * already taken are dropped once they are at least `compactAt` and half the array, so that a
 * queue that never empties under steady load does not keep a slot for every request it ever held.
 */
export class ArrivalQueue<T> {
  #items: (T | undefined)[] = []
  #head = 0

  constructor(private readonly compactAt = 1024) {}

  get length(): number {
    return this.#items.length - this.#head
  }

  /** Slots held, taken ones included (for the tests). */
  get slots(): number {
    return this.#items.length
  }

  push(item: T): void {
    this.#items.push(item)
  }

  shift(): T | undefined {
    if (this.#head === this.#items.length) return undefined
    const item = this.#items[this.#head]
    this.#items[this.#head] = undefined
    this.#head++
    if (this.#head === this.#items.length) {
      this.#items = []
      this.#head = 0
    } else if (this.#head >= this.compactAt && this.#head * 2 >= this.#items.length) {
      this.#items = this.#items.slice(this.#head)
      this.#head = 0
    }
    return item
  }
}
