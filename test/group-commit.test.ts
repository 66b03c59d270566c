import assert from 'node:assert/strict'
import { statSync } from 'node:fs'
import { after, before, describe, test } from 'node:test'
import BetterSqlite3 from 'better-sqlite3'
import { Kysely, type SqliteDatabase, sql } from 'kysely'
import { loadConfig } from '../src/config.js'
import { type DatabaseHandle, databaseOptionsOf, openDatabase } from '../src/db/database.js'
import { GroupCommitDriver, GroupCommitSqliteDialect } from '../src/db/group-commit.js'
import { migrateToLatest } from '../src/db/migrations.js'
import { preparedQuery } from '../src/db/prepared.js'
import type { Database } from '../src/db/schema.js'
import { type ScratchDatabase, scratchDatabase } from './helpers/scratch-database.js'

/**
 * A scratch SQLite database with a `notes` table, opened by the service's code, and another
 * connection to it, as another process would have: that one sees only committed data.
 */
async function notesDatabase(options?: Parameters<typeof openDatabase>[1]) {
  const scratch = await scratchDatabase('sqlite')
  const handle = openDatabase(scratch.url, options)
  await sql`create table notes (tag text not null, k text not null, primary key (tag, k))`.execute(handle.db)
  const elsewhere = new BetterSqlite3(scratch.url.slice('sqlite:'.length))
  return {
    scratch,
    handle,
    elsewhere,
    /** The notes of a tag that another connection sees, in order. */
    seenElsewhere: (tag: string) =>
      elsewhere.prepare('select k from notes where tag = ? order by k').pluck().all(tag) as string[],
    async close() {
      elsewhere.close()
      await handle.close()
      await scratch.drop()
    },
  }
}

/**
 * SQLite's group commit (db/group-commit.ts): transactions that queue for the one connection
 * share a COMMIT, and none is acknowledged before that COMMIT has run.
 */
