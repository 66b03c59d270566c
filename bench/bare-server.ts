/**
 * A bare node:http server (no framework, no database, no logging) that spends a given CPU time on
 * each request, `?cpu_us=N`, before answering with a contact-sized JSON body. Driven like the
 * service's routes, it shows what Node's own HTTP handling and one event loop give a route of a
 * given cost at the bench's 50 connections: the latencies that no code of the service could
 * improve on without spending less CPU per request.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'

const BODY = JSON.stringify({
  message: 'Contact updated successfully',
  meta: {},
  data: {
    id: '3c90c3cc-0d44-4b50-8888-8dd25736052a',
    first_name: 'Ada',
    last_name: 'Lovelace',
    email: 'ada@example.com',
    channels: { telephone: '+15551234567', whatsapp: '+15551234567' },
    user_attributes: { plan: 'pro', source: 'widget' },
    custom_fields: {},
    org_id: '3c90c3cc-0d44-4b50-8888-8dd25736052a',
  },
})

const cpuNow = () => {
  const { user, system } = process.cpuUsage()
  return user + system
}

/** Spends `us` microseconds of this process's CPU (wall time would count what other work takes). */
function spend(us: number) {
  const until = cpuNow() + us
  while (cpuNow() < until) {
    // Spinning is the point.
  }
}

const server = http.createServer((request, response) => {
  const cpuUs = Number(/[?&]cpu_us=(\d+)/.exec(request.url ?? '')?.[1] ?? 0)
  request.resume()
  request.on('end', () => {
    spend(cpuUs)
    response.writeHead(200, { 'content-type': 'application/json; charset=utf-8' }).end(BODY)
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`)
})
process.on('SIGTERM', () => {
  server.closeAllConnections()
  server.close(() => process.exit(0))
})
