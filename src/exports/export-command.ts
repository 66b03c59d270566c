import { createWriteStream } from 'node:fs'
import { Readable } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { countContacts } from '../contacts/search.repository.js'
import type { ListQuery } from '../contacts/search.schemas.js'
import { searchFromQuery } from '../contacts/search.service.js'
import type { DatabaseHandle } from '../db/database.js'
import { progressReporter } from '../imports/progress.js'
import { type ExportFormat, exportContacts } from './exports.service.js'

/**
 * `contacts export`: the same stream as GET /contact/export, written to a file or to standard
 * output, with progress (contacts written, of the organization's total) on standard error.
 */
export async function exportToFile(
  database: DatabaseHandle,
  orgId: string,
  format: ExportFormat,
  filters: Record<string, string | null>,
  output: string | undefined,
): Promise<number> {
  const query = Object.fromEntries(Object.entries(filters).map(([name, value]) => [name, value ?? '']))
  const search = await searchFromQuery(database.db, orgId, query as ListQuery)
  // Without filters the total is the organization's count: enough for a bar and an ETA.
  const total = search.filter || search.q ? null : await countContacts(database.db, orgId, [])
  const progress = progressReporter('export')
  let written = 0
  const contacts = exportContacts(database, orgId, search, format, (count) => {
    written += count
    progress.update(written, total, `${written} contacts`)
  })
  try {
    await pipeline(Readable.from(contacts), output === undefined ? process.stdout : createWriteStream(output))
  } finally {
    progress.end()
  }
  return written
}
