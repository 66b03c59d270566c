import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { sql } from 'kysely'
import pg from 'pg'
import {
  organizationSizes,
  refreshStaleStatistics,
  tablesWithStaleStatistics,
} from '../src/db/planner-statistics.js'
import { claimJob } from '../src/imports/imports.repository.js'
import { runImportJob } from '../src/imports/imports.service.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

const postgres = BACKENDS.find((backend) => backend.name === 'postgres')

/**
 * On PostgreSQL the server refreshes the planner's statistics of a table that changed a lot since
 * its last ANALYZE (db/planner-statistics.ts), so that plans a connection made while the table was
 * small are made again: above all the check of an identity's foreign key, planned once per
 * connection, which made on a table of a few rows reads every contact of the organization. It
 * also refreshes them when an organization has grown, and an import as it creates contacts: an
 * organization the statistics do not know yet is planned as if it held nothing.
 */
describe('planner statistics on postgres', { skip: postgres?.skip ?? 'no PostgreSQL backend' }, () => {
  /** Each test on a database of its own, which starts with no contacts. */
  const withApp = async (
    run: (t: TestApp, org: TestOrg, write: (count: number) => Promise<void>) => Promise<void>,
  ) => {
    const t = await startTestApp(postgres as NonNullable<typeof postgres>)
    try {
      const org = await t.createOrg()
      let written = 0
      const write = async (count: number) => {
        for (let done = 0; done < count; done += 1000) {
          const contacts = Array.from({ length: Math.min(1000, count - done) }, () => {
            written += 1
            return { email: `stats${written}@planner.example`, first_name: `Stat ${written}` }
          })
          const response = await t.api(org.key, 'POST', '/contact/batch/upsert', { contacts })
          assert.equal(response.statusCode, 200, response.body)
        }
      }
      await run(t, org, write)
    } finally {
      await t.close()
    }
  }

  /** PostgreSQL reports the rows a transaction changed a moment after it ends. */
  const eventually = async (check: () => Promise<boolean>, what: string) => {
    const deadline = Date.now() + 15_000
    while (!(await check())) {
      if (Date.now() > deadline) assert.fail(`never: ${what}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }
  const staleTables = async (t: TestApp) =>
    (await tablesWithStaleStatistics(t.database.db)).map((name) => name.split('.')[1])

  test('a foreign-key check planned on a small table is planned again once the table has grown', () =>
    withApp(async (t, org, writeContacts) => {
      await writeContacts(100)
      // A connection of its own, as the server's are: it keeps its plans between statements.
      const connection = new pg.Client({ connectionString: t.testDatabase.url })
      await connection.connect()
      try {
        // The query PostgreSQL runs to check an identity's contact, planned once for the connection.
        await connection.query('set plan_cache_mode = force_generic_plan')
        await connection.query(
          'prepare contact_exists (uuid, uuid) as select 1 from only contacts x where org_id = $1 and id = $2 for key share of x',
        )
        const indexUsed = async () => {
          // EXPLAIN EXECUTE takes no bound values: the id, a UUID of this test's own, is written in.
          assert.match(org.id, /^[0-9a-f-]{36}$/)
          const { rows } = await connection.query<{ 'QUERY PLAN': string }>(
            `explain execute contact_exists ('${org.id}', gen_random_uuid())`,
          )
          const plan = rows.map((row) => row['QUERY PLAN']).join('\n')
          return /Index Scan using (\w+)/.exec(plan)?.[1] ?? (plan.includes('Seq Scan') ? 'seq scan' : plan)
        }
        const onSmallTable = await indexUsed()
        assert.notEqual(onSmallTable, 'contacts_pk', 'on a table of 100 rows the planner reads them all')

        await writeContacts(2000)
        assert.equal(await indexUsed(), onSmallTable, 'the plan is kept while the table grows')
        await eventually(async () => (await staleTables(t)).includes('contacts'), 'contacts listed as stale')

        const analyzed = (await refreshStaleStatistics(t.database.db)).map((name) => name.split('.')[1])
        for (const table of ['contacts', 'contact_identities', 'contact_events'])
          assert.ok(analyzed.includes(table), `${table} analyzed: ${analyzed.join(', ')}`)
        assert.equal(await indexUsed(), 'contacts_pk', 'planned again after the ANALYZE, by its key')
      } finally {
        await connection.end()
      }
      await eventually(
        async () => !(await staleTables(t)).includes('contacts'),
        'contacts fresh after its ANALYZE',
      )
    }))

  test('a table that changed little since its last ANALYZE is left alone', () =>
    withApp(async (t, _org, writeContacts) => {
      /** The changes to contacts PostgreSQL has counted since its last ANALYZE. */
      const changedContacts = async () =>
        Number(
          (
            await sql<{ n: string }>`select n_mod_since_analyze as n from pg_stat_user_tables
              where schemaname = current_schema() and relname = 'contacts'`.execute(t.database.db)
          ).rows[0]?.n ?? 0,
        )
      await writeContacts(2000)
      await eventually(async () => (await changedContacts()) >= 2000, 'the 2,000 inserts counted')
      assert.ok((await refreshStaleStatistics(t.database.db)).some((name) => name.endsWith('.contacts')))
      await writeContacts(500)
      await eventually(async () => (await changedContacts()) >= 500, 'the 500 inserts counted')
      // 500 changes on a table of 2,000 rows at its last ANALYZE: under 1000 + half of them.
      assert.ok(!(await staleTables(t)).includes('contacts'))
    }))

  test('an import refreshes the statistics each time the contacts it created double', () =>
    withApp(async (t, org) => {
      // Until an ANALYZE counts them, its lookups are planned as if the organization held what it
      // held at the last one: nothing, for an organization new to tables that others fill.
      const analyzeCount = async () =>
        Number(
          (
            await sql<{ n: string }>`select analyze_count as n from pg_stat_user_tables
              where schemaname = current_schema() and relname = 'contact_identities'`.execute(t.database.db)
          ).rows[0]?.n ?? 0,
        )
      const before = await analyzeCount()
      const lines = ['email,first_name']
      for (let i = 0; i < 12_000; i++) lines.push(`grow${i}@planner.example,G${i}`)
      const upload = await t.call(org.key, {
        method: 'POST',
        url: '/api/v1/contact/import?file_name=grow.csv',
        headers: { 'content-type': 'text/csv' },
        payload: lines.join('\n'),
      })
      assert.equal(upload.statusCode, 202, upload.body)
      const inAMinute = new Date(Date.now() + 60_000).toISOString()
      const job = await claimJob(t.database.db, new Date().toISOString(), inAMinute, 'runner')
      assert.ok(job)
      const done = await runImportJob(t.database.db, job, 'runner')
      assert.deepEqual([done.status, done.created], ['completed', 12_000])
      // With 5,000 contacts created, with 10,000, and once more as the import ends.
      await eventually(async () => (await analyzeCount()) >= before + 3, 'three ANALYZEs counted')
      assert.equal(await analyzeCount(), before + 3)
    }))

  test('an organization new to the tables, once it holds 1,000 contacts, has them analyzed for its lookups', () =>
    withApp(async (t, org, writeContacts) => {
      const sizes = organizationSizes()
      await writeContacts(3000)
      await eventually(
        async () => (await staleTables(t)).includes('contacts'),
        'the first organization counted',
      )
      await refreshStaleStatistics(t.database.db, sizes)
      assert.ok(sizes.atLastRefresh?.get(org.id), 'the sizes taken at the refresh')

      const newcomer = await t.createOrg()
      for (const from of [0, 750]) {
        const contacts = Array.from({ length: 750 }, (_, n) => ({ email: `new${from + n}@newcomer.example` }))
        const batch = await t.api(newcomer.key, 'POST', '/contact/batch/upsert', { contacts })
        assert.equal(batch.statusCode, 200, batch.body)
      }
      /** The index PostgreSQL reads one of the newcomer's identities by. */
      const identityIndex = async () => {
        assert.match(newcomer.id, /^[0-9a-f-]{36}$/)
        const { rows } = await sql<{ 'QUERY PLAN': string }>`${sql.raw(
          `explain select contact_id from contact_identities where org_id = '${newcomer.id}' and kind = 'email' and value = 'new7@newcomer.example'`,
        )}`.execute(t.database.db)
        return /using (\w+)/.exec(rows.map((row) => row['QUERY PLAN']).join('\n'))?.[1]
      }
      // 1,500 changed rows is under the table-wide rule's 1,000 plus half of 3,000.
      const stale = await staleTables(t)
      for (const table of ['contacts', 'contact_identities']) assert.ok(!stale.includes(table), table)
      assert.notEqual(await identityIndex(), 'contact_identities_pk', 'planned as if it held nothing')

      const analyzed = (await refreshStaleStatistics(t.database.db, sizes)).map((name) => name.split('.')[1])
      for (const table of ['contacts', 'contact_identities', 'contact_events'])
        assert.ok(analyzed.includes(table), `${table} analyzed: ${analyzed.join(', ')}`)
      assert.equal(await identityIndex(), 'contact_identities_pk')
      assert.equal(sizes.atLastRefresh?.get(newcomer.id), 1500)
      const again = await refreshStaleStatistics(t.database.db, sizes)
      assert.ok(!again.some((name) => name.endsWith('.contacts')), 'not again until it doubles')
    }))
})
