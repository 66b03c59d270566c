import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { BACKENDS } from './helpers/backends.js'

const PROGRAM = fileURLToPath(new URL('./helpers/loaded-packages.js', import.meta.url))

/** What helpers/loaded-packages.ts found loaded in a fresh process serving the backend. */
async function loadedPackages(databaseUrl: string) {
  const { stdout } = await promisify(execFile)(process.execPath, [PROGRAM], {
    env: { ...process.env, DATABASE_URL: databaseUrl },
  })
  return JSON.parse(stdout.trim().split('\n').at(-1) as string) as {
    afterRequests: string[]
    afterDocument: string[]
  }
}

// Every package a server holds costs it memory for good (pg alone is 3 MB of heap); these are
// loaded only by the server that uses them.
for (const backend of BACKENDS) {
  describe(`a server on ${backend.name} loads only what it uses`, { skip: backend.skip }, () => {
    test('serving contacts loads neither the other backend’s driver, nor metrics, nor the webhook client; the API document loads its example generator', async () => {
      const database = await backend.createDatabase()
      try {
        const { afterRequests, afterDocument } = await loadedPackages(database.url)
        const ownDriver = backend.name === 'sqlite' ? 'better-sqlite3' : 'pg'
        assert.deepEqual(afterRequests, [ownDriver], 'only its own driver, with metrics off and no webhook')
        assert.deepEqual(afterDocument.sort(), [ownDriver, 'openapi-sampler'].sort())
      } finally {
        await database.drop()
      }
    })
  })
}
