import type { Contact } from '../contacts/contacts.schemas.js'
import { eachContactPage, type Search, type SearchEngine } from '../contacts/search.service.js'
import { findCustomFieldTypesOf } from '../custom-fields/custom-fields.repository.js'

export type ExportFormat = 'csv' | 'ndjson'

/**
 * The columns of a CSV export, always in this order. The telephone channel has a column of its
 * own (phone_number) so that an export imports back as the same people; each defined custom
 * field has one too, and values without a definition stay in the custom_fields column as JSON,
 * so nothing is left out.
 */
const FIXED_COLUMNS = [
  'id',
  'first_name',
  'last_name',
  'email',
  'phone_number',
  'external_id',
  'channels',
  'user_attributes',
  'last_seen',
  'last_sent',
  'first_assistant_id',
  'last_assistant_id',
  'first_widget_id',
  'last_widget_id',
  'created_at',
  'updated_at',
] as const

const cell = (value: unknown): string =>
  value === null || value === undefined ? '' : typeof value === 'string' ? value : JSON.stringify(value)

function csvRow(
  contact: Contact,
  customFieldNames: readonly string[],
  defined: ReadonlySet<string>,
): string[] {
  const { telephone } = contact.channels
  const row: string[] = FIXED_COLUMNS.map((column) =>
    column === 'phone_number'
      ? cell(typeof telephone === 'string' ? telephone : null)
      : cell(contact[column]),
  )
  for (const name of customFieldNames) row.push(cell(contact.custom_fields[name]))
  let rest: Record<string, unknown> | null = null
  for (const [name, value] of Object.entries(contact.custom_fields)) {
    if (defined.has(name)) continue
    rest ??= {}
    rest[name] = value
  }
  row.push(rest ? JSON.stringify(rest) : '')
  return row
}

/**
 * Contacts read per query. A page stays alive while the next one is read and its output is
 * written, so the young generation copies it at every collection: with 1000 rows that copying was
 * a fifth of an export's CPU; with 250 the queries that make up the difference cost less.
 */
const EXPORT_PAGE_SIZE = 250

/**
 * An organization's contacts (all, or those a search matches) as CSV or NDJSON, produced a page
 * at a time: the caller streams it, and memory stays that of one page whatever the size.
 */
export async function* exportContacts(
  engine: Pick<SearchEngine, 'db' | 'dialect'>,
  orgId: string,
  search: Search,
  format: ExportFormat,
  /** Told how many contacts each piece of output holds (for progress). */
  onContacts: (count: number) => void = () => {},
): AsyncGenerator<string> {
  if (format === 'ndjson') {
    for await (const page of eachContactPage(engine, orgId, search, EXPORT_PAGE_SIZE)) {
      yield `${page.map((contact) => JSON.stringify(withoutVersion(contact))).join('\n')}\n`
      onContacts(page.length)
    }
    return
  }
  // Loaded by the first CSV export, not by every server.
  const { stringify } = await import('csv-stringify/sync')
  const customFieldNames = [...(await findCustomFieldTypesOf(engine.db, orgId)).keys()].sort()
  const defined = new Set(customFieldNames)
  yield stringify([
    [...FIXED_COLUMNS, ...customFieldNames.map((name) => `custom_fields.${name}`), 'custom_fields'],
  ])
  for await (const page of eachContactPage(engine, orgId, search, EXPORT_PAGE_SIZE)) {
    yield stringify(page.map((contact) => csvRow(contact, customFieldNames, defined)))
    onContacts(page.length)
  }
}

const withoutVersion = (contact: Contact & { version?: number }): Contact => {
  const { version: _version, ...rest } = contact
  return rest
}
