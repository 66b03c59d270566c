/**
 * The webhook receiver of the benchmark: acknowledges every delivery at once (204), as a healthy
 * integration does, in a process of its own so that its work is not counted as the server's.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'

let received = 0
const server = http.createServer((request, response) => {
  request.resume()
  request.on('end', () => {
    received += 1
    response.writeHead(204).end()
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as AddressInfo).port}\n`)
})
process.on('SIGTERM', () => {
  process.stdout.write(`received ${received}\n`)
  server.closeAllConnections()
  server.close(() => process.exit(0))
})
