import { once } from 'node:events'
import http from 'node:http'
import type { AddressInfo } from 'node:net'

export interface ReceivedRequest {
  path: string
  headers: http.IncomingHttpHeaders
  body: string
  eventId: string
  receivedAt: number
  /** When the answer was sent, and its status; unset while unanswered. */
  answeredAt?: number
  status?: number
}

/** What to do with a request: answer with a status after an optional delay, or never answer. */
export type Reply = { status: number; delayMs?: number; headers?: Record<string, string> } | 'hang'

/**
 * A webhook receiver on loopback, as an integrator would run one: records every request and
 * answers as the test tells it to.
 */
export async function startReceiver(
  decide: (request: ReceivedRequest, index: number) => Reply = () => ({ status: 200 }),
) {
  const received: ReceivedRequest[] = []
  const waiters: { predicate: () => boolean; resolve: () => void }[] = []
  const settle = () => {
    for (const waiter of [...waiters]) {
      if (waiter.predicate()) {
        waiters.splice(waiters.indexOf(waiter), 1)
        waiter.resolve()
      }
    }
  }
  const hanging = new Set<http.ServerResponse>()
  const server = http.createServer((request, response) => {
    let body = ''
    request.setEncoding('utf8')
    request.on('data', (chunk) => {
      body += chunk
    })
    request.on('end', () => {
      const entry: ReceivedRequest = {
        path: request.url ?? '/',
        headers: request.headers,
        body,
        eventId: String(request.headers['x-contacts-event-id'] ?? ''),
        receivedAt: Date.now(),
      }
      const index = received.length
      received.push(entry)
      const reply = receiver.decide(entry, index)
      if (reply === 'hang') {
        hanging.add(response)
        settle()
        return
      }
      setTimeout(() => {
        entry.answeredAt = Date.now()
        entry.status = reply.status
        response.writeHead(reply.status, { 'content-type': 'text/plain', ...reply.headers }).end('ok')
        settle()
      }, reply.delayMs ?? 0)
    })
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const { port } = server.address() as AddressInfo
  const receiver = {
    url: `http://127.0.0.1:${port}`,
    received,
    decide,
    /** Resolves when the predicate holds (checked on every request), or fails after the timeout. */
    until(predicate: () => boolean, timeoutMs = 15_000, what = 'the receiver to see the deliveries') {
      if (predicate()) return Promise.resolve()
      return new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs)
        waiters.push({
          predicate,
          resolve: () => {
            clearTimeout(timer)
            resolve()
          },
        })
      })
    },
    acknowledged: (eventId: string) =>
      received.filter((r) => r.eventId === eventId && r.status !== undefined && r.status < 300).length,
    async close() {
      for (const response of hanging) response.destroy()
      server.closeAllConnections()
      server.close()
    },
  }
  return receiver
}

export type Receiver = Awaited<ReturnType<typeof startReceiver>>
