/** Driver errors, recognised by their stable codes (SQLSTATE on PostgreSQL, result codes on SQLite). */
const codeOf = (error: unknown): string | undefined =>
  typeof error === 'object' && error !== null && 'code' in error ? String(error.code) : undefined

export function isUniqueViolation(error: unknown): boolean {
  const code = codeOf(error)
  return code === '23505' || code === 'SQLITE_CONSTRAINT_UNIQUE' || code === 'SQLITE_CONSTRAINT_PRIMARYKEY'
}

const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EPIPE',
  '57P01', // admin_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
  '25006', // read_only_sql_transaction: a standby, or a primary demoted by a failover
  'SQLITE_LOCKED',
])

/** PostgreSQL's statement_timeout (57014, query_canceled) or a lock wait that gave up, on either backend. */
export function isDatabaseTimeout(error: unknown): boolean {
  const code = codeOf(error)
  // SQLITE_BUSY: another process held the write lock for the whole busy timeout.
  return code === '57014' || code === '55P03' || code === 'SQLITE_BUSY'
}

/** The database could not store a change: its disk is full (SQLite also says so at its max_page_count). */
export function isStorageFull(error: unknown): boolean {
  const code = codeOf(error)
  return code === 'SQLITE_FULL' || code === '53100'
}

/** node-postgres gave up waiting for a free connection of the pool. */
export function isPoolExhausted(error: unknown): boolean {
  return error instanceof Error && /timeout exceeded when trying to connect/i.test(error.message)
}

export function isDatabaseUnavailable(error: unknown): boolean {
  const code = codeOf(error)
  if (code !== undefined && UNAVAILABLE_CODES.has(code)) return true
  return error instanceof Error && /Connection terminated/i.test(error.message)
}
