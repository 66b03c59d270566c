import { PassThrough } from 'node:stream'
import type { FastifyInstance } from 'fastify'
import { AppError } from '../errors.js'

/**
 * Node's requestTimeout stops counting once a request's headers have arrived, so a client that
 * sends headers and then trickles (or never finishes) its body would hold a connection and a
 * request forever. This bounds the whole request, body included, by the same timeout: when it
 * runs out, the body read fails with a 408 in the usual error shape and the connection is closed.
 */
export function boundBodyReading(app: FastifyInstance, requestTimeoutMs: number): void {
  app.addHook('preParsing', async (request, reply, payload) => {
    // Most bodies arrive with their headers and are complete by now: nothing to guard.
    if (request.raw.complete) return payload
    const guarded = new PassThrough()
    const timer = setTimeout(
      () => {
        payload.unpipe(guarded)
        reply.header('connection', 'close')
        guarded.destroy(new AppError('request_timeout', 'The request was not received in time'))
      },
      Math.max(0, requestTimeoutMs - reply.elapsedTime),
    )
    const stop = () => clearTimeout(timer)
    payload.once('end', stop)
    payload.once('close', stop)
    guarded.once('close', stop)
    // The request may be answered before its body is read (a 413, a refused key): the guard
    // then has nothing left to do, and nobody left to hear its error.
    reply.raw.once('close', stop)
    guarded.on('error', () => {})
    payload.pipe(guarded)
    return guarded
  })
}