describe('SQLite group commit', () => {
  let notes: Awaited<ReturnType<typeof notesDatabase>>
  let handle: DatabaseHandle
  let db: Kysely<Database>
  let scratch: ScratchDatabase
  let elsewhere: BetterSqlite3.Database

  const rowsSeenElsewhere = (tag: string) => notes.seenElsewhere(tag)

  const insertNote = (trx: Kysely<Database>, tag: string, k: string) =>
    sql`insert into notes (tag, k) values (${tag}, ${k})`.execute(trx)

  before(async () => {
    notes = await notesDatabase({ backgroundCheckpoints: true })
    ;({ handle, scratch, elsewhere } = notes)
    db = handle.db
  })
  after(() => notes?.close())

  test('transactions that arrive together share one COMMIT, and each is stored before it resolves', async () => {
    const before = handle.transactionStats()
    assert.ok(before)
    const unseenOnResolve: string[] = []
    await Promise.all(
      Array.from({ length: 20 }, async (_, i) => {
        const k = `n${String(i).padStart(2, '0')}`
        await db.transaction().execute((trx) => insertNote(trx, 'together', k))
        if (!rowsSeenElsewhere('together').includes(k)) unseenOnResolve.push(k)
      }),
    )
    const stats = handle.transactionStats()
    assert.ok(stats)
    assert.equal(stats.transactions - before.transactions, 20)
    assert.ok(stats.commits - before.commits < 20, `${stats.commits - before.commits} COMMITs for 20`)
    // Whenever a transaction resolved, another connection already saw its row.
    assert.deepEqual(unseenOnResolve, [])
    assert.equal(rowsSeenElsewhere('together').length, 20)
  })

  test('a transaction that fails is rolled back alone; the others of its group are committed', async () => {
    const outcomes = await Promise.allSettled(
      ['a', 'b', 'c'].map((k) =>
        db.transaction().execute(async (trx) => {
          await insertNote(trx, 'alone', k)
          if (k === 'b') throw new Error('b changes its mind')
        }),
      ),
    )
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['fulfilled', 'rejected', 'fulfilled'],
    )
    assert.match(String((outcomes[1] as PromiseRejectedResult).reason), /b changes its mind/)
    assert.deepEqual(rowsSeenElsewhere('alone'), ['a', 'c'])
  })

  test('a statement outside any transaction commits the open group first, so it never sees uncommitted data', async () => {
    const written = db.transaction().execute((trx) => insertNote(trx, 'read-after', 'x'))
    const read = await sql<{ k: string }>`select k from notes where tag = 'read-after'`.execute(db)
    assert.deepEqual(read.rows, [{ k: 'x' }])
    // Still within the same turn of the event loop: the group did not wait for its usual moment.
    assert.deepEqual(rowsSeenElsewhere('read-after'), ['x'])
    await written
  })

  test('a write outside any transaction is stored before it resolves', async () => {
    const grouped = db.transaction().execute((trx) => insertNote(trx, 'single', 'in-group'))
    await sql`insert into notes (tag, k) values ('single', 'alone')`.execute(db)
    assert.deepEqual(rowsSeenElsewhere('single'), ['alone', 'in-group'])
    await grouped
  })

  test('a COMMIT that fails fails every transaction of its group, and stores none of them', async () => {
    // The service's schema has no deferred constraints (see below): here one stands in for the
    // I/O error that is the only way its COMMIT can fail.
    await sql`create table parents (id text primary key)`.execute(db)
    await sql`create table children (id text primary key, parent text references parents (id) deferrable initially deferred)`.execute(
      db,
    )
    const outcomes = await Promise.allSettled([
      db.transaction().execute((trx) => insertNote(trx, 'doomed', 'innocent')),
      db
        .transaction()
        .execute((trx) => sql`insert into children (id, parent) values ('c', 'missing')`.execute(trx)),
    ])
    assert.deepEqual(
      outcomes.map((o) => o.status),
      ['rejected', 'rejected'],
    )
    assert.deepEqual(rowsSeenElsewhere('doomed'), [])
    assert.equal(elsewhere.prepare('select count(*) from children').pluck().get(), 0)
    // The connection is usable again afterwards.
    await db.transaction().execute((trx) => insertNote(trx, 'doomed', 'later'))
    assert.deepEqual(rowsSeenElsewhere('doomed'), ['later'])
  })

  test('a stream outside any transaction commits the open group first', async () => {
    const written = db.transaction().execute((trx) => insertNote(trx, 'streamed', 's'))
    const seen: string[] = []
    for await (const row of db
      .selectFrom('notes' as never)
      .select('k' as never)
      .where('tag' as never, '=', 'streamed' as never)
      .stream()) {
      seen.push((row as { k: string }).k)
      assert.deepEqual(rowsSeenElsewhere('streamed'), ['s'])
    }
    assert.deepEqual(seen, ['s'])
    await written
  })

  test('a full group is committed before the next transaction joins it', async () => {
    const raw = new BetterSqlite3(scratch.url.slice('sqlite:'.length))
    raw.pragma('busy_timeout = 5000')
    const driver = new GroupCommitDriver(raw as unknown as SqliteDatabase, raw, { maxGroupSize: 2 })
    const small = new Kysely<Database>({ dialect: new GroupCommitSqliteDialect(driver) })
    try {
      await Promise.all(
        ['a', 'b', 'c', 'd', 'e'].map((k) =>
          small.transaction().execute((trx) => insertNote(trx, 'full', k)),
        ),
      )
      const { transactions, commits } = driver.stats()
      assert.deepEqual({ transactions, commits }, { transactions: 5, commits: 3 })
      assert.deepEqual(rowsSeenElsewhere('full'), ['a', 'b', 'c', 'd', 'e'])
    } finally {
      await small.destroy()
    }
  })

  test('savepoints inside a transaction of a group roll back only their own part', async () => {
    const trx = await db.startTransaction().execute()
    await insertNote(trx, 'savepoint', 'kept')
    const inner = await trx.savepoint('inner').execute()
    await insertNote(inner, 'savepoint', 'undone')
    await inner.rollbackToSavepoint('inner').execute()
    await trx.commit().execute()
    assert.deepEqual(rowsSeenElsewhere('savepoint'), ['kept'])
  })

  test("rows are the objects better-sqlite3 makes, by name, through another connection's change of the table", async () => {
    await sql`create table shapes (k text primary key, a text, b integer, c text) strict`.execute(db)
    await sql`insert into shapes values ('one', 'A', 1, '{"x":1}'), ('two', null, 2, 'C')`.execute(db)
    const named = sql<
      Record<string, unknown>
    >`select k, a, b, c, b as "quoted ""name""" from shapes order by k`
    const starred = sql<Record<string, unknown>>`select * from shapes order by k`
    const expected = elsewhere
      .prepare('select k, a, b, c, b as "quoted ""name""" from shapes order by k')
      .all()
    // Twice: the first run compiles the statement's row maker, the second uses it.
    for (let run = 0; run < 2; run++) {
      const { rows } = await named.execute(db)
      assert.deepEqual(rows, expected)
      assert.deepEqual(Object.keys(rows[0] ?? {}), ['k', 'a', 'b', 'c', 'quoted "name"'])
      assert.equal(Object.getPrototypeOf(rows[0]), Object.prototype)
    }
    const streamed: unknown[] = []
    for await (const row of db
      .selectFrom('shapes' as never)
      .select(['k', 'b'] as never)
      .stream())
      streamed.push(row)
    assert.deepEqual(streamed, [
      { k: 'one', b: 1 },
      { k: 'two', b: 2 },
    ])
    assert.deepEqual((await starred.execute(db)).rows[0], { k: 'one', a: 'A', b: 1, c: '{"x":1}' })
    // Another process rebuilds the table with its columns in another order: SQLite prepares the
    // cached statements again, and every row still carries each value under its own name.
    elsewhere.exec(`begin;
      create table shapes_new (c text, k text primary key, z text default 'Z', b integer, a text) strict;
      insert into shapes_new (c, k, b, a) select c, k, b, a from shapes;
      drop table shapes;
      alter table shapes_new rename to shapes;
      commit;`)
    // The reads of one turn share a snapshot (group-commit.ts): the change is seen from the next.
    await new Promise((resolve) => setImmediate(resolve))
    assert.deepEqual((await starred.execute(db)).rows[0], { c: '{"x":1}', k: 'one', z: 'Z', b: 1, a: 'A' })
    assert.deepEqual((await named.execute(db)).rows, expected)
  })
})

