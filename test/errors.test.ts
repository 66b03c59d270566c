import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { describe, test } from 'node:test'
import { sql } from 'kysely'
import { ERROR_CATALOGUE } from '../src/errors.js'
import { startTestApp } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'
import { fillTheDisk } from './helpers/full-disk.js'

describe('the error catalogue', () => {
  test('docs/ERRORS.md lists every code with its status', async () => {
    const documented = await readFile(new URL('../../docs/ERRORS.md', import.meta.url), 'utf8')
    for (const [code, { status }] of Object.entries(ERROR_CATALOGUE)) {
      const row = new RegExp(`\\|\\s*\`${code}\`\\s*\\|\\s*${status}\\s*\\|`)
      assert.match(documented, row, `${code} (${status}) is documented`)
    }
  })
})

for (const backend of BACKENDS) {
  describe(`server errors on ${backend.name}`, { skip: backend.skip }, () => {
    test('a failure inside the data layer is a bare 5xx that reveals nothing of the cause', async () => {
      const t = await startTestApp(backend)
      const org = await t.createOrg()
      try {
        // Renaming the table under the running app makes every contact query fail in the driver.
        await t.database.db.schema.alterTable('contacts').renameTo('contacts_elsewhere').execute()
        const response = await t.call(org.key, { method: 'GET', url: '/api/v1/contact' })
        assert.equal(response.statusCode, 500)
        assert.deepEqual(response.json(), { detail: 'Internal Server Error', code: 'internal_error' })
        assert.doesNotMatch(response.body, /contacts|SQL|relation|table|at /i)
      } finally {
        await t.close()
      }
    })

    // A PostgreSQL state: a standby, or a primary demoted by a failover.
    if (backend.name === 'postgres')
      test('a database that only reads (a standby after a failover) answers writes 503 with Retry-After, reads 200', async () => {
        // One connection, so that the session's setting holds for every statement of the app.
        const t = await startTestApp(backend, { config: { databasePoolSize: 1 } })
        const org = await t.createOrg()
        try {
          const kept = (await t.api(org.key, 'POST', '/contact', { first_name: 'Kept' })).json().data
          await sql`set session characteristics as transaction read only`.execute(t.database.db)
          const refused = await t.api(org.key, 'POST', '/contact', { first_name: 'Refused' })
          assert.equal(refused.statusCode, 503)
          assert.equal(refused.headers['retry-after'], '1')
          assert.deepEqual(refused.json(), {
            detail: 'The database is unavailable; retry later',
            code: 'database_unavailable',
          })
          assert.equal((await t.api(org.key, 'GET', `/contact/${kept.id}`)).statusCode, 200)
          await sql`set session characteristics as transaction read write`.execute(t.database.db)
          assert.equal((await t.api(org.key, 'POST', '/contact', { first_name: 'Refused' })).statusCode, 201)
        } finally {
          await t.close()
        }
      })

    test('a full disk is 507 storage_full, writes nothing, and the same request succeeds once there is room', async () => {
      const t = await startTestApp(backend)
      const org = await t.createOrg()
      const rows = async (table: 'contacts' | 'contact_events') =>
        (await t.database.db.selectFrom(table).select('id').where('org_id', '=', org.id).execute()).length
      try {
        const kept = (await t.api(org.key, 'POST', '/contact', { first_name: 'Kept' })).json().data
        const makeRoom = await fillTheDisk(t.database)
        const [contactsBefore, eventsBefore] = [await rows('contacts'), await rows('contact_events')]
        const large = { first_name: 'Large', user_attributes: { notes: 'n'.repeat(64 * 1024) } }
        const refused = await t.api(org.key, 'POST', '/contact', large)
        assert.equal(refused.statusCode, 507)
        assert.deepEqual(refused.json(), {
          detail: 'The database has no room left to store this change; nothing was written',
          code: 'storage_full',
        })
        const update = await t.api(org.key, 'PUT', `/contact/${kept.id}`, large)
        assert.equal(update.statusCode, 507)
        assert.equal(update.json().code, 'storage_full')
        assert.equal(await rows('contacts'), contactsBefore)
        assert.equal(await rows('contact_events'), eventsBefore)
        assert.equal((await t.api(org.key, 'GET', `/contact/${kept.id}`)).json().data.first_name, 'Kept')

        await makeRoom()
        assert.equal((await t.api(org.key, 'POST', '/contact', large)).statusCode, 201)
        const updated = await t.api(org.key, 'PUT', `/contact/${kept.id}`, large)
        assert.equal(updated.statusCode, 200)
        assert.equal(updated.json().data.first_name, 'Large')
      } finally {
        await t.close()
      }
    })
  })
}
