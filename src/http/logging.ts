import type { FastifyServerOptions } from 'fastify'
import type { DestinationStream } from 'pino'
import { API_KEY_PATTERN } from '../api-keys/api-key-secret.js'

const API_KEY_ANYWHERE = new RegExp(API_KEY_PATTERN.source.slice(1, -1), 'g')

/**
 * Keys must never reach a log line. The original puts them in the query string, so the URL of
 * every access line is scrubbed: the api_key parameter by name, and anything shaped like a key
 * wherever it appears.
 */
export function redactUrl(url: string): string {
  return url.replace(/([?&]api_key=)[^&#]*/gi, '$1[REDACTED]').replace(API_KEY_ANYWHERE, '[REDACTED]')
}

export function loggerOptions(level: string, stream?: DestinationStream): FastifyServerOptions['logger'] {
  return {
    level,
    ...(stream ? { stream } : {}),
    redact: {
      paths: ['req.headers["x-api-key"]', 'req.headers.authorization', 'req.headers.cookie'],
      censor: '[REDACTED]',
    },
    serializers: {
      req(request: { method: string; url: string; ip?: string; socket?: { remotePort?: number } }) {
        return { method: request.method, url: redactUrl(request.url), remoteAddress: request.ip }
      },
    },
  }
}
