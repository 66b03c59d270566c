import assert from 'node:assert/strict'
import { readFile } from 'node:fs/promises'
import { describe, test } from 'node:test'
import { ERROR_CATALOGUE } from '../src/errors.js'
import { startTestApp } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

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
  })
}
