import type { FastifyServerOptions } from 'fastify'
import type { DestinationStream } from 'pino'
import { API_KEY_PATTERN } from '../api-keys/api-key-secret.js'

/** Text shaped like a key, anywhere in a string. */
const KEY_SHAPED = new RegExp(API_KEY_PATTERN.source.slice(1, -1))

/** Percent-decoded, as the query parser and the router read it; malformed escapes stay as sent. */
function decoded(text: string): string {
  if (!text.includes('%')) return text
  try {
    return decodeURIComponent(text)
  } catch {
    return text
  }
}

/** A part of a URL (a path segment, a parameter's name or value) that holds a key, decoded or not. */
function holdsKey(part: string): boolean {
  if (KEY_SHAPED.test(part)) return true
  const plain = decoded(part)
  return plain !== part && KEY_SHAPED.test(plain)
}

function redactParameter(pair: string): string {
  const equals = pair.indexOf('=')
  const name = equals === -1 ? pair : pair.slice(0, equals)
  if (holdsKey(name)) return '[REDACTED]'
  if (decoded(name).toLowerCase() === 'api_key' || holdsKey(pair.slice(equals + 1)))
    return `${name}=[REDACTED]`
  return pair
}

/**
 * Keys must never reach a log line. The original puts them in the query string, so the URL of
 * every access line is scrubbed: the api_key parameter by name, and any path segment or parameter
 * holding something shaped like a key. Both are judged percent-decoded, as the server reads them:
 * `?api%5Fkey=in%2D…` authenticates like `?api_key=in-…`.
 */
export function redactUrl(url: string): string {
  // Most URLs have no key to scrub, nor an escape that could hide one.
  if (!url.includes('%') && !url.includes('in-') && !/api_key/i.test(url)) return url
  const queryAt = url.indexOf('?')
  const rawPath = queryAt === -1 ? url : url.slice(0, queryAt)
  // A key-shaped text holds no '/', so a path without an escape holds one only if a segment does.
  const path =
    !rawPath.includes('%') && !KEY_SHAPED.test(rawPath)
      ? rawPath
      : rawPath
          .split('/')
          .map((segment) => (holdsKey(segment) ? '[REDACTED]' : segment))
          .join('/')
  if (queryAt === -1) return path
  return `${path}?${url
    .slice(queryAt + 1)
    .split('&')
    .map(redactParameter)
    .join('&')}`
}

export function loggerOptions(level: string, stream?: DestinationStream): FastifyServerOptions['logger'] {
  return {
    level,
    ...(stream ? { stream } : {}),
    // A request is logged as its method, its URL (scrubbed) and its address, never its headers,
    // so no header (X-API-Key, Authorization, Cookie) can reach a line: nothing is left for
    // pino's redaction to do, which would otherwise copy and walk every access line.
    serializers: {
      req(request: { method: string; url: string; ip?: string; socket?: { remotePort?: number } }) {
        return { method: request.method, url: redactUrl(request.url), remoteAddress: request.ip }
      },
    },
  }
}
