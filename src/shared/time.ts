/**
 * RFC 3339 in UTC with a `Z`, without a fractional part when it is zero, so that a value sent as
 * `2023-11-07T05:31:56Z` comes back exactly as it was sent.
 */
export function formatTimestamp(value: Date | string): string {
  // Stored timestamps are already RFC 3339 in UTC with milliseconds (the application writes them
  // with toISOString, and PostgreSQL's are read as such): no Date to make on every read.
  const iso =
    typeof value === 'string' && value.length === 24 && STORED_TIMESTAMP.test(value)
      ? value
      : (value instanceof Date ? value : new Date(value)).toISOString()
  return iso.endsWith('.000Z') ? `${iso.slice(0, -5)}Z` : iso
}

const STORED_TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/

/** PostgreSQL's text for a timestamptz in a UTC session: `2026-11-28 06:05:01.123+00`. */
const POSTGRES_UTC_TIMESTAMP = /^(\d{4}-\d{2}-\d{2}) (\d{2}:\d{2}:\d{2})(?:\.(\d{1,6}))?\+00$/

/**
 * A timestamptz as PostgreSQL sends it, as the string SQLite stores for the same instant
 * (toISOString's form, to the millisecond): made from the text when the session is in UTC, through
 * a Date otherwise (`parseOther`: the driver's own parser).
 */
export function timestampFromPostgres(text: string, parseOther: (text: string) => unknown): string {
  const match = POSTGRES_UTC_TIMESTAMP.exec(text)
  if (match) return `${match[1]}T${match[2]}.${(match[3] ?? '').padEnd(3, '0').slice(0, 3)}Z`
  const parsed = parseOther(text)
  return parsed instanceof Date && !Number.isNaN(parsed.getTime()) ? parsed.toISOString() : text
}

export const formatNullableTimestamp = (value: Date | string | null): string | null =>
  value === null ? null : formatTimestamp(value)

export const nowTimestamp = (): string => new Date().toISOString()

const DATE_TIME =
  /^(\d{4})-(\d{2})-(\d{2})(?:[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?([Zz]|[+-]\d{2}(?::?\d{2})?)?)?$/

const isLeapYear = (year: number) => (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0
const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]
const daysInMonth = (year: number, month: number) =>
  month === 2 && isLeapYear(year) ? 29 : (DAYS_IN_MONTH[month - 1] ?? 0)

/**
 * Reads a date-time the way the original (pydantic) does: RFC 3339, and also without a zone
 * (taken as UTC) or as a bare date (midnight UTC), so that clients written for it keep working.
 * Impossible calendar values (February 30, 25:00, a leap second) are refused rather than rolled
 * over. Precision is kept to the millisecond.
 */
export function parseDateTime(text: string): Date | null {
  const match = DATE_TIME.exec(text)
  if (!match) return null
  const [, y, mo, d, h = '0', mi = '0', s = '0', fraction = '', zone = 'Z'] = match
  const [year, month, day, hour, minute, second] = [y, mo, d, h, mi, s].map(Number) as number[] as [
    number,
    number,
    number,
    number,
    number,
    number,
  ]
  if (month < 1 || month > 12 || day < 1 || day > daysInMonth(year, month)) return null
  if (hour > 23 || minute > 59 || second > 59) return null
  let offsetMinutes = 0
  if (zone !== 'Z' && zone !== 'z') {
    const digits = zone.slice(1).replace(':', '')
    const [offsetHours, offsetRest] = [Number(digits.slice(0, 2)), Number(digits.slice(2) || '0')]
    if (offsetHours > 23 || offsetRest > 59) return null
    offsetMinutes = (zone.startsWith('-') ? -1 : 1) * (offsetHours * 60 + offsetRest)
  }
  const date = new Date(0)
  date.setUTCFullYear(year, month - 1, day)
  date.setUTCHours(hour, minute, second, Math.floor(Number(`0.${fraction || '0'}`) * 1000))
  return new Date(date.getTime() - offsetMinutes * 60_000)
}
