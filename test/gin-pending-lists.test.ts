import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { sql } from 'kysely'
import { loadConfig } from '../src/config.js'
import { openDatabase } from '../src/db/database.js'
import {
  cleanPendingLists,
  ginIndexesWithPendingLists,
  startPendingListCleaner,
} from '../src/db/gin-pending-lists.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

const postgres = BACKENDS.find((backend) => backend.name === 'postgres')

/**
 * On PostgreSQL the GIN indexes' pending lists are moved into their indexes by a background round
 * (db/gin-pending-lists.ts), so that no request's write is the one that finds a list full and
 * empties it while its transaction waits.
 */
describe('GIN pending lists on postgres', { skip: postgres?.skip ?? 'no PostgreSQL backend' }, () => {
  let t: TestApp
  let org: TestOrg
  let written = 0

  before(async () => {
    t = await startTestApp(postgres as NonNullable<typeof postgres>)
    org = await t.createOrg()
  })
  after(() => t?.close())

  /** Contacts with searchable text and JSON fields, through the API: entries for every GIN index. */
  const writeContacts = async (count: number) => {
    const contacts = Array.from({ length: count }, () => {
      written += 1
      return {
        first_name: `Gwendolyn${written}`,
        last_name: `Pendington${written}`,
        email: `pending${written}@lists.example`,
        custom_fields: { tier: `tier-${written % 7}` },
        user_attributes: { city: `City ${written}` },
      }
    })
    const response = await t.api(org.key, 'POST', '/contact/batch/upsert', { contacts })
    assert.equal(response.statusCode, 200, response.body)
  }

  const schemaOfConnection = async () =>
    (await sql<{ schema: string }>`select current_schema() as schema`.execute(t.database.db)).rows[0]?.schema

  test("lists the GIN indexes of the connection's own schema, and no other schema's", async () => {
    const schema = await schemaOfConnection()
    const indexes = await ginIndexesWithPendingLists(t.database.db)
    assert.deepEqual(
      indexes,
      [
        'contacts_org_custom_fields_idx',
        'contacts_org_search_trgm_idx',
        'contacts_org_user_attributes_idx',
      ].map((index) => `${schema}.${index}`),
    )
  })

  test('moves the pending entries of recent writes into their indexes, and search still finds them', async () => {
    const indexes = await ginIndexesWithPendingLists(t.database.db)
    await cleanPendingLists(t.database.db, indexes)
    await writeContacts(300)
    assert.ok((await cleanPendingLists(t.database.db, indexes)) > 0, 'the writes left pending pages')
    assert.equal(await cleanPendingLists(t.database.db, indexes), 0, 'nothing is left pending')

    const found = await t.api(org.key, 'GET', `/contact?q=${encodeURIComponent('pendington150')}`)
    assert.equal(found.statusCode, 200, found.body)
    assert.deepEqual(
      found.json().data.items.map((contact: { email: string }) => contact.email),
      ['pending150@lists.example'],
    )
  })

  test('the background cleaner empties the lists without being asked, and stops after its round', async () => {
    const indexes = await ginIndexesWithPendingLists(t.database.db)
    await cleanPendingLists(t.database.db, indexes)
    const errors: unknown[] = []
    const cleaner = startPendingListCleaner(t.database.db, { intervalMs: 20, onError: (e) => errors.push(e) })
    try {
      await writeContacts(300)
      // A round may have run while the batch was being written (on PostgreSQL a batch's people
      // go out a few hundred at a time): the one after the next began after the last of them.
      const roundsWhenWritten = cleaner.stats().rounds
      const deadline = Date.now() + 10_000
      while (cleaner.stats().rounds < roundsWhenWritten + 2 && Date.now() < deadline) {
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
      assert.ok(cleaner.stats().pagesCleaned > 0, 'the cleaner moved pending pages')
    } finally {
      await cleaner.stop()
    }
    assert.deepEqual(errors, [])
    const rounds = cleaner.stats().rounds
    assert.equal(await cleanPendingLists(t.database.db, indexes), 0, 'the cleaner left nothing pending')
    await new Promise((resolve) => setTimeout(resolve, 100))
    assert.equal(cleaner.stats().rounds, rounds, 'no round after stop')
  })

  test('a failing round is reported, and the next waits twice as long as the one before', async () => {
    // A server that is not there: every round fails at once.
    const unreachable = openDatabase('postgres://postgres@127.0.0.1:1/none')
    const failures: number[] = []
    const cleaner = startPendingListCleaner(unreachable.db, {
      intervalMs: 20,
      onError: () => failures.push(performance.now()),
    })
    try {
      const deadline = Date.now() + 5_000
      while (failures.length < 4 && Date.now() < deadline)
        await new Promise((resolve) => setTimeout(resolve, 10))
    } finally {
      await cleaner.stop()
      await unreachable.close()
    }
    assert.ok(failures.length >= 4, `${failures.length} failures`)
    const gaps = failures.slice(1).map((at, i) => at - (failures[i] as number))
    // 40, 80 and 160 ms after the round (timers fire at or after their time, never before).
    assert.ok(gaps[0] !== undefined && gaps[0] >= 39, `gaps ${gaps.join(', ')}`)
    assert.ok(gaps[1] !== undefined && gaps[1] >= 79, `gaps ${gaps.join(', ')}`)
    assert.ok(gaps[2] !== undefined && gaps[2] >= 159, `gaps ${gaps.join(', ')}`)
    assert.equal(cleaner.stats().rounds, 0)
  })

  test('an index without a pending list (fastupdate off) is left out', async () => {
    const schema = await schemaOfConnection()
    await sql`alter index ${sql.id(schema as string, 'contacts_org_custom_fields_idx')} set (fastupdate = off)`.execute(
      t.database.db,
    )
    try {
      const indexes = await ginIndexesWithPendingLists(t.database.db)
      assert.ok(!indexes.some((name) => name.includes('contacts_org_custom_fields_idx')), indexes.join(', '))
      assert.equal(indexes.length, 2)
    } finally {
      await sql`alter index ${sql.id(schema as string, 'contacts_org_custom_fields_idx')} reset (fastupdate)`.execute(
        t.database.db,
      )
    }
  })
})

describe('GIN_CLEAN_INTERVAL_MS', () => {
  test('defaults to a round a second; 0 leaves the lists to PostgreSQL; a negative value is refused', () => {
    assert.equal(loadConfig({}).ginCleanIntervalMs, 1_000)
    assert.equal(loadConfig({ GIN_CLEAN_INTERVAL_MS: '0' }).ginCleanIntervalMs, 0)
    assert.throws(() => loadConfig({ GIN_CLEAN_INTERVAL_MS: '-5' }), /GIN_CLEAN_INTERVAL_MS/)
  })
})
