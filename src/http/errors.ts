import { STATUS_CODES } from 'node:http'
import type { Duplex } from 'node:stream'
import type { FastifyError } from 'fastify'
import {
  isDatabaseTimeout,
  isDatabaseUnavailable,
  isPoolExhausted,
  isStorageFull,
  isUniqueViolation,
} from '../db/errors.js'
import {
  AppError,
  ERROR_CATALOGUE,
  type ErrorCode,
  type ErrorDetails,
  ValidationFailedError,
  type ValidationIssue,
} from '../errors.js'
import { issueFromAjv } from './validation.js'

export interface HttpError {
  status: number
  body: { detail: string | ValidationIssue[]; code: ErrorCode } & ErrorDetails
}

const fail = (
  code: ErrorCode,
  detail: string | ValidationIssue[],
  details: ErrorDetails = {},
): HttpError => ({
  status: ERROR_CATALOGUE[code].status,
  body: { detail, code, ...details },
})

const invalid = (issues: ValidationIssue[]) => fail('validation_failed', issues)

/**
 * The one mapping from anything thrown to what the client sees. Known errors keep their message;
 * everything else becomes a bare 500 (the cause goes to the log, never to the client).
 */
export function toHttpError(error: unknown): HttpError {
  if (error instanceof ValidationFailedError) return fail(error.code, error.issues)
  if (error instanceof AppError) {
    // A 422 always lists its problems, as FastAPI's do, whatever raised it.
    return error.status === 422
      ? fail(error.code, [{ loc: ['body'], msg: error.message, type: 'value_error' }])
      : fail(error.code, error.message, error.details)
  }
  const fastifyError = error as Partial<FastifyError> & { validation?: unknown[] }
  if (Array.isArray(fastifyError.validation)) {
    const part = fastifyError.validationContext ?? 'body'
    const issues = (fastifyError.validation as Parameters<typeof issueFromAjv>[0][]).map((e) =>
      issueFromAjv(e, part),
    )
    return invalid(dedupe(issues))
  }
  switch (fastifyError.code) {
    case 'FST_ERR_MAX_PARAM_LENGTH':
      return fail('uri_too_long', 'A path parameter is too long')
    case 'FST_ERR_BAD_URL':
    case 'FST_ERR_ASYNC_CONSTRAINT':
      return fail('bad_request', 'The request URL is malformed')
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return fail('payload_too_large', 'Request body is too large')
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
      return invalid([{ loc: ['body'], msg: 'Field required', type: 'missing' }])
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return invalid([{ loc: ['body'], msg: 'JSON decode error', type: 'json_invalid' }])
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return invalid([
        { loc: ['body'], msg: 'Input should be a valid dictionary or object', type: 'dict_type' },
      ])
  }
  // Prototype-poisoning and similar parser refusals are 400s raised while reading the body.
  if (
    fastifyError.statusCode === 400 &&
    (error instanceof SyntaxError || /prototype|JSON/i.test(String(fastifyError.message)))
  ) {
    return invalid([{ loc: ['body'], msg: 'JSON decode error', type: 'json_invalid' }])
  }
  if (isUniqueViolation(error)) return fail('conflict', 'The change conflicts with existing data')
  if (isStorageFull(error))
    return fail('storage_full', 'The database has no room left to store this change; nothing was written')
  if (isPoolExhausted(error))
    return fail('database_busy', 'Every database connection is in use; retry shortly')
  if (isDatabaseTimeout(error))
    return fail('database_timeout', 'The database took too long to answer; retry later')
  if (isDatabaseUnavailable(error))
    return fail('database_unavailable', 'The database is unavailable; retry later')
  const status = fastifyError.statusCode
  if (status !== undefined && status >= 400 && status < 500) {
    return { status, body: { detail: fastifyError.message ?? 'Bad Request', code: 'bad_request' } }
  }
  return fail('internal_error', 'Internal Server Error')
}

function dedupe(issues: ValidationIssue[]): ValidationIssue[] {
  const seen = new Set<string>()
  return issues.filter((issue) => {
    const key = JSON.stringify([issue.loc, issue.type])
    if (seen.has(key)) return false
    seen.add(key)
    return true
  })
}

/**
 * Answers a connection-level failure (no request object exists yet) with the same error shape as
 * every other answer, then closes the connection, as Node does by default.
 */
export function answerClientError(error: NodeJS.ErrnoException, socket: Duplex) {
  if (error.code === 'ECONNRESET' || socket.destroyed) return
  const { status, body } =
    error.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? fail('request_timeout', 'The request was not received in time')
      : error.code === 'HPE_HEADER_OVERFLOW'
        ? fail('headers_too_large', 'The request headers are too large')
        : fail('bad_request', 'The request is not valid HTTP')
  const json = JSON.stringify(body)
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(json)}\r\nConnection: close\r\n\r\n${json}`,
    )
  }
  socket.destroy(error)
}
