import { type RawBuilder, sql } from 'kysely'
import type { UpdateableContactRow } from '../db/schema.js'
import { phonesOfChannels } from './phone.js'

/**
 * How text is compared by the `q` search: Unicode-normalized and lower-cased here, in one place,
 * rather than by each database's own rules (SQLite's lower() only knows ASCII, PostgreSQL's
 * depends on the server's locale), so that both backends find exactly the same contacts.
 */
export function foldText(text: string): string {
  return text.normalize('NFC').toLowerCase()
}

interface SearchColumns {
  first_name_folded?: string | null
  last_name_folded?: string | null
  channels_folded?: string | null
}

const foldOrNull = (value: string | null | undefined) => (value ? foldText(value) : null)

/** What `q` searches in a contact's channels: each text value, and each phone number in E.164. */
export function channelsSearchText(channels: Record<string, unknown>): string | null {
  const values = Object.values(channels).filter((value): value is string => typeof value === 'string')
  const parts = [...values, ...phonesOfChannels(channels)].map(foldText).filter((part) => part !== '')
  return parts.length > 0 ? [...new Set(parts)].join('\n') : null
}

/**
 * Adds the folded copies of the searchable fields a write sets. Each copy depends on one field
 * only, so a partial update keeps them in step without reading the row first.
 */
export function withSearchColumns<T extends UpdateableContactRow>(columns: T): T & SearchColumns {
  const result: T & SearchColumns = { ...columns }
  if ('first_name' in columns) result.first_name_folded = foldOrNull(columns.first_name)
  if ('last_name' in columns) result.last_name_folded = foldOrNull(columns.last_name)
  if ('channels' in columns && columns.channels !== undefined) {
    const channels =
      columns.channels === '{}'
        ? {}
        : typeof columns.channels === 'string'
          ? JSON.parse(columns.channels)
          : (columns.channels ?? {})
    result.channels_folded = channelsSearchText(channels)
  }
  return result
}

/**
 * The text `q` looks in: "first last", the email and the channel values, one per line. The
 * trigram index on PostgreSQL is built on this very expression, so queries must use it as is.
 */
export function searchDocument(): RawBuilder<string> {
  return sql<string>`(coalesce(first_name_folded, '') || ' ' || coalesce(last_name_folded, '') || ${sql.lit('\n')} || coalesce(email_normalized, '') || ${sql.lit('\n')} || coalesce(channels_folded, ''))`
}
