import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { sql } from 'kysely'
import { openDatabase } from '../src/db/database.js'
import { cleanPendingLists, ginIndexesWithPendingLists } from '../src/db/gin-pending-lists.js'
import { startTestApp } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

const postgres = BACKENDS.find((backend) => backend.name === 'postgres')

/**
 * Enough rows for the planner to prefer each index to reading the table: with 2,000 it reads every
 * row for `q` rather than the trigram index.
 */
const PEOPLE = 5_000
const TRASHED = 20

/**
 * Every index is written by every insert, and by every update that changes one of its columns (on
 * PostgreSQL, every index of the row whenever any indexed column changes). An index that no query
 * reads is paid for by every write and earns nothing.
 */
describe('indexes of contacts on postgres', { skip: postgres?.skip ?? 'no PostgreSQL backend' }, () => {
  test('every index of contacts is read by a query of the service', async () => {
    const t = await startTestApp(postgres as NonNullable<typeof postgres>)
    let appClosed = false
    try {
      const org = await t.createOrg()
      for (let from = 0; from < PEOPLE; from += 1000) {
        const contacts = Array.from({ length: 1000 }, (_, i) => {
          const n = from + i
          return {
            first_name: `Person${n}`,
            last_name: `Surname${n}`,
            email: `person${n}@indexes.example`,
            external_id: `ext-${n}`,
            custom_fields: { plan: `plan-${n}` },
            user_attributes: { city: `City ${n}` },
          }
        })
        const response = await t.api(org.key, 'POST', '/contact/batch/upsert', { contacts })
        assert.equal(response.statusCode, 200, response.body)
      }
      const listed = await t.api(org.key, 'GET', `/contact?page=1&size=${TRASHED}`)
      const ids = (listed.json().data.items as { id: string }[]).map((contact) => contact.id)
      for (const id of ids) assert.equal((await t.api(org.key, 'DELETE', `/contact/${id}`)).statusCode, 200)
      // As the server keeps them on PostgreSQL (db/gin-pending-lists.ts): a GIN index whose new
      // entries still wait in its pending list costs a query the reading of all of them.
      await cleanPendingLists(t.database.db, await ginIndexesWithPendingLists(t.database.db))
      // As after a large import: the planner chooses with statistics of this many rows.
      await sql`analyze contacts`.execute(t.database.db)

      const reads = [
        '/contact/trash?page=1&size=10',
        '/contact?page=5&size=50',
        '/contact?email=person1234@indexes.example',
        '/contact?external_id=ext-777',
        '/contact?q=surname1555',
        '/contact?custom_fields.plan=plan-42',
        '/contact?user_attributes.city=City%201999',
      ]
      const some = await t.api(org.key, 'GET', '/contact?page=2&size=1')
      reads.push(`/contact/${some.json().data.items[0].id}`)
      for (const path of reads) {
        const response = await t.api(org.key, 'GET', path)
        assert.equal(response.statusCode, 200, `${path}: ${response.body}`)
      }

      // A backend reports what its queries read when it exits: close them all, then look.
      await t.app.close()
      await t.database.close()
      appClosed = true
      const observer = openDatabase(t.testDatabase.url)
      try {
        let unread: string[] = []
        for (const deadline = Date.now() + 20_000; Date.now() < deadline; ) {
          const { rows } = await sql<{ index: string; scans: string }>`
            select indexrelname as index, idx_scan::text as scans from pg_stat_user_indexes
            where schemaname = current_schema() and relname = 'contacts'`.execute(observer.db)
          assert.ok(rows.length >= 8, `indexes of contacts: ${rows.map((row) => row.index)}`)
          unread = rows.filter((row) => Number(row.scans) === 0).map((row) => row.index)
          if (unread.length === 0) break
          await new Promise((resolve) => setTimeout(resolve, 250))
        }
        assert.deepEqual(unread, [], 'indexes of contacts that no query read')
      } finally {
        await observer.close()
      }
    } finally {
      if (!appClosed) {
        await t.app.close()
        await t.database.close()
      }
      await t.testDatabase.drop()
    }
  })
})
