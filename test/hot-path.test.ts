import assert from 'node:assert/strict'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { Socket } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import BetterSqlite3 from 'better-sqlite3'
import { type Kysely, sql } from 'kysely'
import { revokeApiKey } from '../src/api-keys/api-keys.service.js'
import {
  insertContact,
  keptUpdateShapes,
  SQLITE_INDEXED_COLUMNS,
  UPDATE_SHAPES,
  updateContact as updateContactRow,
} from '../src/contacts/contacts.repository.js'
import { createContact, newContactRow, updateContact } from '../src/contacts/contacts.service.js'
import { openDatabase, STATEMENT_CACHE_CAPACITY } from '../src/db/database.js'
import { READ_TRANSACTION_MAX_MS } from '../src/db/group-commit.js'
import {
  type LateAnswer,
  NAMED_STATEMENTS_CAP,
  namedStatementCount,
  nameForReuse,
} from '../src/db/named-statements.js'
import { preparedQuery } from '../src/db/prepared.js'
import { startWalCheckpointer } from '../src/db/wal-checkpointer.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

/** What the speed-ups of the hot path must never trade away (not timed: behaviour only). */
for (const backend of BACKENDS) {
  describe(`the hot path keeps its promises on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg

    before(async () => {
      t = await startTestApp(backend)
      org = await t.createOrg()
    })
    after(() => t?.close())

    test('a revoked key is refused on the very next request, even right after it was used', async () => {
      const victim = await t.createOrg()
      for (let i = 0; i < 5; i++) {
        assert.equal((await t.call(victim.key, { method: 'GET', url: '/api/v1/contact' })).statusCode, 200)
      }
      await revokeApiKey(t.database.db, victim.keyId)
      assert.equal((await t.call(victim.key, { method: 'GET', url: '/api/v1/contact' })).statusCode, 401)
    })

    test('a key revoked through another connection is refused on the very next request', async () => {
      const victim = await t.createOrg()
      for (let i = 0; i < 5; i++) {
        assert.equal((await t.call(victim.key, { method: 'GET', url: '/api/v1/contact' })).statusCode, 200)
      }
      // As the CLI or another server process would: a connection of its own.
      const elsewhere = openDatabase(t.testDatabase.url)
      try {
        await revokeApiKey(elsewhere.db, victim.keyId)
      } finally {
        await elsewhere.close()
      }
      assert.equal((await t.call(victim.key, { method: 'GET', url: '/api/v1/contact' })).statusCode, 401)
      // Other keys keep working.
      assert.equal((await t.call(org.key, { method: 'GET', url: '/api/v1/contact' })).statusCode, 200)
    })

    test('the prepared statement cache stays bounded however many distinct statements run', async () => {
      const ids = Array.from(
        { length: 400 },
        (_, i) => `0190a5e4-0000-7000-8000-${String(i).padStart(12, '0')}`,
      )
      for (let count = 1; count <= ids.length; count++) {
        // A different number of ids is a different statement text each time.
        await t.call(org.key, {
          method: 'DELETE',
          url: '/api/v1/contact/multiple',
          payload: { contact_ids: ids.slice(0, count) },
        })
      }
      assert.ok(t.database.statementCacheSize() <= STATEMENT_CACHE_CAPACITY)
      if (backend.name === 'sqlite') assert.equal(t.database.statementCacheSize(), STATEMENT_CACHE_CAPACITY)
    })

    test('an UPDATE compiled for one set of fields writes exactly those, and few such UPDATEs are kept', async () => {
      const fields = [
        'first_name',
        'last_name',
        'user_attributes',
        'custom_fields',
        'last_seen',
        'last_sent',
        'channels',
      ]
      const valueFor = (field: string, round: number) =>
        field === 'last_seen' || field === 'last_sent'
          ? new Date(Date.UTC(2024, 0, 1, 0, round)).toISOString().replace('.000Z', 'Z')
          : field === 'user_attributes' || field === 'custom_fields' || field === 'channels'
            ? { round: `r${round}` }
            : `${field} ${round}`
      const created = await t.call(org.key, {
        method: 'POST',
        url: '/api/v1/contact',
        payload: Object.fromEntries(fields.map((field) => [field, valueFor(field, 0)])),
      })
      assert.equal(created.statusCode, 201, created.body)
      const id = created.json().data.id as string
      const expected: Record<string, unknown> = created.json().data
      // Every non-empty subset of seven fields: 127 shapes, more than are kept.
      for (let subset = 1; subset < 2 ** fields.length; subset++) {
        const body = Object.fromEntries(
          fields.filter((_, bit) => subset & (1 << bit)).map((field) => [field, valueFor(field, subset)]),
        )
        const answer = await t.call(org.key, { method: 'PUT', url: `/api/v1/contact/${id}`, payload: body })
        assert.equal(answer.statusCode, 200, answer.body)
        Object.assign(expected, body)
        const stored = (await t.call(org.key, { method: 'GET', url: `/api/v1/contact/${id}` })).json().data
        for (const field of fields)
          assert.deepEqual(stored[field], expected[field], `${field} after subset ${subset}`)
      }
      assert.ok(keptUpdateShapes() <= UPDATE_SHAPES)
    })

    test('a query compiled once answers as the query builder does, for each call and in a transaction', async () => {
      let builds = 0
      const byEmail = preparedQuery(2, (db, orgId: string, email: string) => {
        builds += 1
        return db
          .selectFrom('contacts')
          .select(['id', 'email'])
          .where('org_id', '=', orgId)
          .where('email_normalized', '=', email)
          .where('deleted_at', 'is', null)
      })
      const people: { id: string; email: string }[] = []
      for (const name of ['ada', 'grace', 'edsger']) {
        const created = await t.call(org.key, {
          method: 'POST',
          url: '/api/v1/contact',
          payload: { email: `${name}@prepared.example` },
        })
        people.push(created.json().data)
      }
      for (const person of people) {
        const { rows } = await byEmail(t.database.db, org.id, person.email)
        assert.deepEqual(rows, [{ id: person.id, email: person.email }])
      }
      const [ada, grace] = people as [{ id: string; email: string }, { id: string; email: string }]
      const other = await t.createOrg()
      assert.deepEqual((await byEmail(t.database.db, other.id, ada.email)).rows, [])
      await t.database.db.transaction().execute(async (trx) => {
        assert.equal((await byEmail(trx, org.id, grace.email)).rows[0]?.id, grace.id)
      })
      assert.equal(builds, 1, 'built and compiled once for the backend')

      const misused = preparedQuery(1, (db, column: string) =>
        db.selectFrom('contacts').select(sql.ref(column).as('x')),
      )
      await assert.rejects(
        misused(t.database.db, 'email'),
        /argument 0 of a prepared query is not one of its parameters/,
      )
    })

    if (backend.name === 'postgres') {
      test('DATABASE_PREPARED_STATEMENTS=false keeps no named statement on the connection', async () => {
        const kept: Record<string, number> = {}
        for (const prepared of [true, false]) {
          const own = await startTestApp(backend, {
            config: { databasePoolSize: 1, databasePreparedStatements: prepared },
          })
          try {
            const owner = await own.createOrg()
            const created = await own.call(owner.key, { method: 'POST', url: '/api/v1/contact', payload: {} })
            const id = created.json().data.id as string
            const put = await own.call(owner.key, {
              method: 'PUT',
              url: `/api/v1/contact/${id}`,
              payload: { first_name: 'Pooled' },
            })
            assert.equal(put.statusCode, 200, put.body)
            assert.equal(
              (await own.call(owner.key, { method: 'GET', url: `/api/v1/contact/${id}` })).statusCode,
              200,
            )
            // One connection: the one every request above ran on.
            const { rows } = await sql<{
              kept: string
            }>`select count(*) as kept from pg_prepared_statements`.execute(own.database.db)
            kept[String(prepared)] = Number(rows[0]?.kept)
          } finally {
            await own.close()
          }
        }
        assert.ok((kept.true ?? 0) > 0, 'with prepared statements, the hot path keeps some')
        assert.equal(kept.false, 0)
      })

      test('a column added while the server runs costs no request: plans made before are not used', async () => {
        const own = await startTestApp(backend)
        try {
          const owner = await own.createOrg()
          const ids: string[] = []
          for (let i = 0; i < 12; i++) {
            const created = await own.call(owner.key, {
              method: 'POST',
              url: '/api/v1/contact',
              payload: { first_name: `Before ${i}` },
            })
            ids.push(created.json().data.id)
          }
          // Every connection of the pool gets the hot path's statements named and planned.
          const everyone = (round: string) =>
            Promise.all(
              ids.flatMap((id) => [
                own.call(owner.key, { method: 'GET', url: `/api/v1/contact/${id}` }),
                own.call(owner.key, {
                  method: 'PUT',
                  url: `/api/v1/contact/${id}`,
                  payload: { last_name: round },
                }),
              ]),
            )
          for (const answer of await everyone('planned')) assert.equal(answer.statusCode, 200, answer.body)
          // As a newer version's migration, run by another process, would.
          const elsewhere = openDatabase(own.testDatabase.url)
          try {
            await sql`alter table contacts add column added_later text`.execute(elsewhere.db)
          } finally {
            await elsewhere.close()
          }
          for (const round of ['after', 'again'])
            for (const answer of await everyone(round)) assert.equal(answer.statusCode, 200, answer.body)
          const read = await own.call(owner.key, { method: 'GET', url: `/api/v1/contact/${ids[0]}` })
          assert.equal(read.json().data.last_name, 'again')
        } finally {
          await own.close()
        }
      })

      test('a transaction whose BEGIN waits for its first statement still begins, commits and rolls back', async () => {
        const db = t.database.db
        const status = () => sql<{ n: string }>`select count(*) as n from contacts where org_id = ${org.id}`
        const count = async () => Number((await status().execute(db)).rows[0]?.n)
        const start = await count()
        await db.transaction().execute(async () => {})
        await assert.rejects(
          db.transaction().execute(async (trx) => {
            await insertContact(trx, newContactRow(org.id, { first_name: 'rolled back' }))
            throw new Error('changed my mind')
          }),
          /changed my mind/,
        )
        assert.equal(await count(), start)
        await db.transaction().execute(async (trx) => {
          await insertContact(trx, newContactRow(org.id, { first_name: 'kept' }))
          const { rows } = await sql<{
            inside: boolean
          }>`select pg_current_xact_id_if_assigned() is not null as inside`.execute(trx)
          assert.equal(rows[0]?.inside, true, 'the statements ran inside one transaction')
        })
        assert.equal(await count(), start + 1)
      })

      test('a statement sent with the next one answers at once; it fails its transaction only at that statement', async () => {
        const db = t.database.db
        await sql`create table sent_later (id integer primary key)`.execute(db)
        const answers: LateAnswer[] = []
        const insertLater = preparedQuery(
          1,
          (db, id: number) =>
            (db as unknown as Kysely<{ sent_later: { id: number } }>).insertInto('sent_later').values({ id }),
          { answeredLater: (answer) => answers.push(answer) },
        )
        const stored = async (id: number) =>
          Number(
            (await sql<{ n: string }>`select count(*) as n from sent_later where id = ${id}`.execute(db))
              .rows[0]?.n,
          )
        const contactsNamed = async (name: string) =>
          Number(
            (
              await sql<{
                n: string
              }>`select count(*) as n from contacts where org_id = ${org.id} and first_name = ${name}`.execute(
                db,
              )
            ).rows[0]?.n,
          )

        // Outside a transaction it runs at once, and its own call fails.
        await insertLater(db, 1)
        assert.equal(await stored(1), 1)
        await assert.rejects(insertLater(db, 1), { code: '23505' })
        assert.deepEqual(
          answers.map((answer) => answer.ok),
          [true, false],
        )

        // Inside one, it goes out with the next statement: a read of the same transaction sees it,
        // and the commit stores it.
        await db.transaction().execute(async (trx) => {
          await insertLater(trx, 2)
          const { rows } = await sql<{
            n: string
          }>`select count(*) as n from sent_later where id = 2`.execute(trx)
          assert.equal(Number(rows[0]?.n), 1)
        })
        assert.equal(await stored(2), 1)
        await db.transaction().execute(async (trx) => {
          await insertContact(trx, newContactRow(org.id, { first_name: 'sent with the commit' }))
          await insertLater(trx, 3)
        })
        assert.equal(await stored(3), 1)
        assert.equal(await contactsNamed('sent with the commit'), 1)
        assert.deepEqual(answers.slice(2), [
          { ok: true, rowCount: 1 },
          { ok: true, rowCount: 1 },
        ])

        // Its failure reaches the caller at the COMMIT it went out with, and nothing is stored.
        let answeredAtOnce = false
        await assert.rejects(
          db.transaction().execute(async (trx) => {
            await insertContact(trx, newContactRow(org.id, { first_name: 'never stored' }))
            await insertLater(trx, 1)
            answeredAtOnce = true
          }),
          { code: '23505' },
        )
        assert.ok(answeredAtOnce, 'the held statement did not wait for its answer')
        assert.equal(await contactsNamed('never stored'), 0)
        assert.equal(answers.at(-1)?.ok, false)

        // A rollback drops what was held, and the connection goes on serving.
        await assert.rejects(
          db.transaction().execute(async (trx) => {
            await insertContact(trx, newContactRow(org.id, { first_name: 'rolled back' }))
            await insertLater(trx, 4)
            throw new Error('changed my mind')
          }),
          /changed my mind/,
        )
        assert.equal(await stored(4), 0)
        await db.transaction().execute(async (trx) => {
          await insertLater(trx, 5)
        })
        assert.equal(await stored(5), 1)
      })

      test('statements that go out together leave in one write to PostgreSQL', async () => {
        const db = t.database.db
        await sql`create table sent_in_one_write (id integer primary key)`.execute(db)
        const insertLater = preparedQuery(
          1,
          (db, id: number) =>
            (db as unknown as Kysely<{ sent_in_one_write: { id: number } }>)
              .insertInto('sent_in_one_write')
              .values({ id }),
          { answeredLater: () => {} },
        )
        // Every write of every socket while the transaction runs; ours is the one that carries
        // the marker (in the INSERT's bound values).
        const marker = `one write ${randomUUID()}`
        const writes = new Map<Socket, Buffer[][]>()
        const record = (socket: Socket, chunks: Buffer[]) =>
          writes.set(socket, [...(writes.get(socket) ?? []), chunks])
        type WriteOne = (this: Socket, chunk: Buffer, encoding: string, done: () => void) => void
        type WriteMany = (this: Socket, chunks: { chunk: Buffer }[], done: () => void) => void
        const socket = Socket.prototype as unknown as { _write: WriteOne; _writev: WriteMany }
        const { _write: writeOne, _writev: writeMany } = socket
        socket._write = function (chunk, encoding, done) {
          record(this, [chunk])
          writeOne.call(this, chunk, encoding, done)
        }
        socket._writev = function (chunks, done) {
          record(
            this,
            chunks.map(({ chunk }) => chunk),
          )
          writeMany.call(this, chunks, done)
        }
        try {
          await db.transaction().execute(async (trx) => {
            await insertContact(trx, newContactRow(org.id, { first_name: marker }))
            await insertLater(trx, 1)
          })
        } finally {
          socket._write = writeOne
          socket._writev = writeMany
        }
        const ours = [...writes.values()].filter((list) =>
          list.some((chunks) => chunks.some((chunk) => chunk.includes(marker))),
        )
        assert.equal(ours.length, 1, 'one connection carried the transaction')
        // BEGIN with the INSERT, the held statement with the COMMIT: two writes, not four.
        assert.equal(ours[0]?.length, 2)
        const stored = await sql<{ n: string }>`select count(*) as n from sent_in_one_write`.execute(db)
        assert.equal(Number(stored.rows[0]?.n), 1)
      })

      // Last of this backend's tests: the names it hands out stay taken for the rest of the process.
      test('PostgreSQL names at most NAMED_STATEMENTS_CAP statements; a statement past them runs unnamed', async () => {
        const before = namedStatementCount()
        for (let i = 0; i < NAMED_STATEMENTS_CAP + 50; i++) nameForReuse(`select ${i} as never_run_${before}`)
        assert.equal(namedStatementCount(), NAMED_STATEMENTS_CAP)
        const pastTheCap = preparedQuery(1, (db, orgId: string) =>
          db
            .selectFrom('contacts')
            .select((eb) => eb.fn.countAll<string>().as('past_the_cap'))
            .where('org_id', '=', orgId),
        )
        await t.database.db.connection().execute(async (connection) => {
          const { rows } = await pastTheCap(connection, org.id)
          assert.ok(Number(rows[0]?.past_the_cap) > 0)
          const kept = await sql<{ statement: string }>`select statement from pg_prepared_statements`.execute(
            connection,
          )
          assert.ok(!kept.rows.some((row) => row.statement.includes('past_the_cap')))
        })
        assert.equal(namedStatementCount(), NAMED_STATEMENTS_CAP)
      })

      test("a DATABASE_URL naming PostgreSQL's Unix socket folder connects through the socket", async (context) => {
        const { rows } = await sql<{
          folders: string
        }>`select current_setting('unix_socket_directories') as folders`.execute(t.database.db)
        const folder = rows[0]?.folders.split(',')[0]?.trim()
        if (!folder) return context.skip('this PostgreSQL listens on no Unix socket')
        const url = new URL(t.testDatabase.url)
        url.hostname = ''
        url.port = ''
        url.searchParams.set('host', folder)
        const local = openDatabase(url.toString())
        try {
          // A client on a Unix socket has no network address.
          const peer = await sql<{
            address: string | null
          }>`select inet_client_addr()::text as address`.execute(local.db)
          assert.equal(peer.rows[0]?.address, null)
          const principal = {
            orgId: org.id,
            actorType: 'api_key' as const,
            actorId: org.keyId,
            role: 'full_access' as const,
          }
          const created = await createContact(local.db, principal, { first_name: 'Through the socket' })
          const seen = await t.api(org.key, 'GET', `/contact/${created.id}`)
          assert.equal(seen.json().data.first_name, 'Through the socket')
        } finally {
          await local.close()
        }
      })
    }

    if (backend.name === 'sqlite') {
      test('a LIMIT is written into the SQL, so SQLite plans the statement once, not at every run', async () => {
        const page = (limit: number, offset: number) =>
          t.database.db
            .selectFrom('contacts')
            .select('id')
            .where('org_id', '=', org.id)
            .orderBy('id')
            .limit(limit)
            .offset(offset)
        const compiled = page(50, 100).compile()
        assert.match(compiled.sql, /limit 50 offset \?$/)
        assert.deepEqual(compiled.parameters, [org.id, 100])

        for (let i = 0; i < 7; i++)
          await t.call(org.key, { method: 'POST', url: '/api/v1/contact', payload: { first_name: `L${i}` } })
        // Each limit is its own statement text, so a cached statement never answers another's.
        const all = await page(7, 0).execute()
        assert.equal(all.length, 7)
        assert.deepEqual(await page(3, 0).execute(), all.slice(0, 3))
        assert.deepEqual(await page(3, 2).execute(), all.slice(2, 5))
        assert.deepEqual(await page(5, 0).execute(), all.slice(0, 5))
        // A stand-in of a query compiled once is not a number, so it stays a parameter.
        const limited = preparedQuery(2, (db, orgId: string, limit: number) =>
          db.selectFrom('contacts').select('id').where('org_id', '=', orgId).orderBy('id').limit(limit),
        )
        assert.deepEqual((await limited(t.database.db, org.id, 2)).rows, all.slice(0, 2))
        assert.deepEqual((await limited(t.database.db, org.id, 4)).rows, all.slice(0, 4))
      })

      const contactNamed = async (firstName: string) =>
        (
          await t.call(org.key, {
            method: 'POST',
            url: '/api/v1/contact',
            payload: { first_name: firstName },
          })
        ).json().data.id as string
      const storedFirstName = async (id: string) =>
        (
          await t.database.db
            .selectFrom('contacts')
            .select('first_name')
            .where('id', '=', id)
            .executeTakeFirstOrThrow()
        ).first_name
      /** A connection of its own to the test database, as another process would have. */
      const anotherConnection = (options?: BetterSqlite3.Options) =>
        new BetterSqlite3(t.testDatabase.url.replace(/^sqlite:/, ''), options)

      test("a GET checks its key's cache and reads its contact in one read transaction", async () => {
        const url = `/api/v1/contact/${await contactNamed('Once')}`
        // The first call finds the key in the database and caches it.
        assert.equal((await t.call(org.key, { method: 'GET', url })).statusCode, 200)
        const stats = () =>
          t.database.transactionStats() ?? {
            readTransactions: Number.NaN,
            readsInReadTransactions: Number.NaN,
          }
        const before = stats()
        const seen = await t.call(org.key, { method: 'GET', url })
        assert.equal(seen.statusCode, 200)
        assert.equal(seen.json().data.first_name, 'Once')
        // data_version and the contact's row: two reads, one snapshot.
        const after = stats()
        assert.equal(after.readsInReadTransactions - before.readsInReadTransactions, 2)
        assert.equal(after.readTransactions - before.readTransactions, 1)
      })

      test('reads share a snapshot only within the turn that took it; a later read sees what another process wrote', async () => {
        const id = await contactNamed('Before')
        const nameNow = () => storedFirstName(id)
        const elsewhere = anotherConnection()
        try {
          assert.equal(await nameNow(), 'Before')
          elsewhere.prepare('update contacts set first_name = ? where id = ?').run('After', id)
          // Same turn (no tick has passed since the first read): the snapshot holds.
          assert.equal(await nameNow(), 'Before')
          await new Promise((resolve) => setImmediate(resolve))
          assert.equal(await nameNow(), 'After')
          assert.equal(
            (await t.call(org.key, { method: 'GET', url: `/api/v1/contact/${id}` })).json().data.first_name,
            'After',
          )
        } finally {
          elsewhere.close()
        }
      })

      test('a chain of reads that never lets the event loop turn takes a new snapshot now and then', async () => {
        const id = await contactNamed('Early')
        const elsewhere = anotherConnection()
        try {
          const readName = () => storedFirstName(id)
          assert.equal(await readName(), 'Early')
          elsewhere.prepare('update contacts set first_name = ? where id = ?').run('Late', id)
          // Awaited reads of SQLite resolve at once: no tick passes between them.
          const until = performance.now() + READ_TRANSACTION_MAX_MS * 1.5
          let name = await readName()
          while (performance.now() < until) name = await readName()
          assert.equal(name, 'Late')
        } finally {
          elsewhere.close()
        }
      })

      test('a write in a turn that has read is stored when it returns, not when the read transaction ends', async () => {
        const id = await contactNamed('Stored')
        const elsewhere = anotherConnection({ readonly: true })
        try {
          const db = t.database.db
          await db.selectFrom('contacts').select('id').where('id', '=', id).execute()
          await db.updateTable('contacts').set({ first_name: 'Written' }).where('id', '=', id).execute()
          // Still the same turn: had the write joined the read transaction, it would be committed
          // only at its end, and another connection would not see it yet.
          const seenElsewhere = elsewhere
            .prepare('select first_name from contacts where id = ?')
            .pluck()
            .get(id)
          assert.equal(seenElsewhere, 'Written')
        } finally {
          elsewhere.close()
        }
      })

      test('a write leaves out the indexed columns it does not change: SQLite would rewrite their index entries', async () => {
        // A temporary trigger of the server's own connection fires for every UPDATE that sets the
        // column, whether or not its value changes: as SQLite's index upkeep does.
        const db = t.database.db
        // The columns left out when unchanged are every indexed one an update may set.
        const indexed = await sql<{
          name: string
        }>`select distinct i.name from pragma_index_list('contacts') as l,
          pragma_index_info(l.name) as i`.execute(db)
        const neverUpdated = new Set(['org_id', 'id', 'created_at', 'deleted_at'])
        assert.deepEqual(
          indexed.rows
            .map((row) => row.name)
            .filter((name) => !neverUpdated.has(name))
            .sort(),
          [...SQLITE_INDEXED_COLUMNS].sort(),
        )
        await sql`create temp table indexed_writes (id text, email text, external_id text)`.execute(db)
        await sql`create temp trigger indexed_email_write after update of email_normalized on main.contacts
          begin insert into indexed_writes values (new.id, new.email_normalized, null); end`.execute(db)
        await sql`create temp trigger indexed_external_id_write after update of external_id on main.contacts
          begin insert into indexed_writes values (new.id, null, new.external_id); end`.execute(db)
        const writes = async () =>
          (
            await sql<{
              email: string | null
              external_id: string | null
            }>`select email, external_id from indexed_writes`.execute(db)
          ).rows
        try {
          const created = await t.api(org.key, 'POST', '/contact', {
            first_name: 'Idx',
            email: 'idx.same@example.com',
            external_id: 'idx-1',
          })
          assert.equal(created.statusCode, 201, created.body)
          const id = created.json().data.id as string

          // The email written another way and the same external id: other fields change, these stay.
          const put = await t.api(org.key, 'PUT', `/contact/${id}`, {
            first_name: 'Idx two',
            email: 'IDX.Same@example.com',
            external_id: 'idx-1',
          })
          assert.equal(put.statusCode, 200, put.body)
          assert.equal(put.json().data.email, 'IDX.Same@example.com')
          const patch = await t.api(org.key, 'PATCH', `/contact/${id}`, {
            email: 'idx.same@example.com',
            last_name: 'P',
          })
          assert.equal(patch.statusCode, 200, patch.body)
          const upsert = await t.api(org.key, 'POST', '/contact/upsert', {
            email: 'idx.same@example.com',
            external_id: 'idx-1',
            first_name: 'Idx three',
          })
          assert.equal(upsert.statusCode, 200, upsert.body)
          assert.equal(upsert.json().data.id, id)
          assert.deepEqual(await writes(), [])

          // A changed value is written, and found by its index.
          const moved = await t.api(org.key, 'PUT', `/contact/${id}`, {
            email: 'idx.new@example.com',
            external_id: 'idx-2',
          })
          assert.equal(moved.statusCode, 200, moved.body)
          assert.deepEqual(await writes(), [
            { email: 'idx.new@example.com', external_id: null },
            { email: null, external_id: 'idx-2' },
          ])
          for (const query of ['email=IDX.NEW@example.com', 'external_id=idx-2']) {
            const found = await t.call(org.key, { method: 'GET', url: `/api/v1/contact?${query}` })
            assert.deepEqual(
              found.json().data.items.map((contact: { id: string }) => contact.id),
              [id],
              query,
            )
          }
          const stored = (await t.api(org.key, 'GET', `/contact/${id}`)).json().data
          assert.equal(stored.first_name, 'Idx three')
          assert.equal(stored.last_name, 'P')
        } finally {
          await sql`drop trigger temp.indexed_email_write`.execute(db)
          await sql`drop trigger temp.indexed_external_id_write`.execute(db)
          await sql`drop table temp.indexed_writes`.execute(db)
        }
      })

      test("the server's commits never checkpoint: a worker thread copies the WAL into the database file", async () => {
        const file = t.testDatabase.url.slice('sqlite:'.length)
        const automatic = async (handle: typeof t.database) =>
          Number(
            Object.values((await sql`pragma wal_autocheckpoint`.execute(handle.db)).rows[0] as object)[0],
          )
        // A short-lived command keeps SQLite's own checkpoints.
        const command = openDatabase(t.testDatabase.url)
        try {
          assert.equal(await automatic(command), 1000)
        } finally {
          await command.close()
        }
        assert.equal(await automatic(t.database), 0, 'the server connection never checkpoints on commit')
        const principal = {
          actorType: 'api_key' as const,
          actorId: org.keyId,
          orgId: org.id,
          role: 'full_access' as const,
        }
        // In WAL mode only a checkpoint writes to the database file itself. These writes stay
        // well under the size at which the writer would finish a checkpoint itself.
        const sizeBefore = statSync(file).size
        for (let i = 0; i < 200; i++)
          await createContact(t.database.db, principal, {
            first_name: `Background ${i}`,
            last_name: 'x'.repeat(500),
          })
        let grown = false
        for (let waited = 0; waited < 10_000 && !grown; waited += 50) {
          grown = statSync(file).size > sizeBefore
          if (!grown) await new Promise((resolve) => setTimeout(resolve, 50))
        }
        assert.ok(grown, 'the committed pages reached the database file without the writer checkpointing')
      })

      test('a checkpointing worker that falls behind cannot let the WAL pass its limit', async () => {
        const folder = mkdtempSync(join(tmpdir(), 'contacts-wal-'))
        const path = join(folder, 'behind.db')
        const database = new BetterSqlite3(path)
        database.pragma('journal_mode = WAL')
        database.pragma('synchronous = NORMAL')
        // As the server's connection: a checkpoint waits for the worker's round instead of failing.
        database.pragma('busy_timeout = 5000')
        database.exec('create table pages (id integer primary key, body blob)')
        const limitBytes = 2 * 1024 * 1024
        // A worker that reports once, at its start, and then sleeps for an hour: as one stuck in a
        // sync that never ends.
        const checkpointer = startWalCheckpointer(database, path, {
          finishAtFrames: Number.MAX_SAFE_INTEGER,
          limitBytes,
          busyIntervalMs: 3_600_000,
          idleIntervalMs: 3_600_000,
        })
        try {
          const insert = database.prepare('insert into pages (body) values (?)')
          const body = Buffer.alloc(16 * 1024, 1)
          let largest = 0
          // About 13 MiB written, six times the limit.
          for (let i = 0; i < 800; i++) {
            checkpointer.beforeTransaction()
            database.transaction(() => insert.run(body))()
            largest = Math.max(largest, statSync(`${path}-wal`).size)
          }
          // The limit, plus what the transactions between two looks at the file can add.
          assert.ok(
            largest < limitBytes + 1024 * 1024,
            `the WAL reached ${(largest / 1024 / 1024).toFixed(1)} MiB`,
          )
          assert.equal(database.prepare('select count(*) from pages').pluck().get(), 800)
          // Each emptying ran on the writer's connection, and /metrics reports them (they stall it).
          const { writerCheckpoints, writerCheckpointSeconds } = checkpointer.stats()
          assert.ok(writerCheckpoints >= 5, `${writerCheckpoints} checkpoints on the writer`)
          assert.ok(writerCheckpointSeconds > 0)
        } finally {
          await checkpointer.stop()
          database.close()
          rmSync(folder, { recursive: true, force: true })
        }
      })

      test('the SQLite WAL stays under 64 MiB through 200,000 updates', async () => {
        const principal = {
          actorType: 'api_key' as const,
          actorId: org.keyId,
          orgId: org.id,
          role: 'full_access' as const,
        }
        const contacts = []
        for (let i = 0; i < 100; i++)
          contacts.push(await createContact(t.database.db, principal, { first_name: `W${i}` }))
        // What bounds the WAL is checkpointing between committed transactions, which an open read
        // (a cached statement left mid-iteration, say) would starve. Every tenth update takes the
        // whole hot path (its reads, its event, the statement cache); the others commit the same
        // UPDATE alone, so that 200,000 commits fit in CI's time.
        for (let i = 0; i < 200_000; i++) {
          const contact = contacts[i % contacts.length] as (typeof contacts)[number]
          const changes = { last_name: `update ${i}`, user_attributes: { i, padding: 'x'.repeat(200) } }
          if (i % 10 === 0) {
            await updateContact(t.database.db, principal, contact.id, changes)
            continue
          }
          await t.database.db.transaction().execute((trx) =>
            updateContactRow(trx, org.id, contact.id, {
              last_name: changes.last_name,
              user_attributes: JSON.stringify(changes.user_attributes),
              updated_at: new Date().toISOString(),
            }),
          )
        }
        const wal = statSync(`${t.testDatabase.url.slice('sqlite:'.length)}-wal`).size
        assert.ok(wal < 64 * 1024 * 1024, `WAL is ${(wal / 1024 / 1024).toFixed(1)} MiB`)
      })
    }
  })
}
