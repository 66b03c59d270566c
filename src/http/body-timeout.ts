import type { FastifyInstance } from 'fastify'
import { AppError } from '../errors.js'

/**
 * Node's requestTimeout stops counting once a request's headers have arrived, so a client that
 * sends headers and then trickles (or never finishes) its body would hold a connection and a
 * request forever. This bounds the whole request, body included, by the same timeout: when it
 * runs out, the body read fails with a 408 in the usual error shape and the connection is closed.
 * It adds one timer to a request whose body is still arriving, and nothing to the others.
 */
export function boundBodyReading(app: FastifyInstance, requestTimeoutMs: number): void {
  app.addHook('preParsing', async (request, reply, payload) => {
    if (request.raw.complete) return payload
    const timer = setTimeout(
      () => {
        if (request.raw.complete || reply.sent) return
        reply.header('connection', 'close')
        const timedOut = new AppError('request_timeout', 'The request was not received in time')
        // The body reader listens for errors on the stream it reads; failing that stream is how
        // the request ends in the error handler like any other failure.
        if (payload.listenerCount('error') > 0) payload.emit('error', timedOut)
        else request.raw.socket?.destroy()
      },
      Math.max(0, requestTimeoutMs - reply.elapsedTime),
    )
    const stop = () => clearTimeout(timer)
    payload.once('end', stop)
    // Answered before the body was read (a 413, a refused key): nothing is left to guard.
    reply.raw.once('close', stop)
    return payload
  })
}