describe('prepared statements on SQLite (run without Kysely’s executor)', () => {
  let notes: Awaited<ReturnType<typeof notesDatabase>>
  let handle: DatabaseHandle
  interface Notes {
    notes: { tag: string; k: string }
  }
  const notesTable = (db: Kysely<Database>) => db as unknown as Kysely<Notes>
  const notesTagged = preparedQuery(1, (db, tag: string) =>
    notesTable(db).selectFrom('notes').select('k').where('tag', '=', tag).orderBy('k'),
  )
  const addNote = preparedQuery(2, (db, tag: string, k: string) =>
    notesTable(db).insertInto('notes').values({ tag, k }),
  )
  const seenElsewhere = (tag: string) => notes.seenElsewhere(tag)

  before(async () => {
    notes = await notesDatabase()
    handle = notes.handle
  })
  after(() => notes?.close())

  test('a read outside any transaction waits for the transaction holding the connection, and sees only what it committed', async () => {
    let resume!: () => void
    const paused = new Promise<void>((resolve) => {
      resume = resolve
    })
    let wrote!: () => void
    const written = new Promise<void>((resolve) => {
      wrote = resolve
    })
    const transaction = handle.db.transaction().execute(async (trx) => {
      await addNote(trx, 'held', 'x')
      wrote()
      await paused
    })
    await written
    let answered = false
    const read = notesTagged(handle.db, 'held').then(({ rows }) => {
      answered = true
      return rows
    })
    await new Promise((resolve) => setTimeout(resolve, 20))
    assert.equal(answered, false, 'the read ran inside a transaction in progress')
    resume()
    await transaction
    assert.deepEqual(await read, [{ k: 'x' }])
    assert.deepEqual(seenElsewhere('held'), ['x'])
  })

  test('inside a transaction, it sees what the transaction wrote and is undone with it', async () => {
    await assert.rejects(
      handle.db.transaction().execute(async (trx) => {
        await addNote(trx, 'undone', 'y')
        assert.deepEqual((await notesTagged(trx, 'undone')).rows, [{ k: 'y' }])
        throw new Error('changes its mind')
      }),
      /changes its mind/,
    )
    assert.deepEqual((await notesTagged(handle.db, 'undone')).rows, [])
    assert.deepEqual(seenElsewhere('undone'), [])
  })

  test('a statement outside any transaction commits the open group first, and its own write is stored when it resolves', async () => {
    // A COMMIT an earlier test left scheduled would otherwise come first and empty the group.
    await new Promise((resolve) => setImmediate(resolve))
    let transaction: Promise<void> | undefined
    // Run while the group holds a finished transaction not yet committed: a callback queued from
    // inside that transaction comes before the COMMIT the group schedules as it hands over.
    const seenOnceWritten = new Promise<string[]>((resolve, reject) => {
      transaction = handle.db.transaction().execute(async (trx) => {
        await addNote(trx, 'grouped', 'in-group')
        setImmediate(() =>
          addNote(handle.db, 'grouped', 'alone').then(() => resolve(seenElsewhere('grouped')), reject),
        )
      })
    })
    assert.deepEqual(await seenOnceWritten, ['alone', 'in-group'])
    await transaction
  })
})

