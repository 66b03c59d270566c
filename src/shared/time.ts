/**
 * RFC 3339 in UTC with a `Z`, without a fractional part when it is zero, so that a value sent as
 * `2023-11-07T05:31:56Z` comes back exactly as it was sent.
 */
export function formatTimestamp(value: Date | string): string {
  const iso = (value instanceof Date ? value : new Date(value)).toISOString()
  return iso.endsWith('.000Z') ? `${iso.slice(0, -5)}Z` : iso
}

export const formatNullableTimestamp = (value: Date | string | null): string | null =>
  value === null ? null : formatTimestamp(value)

/** The stored form: full ISO in UTC, which sorts correctly as text on SQLite. */
export const toStoredTimestamp = (value: string | Date): string => new Date(value).toISOString()

export const nowTimestamp = (): string => new Date().toISOString()
