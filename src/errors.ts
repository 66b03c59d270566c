/**
 * The error catalogue: every error a client can see has a stable code listed here, with its HTTP
 * status. Codes are never reused for another meaning; a retired code stays listed as retired.
 * The HTTP layer (src/http/errors.plugin.ts) is the one place that turns these into responses.
 */
export const ERROR_CATALOGUE = {
  bad_request: { status: 400, description: 'The HTTP request itself is malformed.' },
  not_authenticated: { status: 401, description: 'No API key was given.' },
  invalid_api_key: { status: 401, description: 'The API key is unknown or has been revoked.' },
  read_only_key: { status: 403, description: 'A read_only key was used on a route that writes.' },
  organization_mismatch: {
    status: 403,
    description: "The body names an organization other than the API key's own.",
  },
  contact_not_found: { status: 404, description: 'No contact with this id in your organization.' },
  custom_field_not_found: {
    status: 404,
    description: 'No custom field definition with this id in your organization.',
  },
  organization_not_found: { status: 404, description: 'No organization with this id or name.' },
  api_key_not_found: { status: 404, description: 'No API key with this id.' },
  contact_merged: {
    status: 404,
    description: 'The contact was merged into another; `merged_into` names the survivor.',
  },
  route_not_found: { status: 404, description: 'No route matches this method and path.' },
  webhook_not_found: { status: 404, description: 'No webhook with this id in your organization.' },
  delivery_not_found: { status: 404, description: 'No delivery with this id for this webhook.' },
  import_not_found: { status: 404, description: 'No import job with this id in your organization.' },
  custom_field_exists: {
    status: 409,
    description: 'A custom field with this name already exists in the organization.',
  },
  identity_conflict: {
    status: 409,
    description:
      'Another contact already holds this email, phone number or external id; `existing_id` names it.',
  },
  contact_not_in_trash: { status: 409, description: 'Only a contact in the trash can be restored.' },
  delivery_pending: {
    status: 409,
    description: 'The event is still being delivered to this webhook; redeliver it once that delivery ends.',
  },
  organization_exists: { status: 409, description: 'An organization with this name already exists.' },
  conflict: { status: 409, description: 'The change conflicts with data stored meanwhile; retry it.' },
  precondition_failed: {
    status: 412,
    description: 'If-Match named a version of the contact that is no longer current; nothing was changed.',
  },
  idempotency_in_progress: {
    status: 409,
    description: 'A request with this Idempotency-Key is still being served; retry shortly.',
  },
  idempotency_key_reused: {
    status: 422,
    description: 'This Idempotency-Key was used with a different request in the last 24 hours.',
  },
  invalid_cursor: {
    status: 422,
    description: 'The cursor was altered, or belongs to another query (other filters or sort).',
  },
  rate_limited: { status: 429, description: 'Too many requests; wait for the time in Retry-After.' },
  uri_too_long: { status: 414, description: 'A path parameter is longer than any id can be.' },
  payload_too_large: { status: 413, description: 'The request body exceeds the size limit.' },
  unsupported_media_type: {
    status: 415,
    description: 'The body is not of a type this route reads (an import takes text/csv).',
  },
  validation_failed: { status: 422, description: 'The request does not match the documented schema.' },
  internal_error: { status: 500, description: 'An unexpected error; details are in the server log only.' },
  database_timeout: { status: 503, description: 'The database took too long to answer; retry later.' },
  database_unavailable: { status: 503, description: 'The database could not be reached; retry later.' },
  storage_full: {
    status: 507,
    description:
      'The database has no room left for the change (its disk is full); nothing was written. Retry once space is freed.',
  },
  database_busy: {
    status: 503,
    description: 'Every database connection stayed in use for the whole wait; retry shortly.',
  },
  request_timeout: {
    status: 408,
    description: 'The client took longer than the request timeout to send the whole request.',
  },
  headers_too_large: { status: 431, description: 'The request headers exceed the size limit.' },
} as const satisfies Record<string, { status: number; description: string }>

export type ErrorCode = keyof typeof ERROR_CATALOGUE

/** One entry of a FastAPI-style validation error list. */
export interface ValidationIssue {
  loc: (string | number)[]
  msg: string
  type: string
}

/** Fields an error may carry beside `detail` and `code`, to point at the data involved. */
export interface ErrorDetails {
  existing_id?: string
  merged_into?: string
}

export class AppError extends Error {
  readonly status: number

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: ErrorDetails = {},
  ) {
    super(message)
    this.status = ERROR_CATALOGUE[code].status
  }
}

/** A 422 that points at the offending input, in FastAPI's `detail` list shape. */
export class ValidationFailedError extends AppError {
  constructor(
    readonly issues: ValidationIssue[],
    code: 'validation_failed' | 'idempotency_key_reused' | 'invalid_cursor' = 'validation_failed',
  ) {
    super(code, issues[0]?.msg ?? 'Validation failed')
  }
}

export const notFound = (code: 'contact_not_found' | 'custom_field_not_found', what: string) =>
  new AppError(code, `${what} not found`)