describe("the service's SQLite schema", () => {
  test('has no deferred constraint, so that one transaction cannot fail the COMMIT of its group', async () => {
    const scratch = await scratchDatabase('sqlite')
    const handle = openDatabase(scratch.url)
    try {
      await migrateToLatest(handle)
      const definitions = await sql<{ name: string; sql: string }>`
        select name, sql from sqlite_master where sql is not null`.execute(handle.db)
      assert.ok(definitions.rows.length > 10)
      for (const { name, sql: definition } of definitions.rows) {
        assert.doesNotMatch(definition, /deferr/i, name)
      }
    } finally {
      await handle.close()
      await scratch.drop()
    }
  })
})

describe("a SQLite connection's page cache", () => {
  const cacheOf = async (options: { sqliteCacheMb?: number }) => {
    const scratch = await scratchDatabase('sqlite')
    const handle = openDatabase(scratch.url, options)
    try {
      const { rows } = await sql<{ cache_size: number }>`pragma cache_size`.execute(handle.db)
      return rows[0]?.cache_size
    } finally {
      await handle.close()
      await scratch.drop()
    }
  }

  test("is SQLite's own 2 MiB unless configured, not the 16 MiB better-sqlite3 builds SQLite with", async () => {
    assert.equal(await cacheOf({}), -2048)
  })
  test('follows SQLITE_CACHE_MB', async () => {
    assert.equal(await cacheOf(databaseOptionsOf(loadConfig({ SQLITE_CACHE_MB: '64' }))), -64 * 1024)
  })
})

describe('closing a SQLite database', () => {
  /**
   * A database with some writes in its WAL and, in another connection (another process, say), a
   * read in progress whose snapshot lies in the WAL: the WAL cannot start over until it ends.
   */
  async function walHeldByAReader(options: { backgroundCheckpoints: boolean; statementTimeoutMs: number }) {
    const scratch = await scratchDatabase('sqlite')
    const path = scratch.url.slice('sqlite:'.length)
    const handle = openDatabase(scratch.url, options)
    await sql`create table notes (tag text not null, k text not null, primary key (tag, k))`.execute(
      handle.db,
    )
    for (let i = 0; i < 20; i++)
      await sql`insert into notes (tag, k) values ('close', ${String(i)})`.execute(handle.db)
    const reader = new BetterSqlite3(path)
    // The reader writes a row of its own just before reading, so that its snapshot ends at frames
    // no checkpoint (the server's thread runs one every few milliseconds) has copied yet.
    reader.prepare("insert into notes (tag, k) values ('reader', '1')").run()
    const rows = reader.prepare('select k from notes').iterate()
    rows.next()
    return {
      handle,
      walSize: () => statSync(`${path}-wal`).size,
      endRead: () => rows.return?.(),
      async drop() {
        reader.close()
        await scratch.drop()
      },
    }
  }

  test("the server's connection folds the WAL back into the file, even when another connection is reading at that moment", async () => {
    const held = await walHeldByAReader({ backgroundCheckpoints: true, statementTimeoutMs: 100 })
    try {
      // The read ends a while after closing began, later than the busy timeout.
      setTimeout(held.endRead, 300)
      await held.handle.close()
      assert.equal(held.walSize(), 0, 'the WAL was folded back into the database file')
    } finally {
      await held.drop()
    }
  })

  test("a short-lived command's connection does not wait for another connection to let go of the WAL", async () => {
    // The read never ends while closing: waiting for it would take the server's patience (2 s)
    // or this connection's busy timeout (5 s), far beyond the bound below, whatever the machine's load.
    const held = await walHeldByAReader({ backgroundCheckpoints: false, statementTimeoutMs: 5_000 })
    try {
      const started = performance.now()
      await held.handle.close()
      assert.ok(performance.now() - started < 1_000, `closing took ${performance.now() - started} ms`)
      assert.ok(held.walSize() > 0, 'the WAL is left to the connection still using it')
    } finally {
      held.endRead()
      await held.drop()
    }
  })
})
