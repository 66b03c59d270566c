import type BetterSqlite3 from 'better-sqlite3'
import {
  type CompiledQuery,
  type DatabaseConnection,
  type DialectAdapter,
  type Driver,
  type QueryResult,
  SelectQueryNode,
  SqliteAdapter,
  type SqliteDatabase,
  SqliteDialect,
} from 'kysely'

/**
 * SQLite with group commit. Every transaction of the process runs on SQLite's one connection,
 * one after another, and a COMMIT (writing the WAL frames of every page the transaction changed)
 * costs about what the statements of a typical request do. Here the transactions that queue for
 * the connection while one runs share one SQLite transaction: each runs inside a savepoint of its
 * own, so that one that fails is rolled back alone, and all are committed together when nobody
 * else waits (or the group is full). A transaction's commit resolves only once that COMMIT has
 * run, so nothing is acknowledged before it is stored exactly as durably as before; if that
 * COMMIT fails, every transaction of the group fails with it.
 *
 * A transaction of a group sees the changes of those before it in the same group, as it would
 * have after their commits: it shares their fate. A statement outside any transaction (a read,
 * or a single write) first commits the open group, so it only ever sees committed data and its
 * own write is never held back for others.
 *
 * The price is latency, never safety: a transaction's answer waits for those that joined its
 * group after it (at most `maxGroupSize`, and none once the group is `maxGroupMs` old at a
 * hand-over). Under light load a group holds one transaction, committed at the end of the event
 * loop's turn in which it ran.
 *
 * Reads outside transactions share a read transaction too. In WAL mode each statement run on its
 * own takes and releases SQLite's shared locks (four fcntl calls, about 6 µs here, more than a
 * cached read by key takes), so a request that checks its key's cache (data_version) and then
 * reads its contact paid for them twice. The first such read opens a read transaction (BEGIN),
 * and it ends once the work that read's callback set going has run: at the next process.nextTick,
 * which Node runs only after the promise jobs queued meanwhile. So the reads of one request's
 * chain of promises see one snapshot, taken after the event that started it, and a read in a
 * later callback (the next request) takes a new one: nothing is read from a snapshot older than
 * the request reading it. A write, a transaction or a stream ends the read transaction first,
 * and a chain that goes on reading without a turn takes a new one every READ_TRANSACTION_MAX_MS.
 */
export interface GroupCommitOptions {
  /** Called before the SQLite transaction of a new group begins (the WAL checkpointer's turn). */
  beforeTransaction?: () => void
  /** Transactions at most in one group. */
  maxGroupSize?: number
  /** A group is committed at the next turn once it has been open this long, waiters or not. */
  maxGroupMs?: number
}

const UNIT_SAVEPOINT = 'group_commit_unit'

/**
 * A chain of promise jobs that reads without ever letting the event loop turn (a loop of awaited
 * reads) takes a new snapshot after this long: a read transaction keeps the WAL from being
 * checkpointed past it, and emptied.
 */
export const READ_TRANSACTION_MAX_MS = 100

interface Group {
  openedAt: number
  /** Transactions that began in the group, committed or not. */
  size: number
  durable: Promise<void>
  settle(error?: unknown): void
}

function openGroup(): Group {
  let resolve!: () => void
  let reject!: (error: unknown) => void
  const durable = new Promise<void>((res, rej) => {
    resolve = res
    reject = rej
  })
  // A group whose members all rolled back has nobody to hear of a failed COMMIT.
  durable.catch(() => {})
  return {
    openedAt: performance.now(),
    size: 0,
    durable,
    settle: (error) => (error === undefined ? resolve() : reject(error)),
  }
}

/** One holder's use of the connection, from acquireConnection to releaseConnection. */
class Lease implements DatabaseConnection {
  inTransaction = false
  released = false

  constructor(readonly driver: GroupCommitDriver) {}

  executeQuery<R>(query: CompiledQuery): Promise<QueryResult<R>> {
    if (this.inTransaction) return Promise.resolve(this.driver.run<R>(query))
    return Promise.resolve(this.driver.runOutsideTransaction<R>(query))
  }

  async *streamQuery<R>(query: CompiledQuery): AsyncIterableIterator<QueryResult<R>> {
    if (!this.inTransaction) {
      // The statement stays open across the stream's turns: it cannot be held by a read
      // transaction that ends at one of them.
      this.driver.endRead()
      this.driver.commitOpenGroup()
    }
    if (!SelectQueryNode.is(query.query)) throw new Error('SQLite streams only select queries')
    const statement = this.driver.statement(query.sql)
    const makeRow = rowMakerOf(statement)
    for (const row of statement.iterate(query.parameters as unknown[])) {
      yield { rows: [(makeRow ? makeRow(row as unknown[]) : row) as R] }
    }
  }
}

type RowMaker = (values: unknown[]) => Record<string, unknown>

/** Per statement: the function that makes its rows, or null where better-sqlite3 makes them. */
const rowMakers = new WeakMap<BetterSqlite3.Statement, RowMaker | null>()

/**
 * better-sqlite3 makes each row an object by setting its columns one by one, each under a name it
 * turns into a JavaScript string again for every row. Taking the row as an array (raw mode) and
 * making the object with one literal compiled for the statement's columns, in their order, cost
 * less: a contact read by its key took 10 µs instead of 16 (measured on its own).
 *
 * Only for statements that name their columns. A statement with a `*` is prepared again by SQLite,
 * silently, when another process's migration changes a table, and its columns could then be
 * others than the compiled names say; better-sqlite3 reads the names for every row, so such a
 * statement keeps its objects.
 */
function rowMakerOf(statement: BetterSqlite3.Statement): RowMaker | null {
  let maker = rowMakers.get(statement)
  if (maker !== undefined) return maker
  maker = null
  const names = statement.columns().map((column) => column.name)
  if (!statement.source.includes('*')) {
    const fields = names.map((name, index) => `${JSON.stringify(name)}: values[${index}]`)
    maker = new Function('values', `return { ${fields.join(', ')} }`) as RowMaker
    statement.raw(true)
  }
  rowMakers.set(statement, maker)
  return maker
}

export class GroupCommitDriver implements Driver {
  readonly database: SqliteDatabase
  readonly #raw: BetterSqlite3.Database
  readonly #beforeTransaction: () => void
  readonly #maxGroupSize: number
  readonly #maxGroupMs: number
  #held = false
  readonly #waiting: Array<() => void> = []
  #group: Group | null = null
  #commitScheduled = false
  /** A read transaction is open (see the note at the top), since this time. */
  #readOpen = false
  #readOpenedAt = 0
  #transactions = 0
  #commits = 0
  #readTransactions = 0
  #readsShared = 0

  constructor(database: SqliteDatabase, raw: BetterSqlite3.Database, options: GroupCommitOptions = {}) {
    this.database = database
    this.#raw = raw
    this.#beforeTransaction = options.beforeTransaction ?? (() => {})
    this.#maxGroupSize = options.maxGroupSize ?? 64
    this.#maxGroupMs = options.maxGroupMs ?? 20
  }

  async init(): Promise<void> {}

  /**
   * Since the driver started: transactions committed and the SQLite COMMITs that stored them;
   * the read transactions opened for reads outside transactions, and the reads run in them.
   */
  stats() {
    return {
      transactions: this.#transactions,
      commits: this.#commits,
      readTransactions: this.#readTransactions,
      readsInReadTransactions: this.#readsShared,
    }
  }

  statement(sql: string) {
    return this.database.prepare(sql) as unknown as BetterSqlite3.Statement
  }

  run<R>(query: CompiledQuery, statement = this.statement(query.sql)): QueryResult<R> {
    const parameters = query.parameters as unknown[]
    if (statement.reader) {
      const makeRow = rowMakerOf(statement)
      const rows = statement.all(parameters)
      return { rows: (makeRow ? (rows as unknown[][]).map(makeRow) : rows) as R[] }
    }
    const { changes, lastInsertRowid } = statement.run(parameters)
    return { numAffectedRows: BigInt(changes), insertId: BigInt(lastInsertRowid), rows: [] }
  }

  #exec(sql: string) {
    this.statement(sql).run()
  }

  /**
   * A statement outside any transaction, the open group committed first: a read in the read
   * transaction of this turn (opened if need be), a write on its own, so that it is stored when
   * it returns.
   */
  runOutsideTransaction<R>(query: CompiledQuery): QueryResult<R> {
    this.commitOpenGroup()
    const statement = this.statement(query.sql)
    if (statement.reader) this.#joinRead()
    else this.endRead()
    return this.run<R>(query, statement)
  }

  /**
   * A value read at once by whoever does not hold the connection (the data_version pragma): in the
   * open transaction if there is one (a group's, or this turn's reads'), else in a new read
   * transaction, which the reads that follow in this turn then share.
   */
  readValue(statement: BetterSqlite3.Statement): unknown {
    const inWriteTransaction = this.#raw.inTransaction && !this.#readOpen
    if (!inWriteTransaction) this.#joinRead()
    return statement.get()
  }

  /** Makes the next statement a read of this turn's read transaction, opened if need be. */
  #joinRead() {
    this.#enterRead()
    if (this.#readOpen) this.#readsShared++
  }

  #enterRead() {
    if (this.#readOpen) {
      if (performance.now() - this.#readOpenedAt < READ_TRANSACTION_MAX_MS) return
      this.endRead()
    }
    if (this.#raw.inTransaction) return
    this.#exec('begin')
    this.#readOpen = true
    this.#readOpenedAt = performance.now()
    this.#readTransactions++
    process.nextTick(this.#endReadAtTurnEnd)
  }

  readonly #endReadAtTurnEnd = () => this.endRead()

  /** Ends the read transaction, if one is open. */
  endRead(): void {
    if (!this.#readOpen) return
    this.#readOpen = false
    // SQLite ends a transaction itself on some errors; a read has nothing to keep.
    if (this.#raw.inTransaction) this.#exec('commit')
  }

  /**
   * Runs a statement at once, as a holder of the connection would, without going through
   * Kysely's executor: for `inTransaction`, on the connection the caller's transaction holds;
   * otherwise only when nobody holds it (undefined when someone does: the statement must then
   * wait its turn), the open group committed first as for any statement outside a transaction.
   */
  runNow<R>(query: CompiledQuery, inTransaction: boolean): QueryResult<R> | undefined {
    if (inTransaction) return this.run<R>(query)
    if (this.#held) return undefined
    return this.runOutsideTransaction<R>(query)
  }

  async acquireConnection(): Promise<DatabaseConnection> {
    if (this.#held) await new Promise<void>((resolve) => this.#waiting.push(resolve))
    else this.#held = true
    return new Lease(this)
  }

  async beginTransaction(connection: DatabaseConnection): Promise<void> {
    const lease = connection as Lease
    if (this.#group && this.#group.size >= this.#maxGroupSize) this.commitOpenGroup()
    if (!this.#group) {
      this.endRead()
      this.#beforeTransaction()
      // IMMEDIATE: the write lock first, so that a transaction waits its turn (busy_timeout)
      // behind another process instead of failing at its first write.
      this.#exec('begin immediate')
      this.#group = openGroup()
    }
    this.#exec(`savepoint ${UNIT_SAVEPOINT}`)
    this.#group.size++
    lease.inTransaction = true
  }

  async commitTransaction(connection: DatabaseConnection): Promise<void> {
    const lease = connection as Lease
    const group = this.#group
    if (!group || !this.#raw.inTransaction) throw new Error('the transaction of this group was rolled back')
    this.#exec(`release ${UNIT_SAVEPOINT}`)
    lease.inTransaction = false
    this.#transactions++
    // The next holder may run while this one waits for the group's COMMIT.
    this.#handOver(lease)
    await group.durable
  }

  async rollbackTransaction(connection: DatabaseConnection): Promise<void> {
    const lease = connection as Lease
    lease.inTransaction = false
    const group = this.#group
    if (!group) return
    if (this.#raw.inTransaction) {
      this.#exec(`rollback to ${UNIT_SAVEPOINT}`)
      this.#exec(`release ${UNIT_SAVEPOINT}`)
      return
    }
    // SQLite rolled back the whole transaction (an I/O error, a full disk): the members of the
    // group lost their changes with it.
    this.#group = null
    group.settle(new Error('the transaction of this group was rolled back by SQLite'))
  }

  async savepoint(connection: DatabaseConnection, name: string): Promise<void> {
    this.#savepointCommand(connection, 'savepoint', name)
  }

  async rollbackToSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    this.#savepointCommand(connection, 'rollback to', name)
  }

  async releaseSavepoint(connection: DatabaseConnection, name: string): Promise<void> {
    this.#savepointCommand(connection, 'release', name)
  }

  #savepointCommand(
    connection: DatabaseConnection,
    command: 'savepoint' | 'rollback to' | 'release',
    name: string,
  ) {
    if (name === UNIT_SAVEPOINT) throw new Error(`the savepoint name ${name} is reserved`)
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) throw new Error(`invalid savepoint name ${name}`)
    const lease = connection as Lease
    if (!lease.inTransaction) throw new Error('a savepoint needs a transaction')
    this.#exec(`${command} ${name}`)
  }

  async releaseConnection(connection: DatabaseConnection): Promise<void> {
    const lease = connection as Lease
    if (!lease.released) this.#handOver(lease)
  }

  /** Commits the open group, if any, and settles its members. */
  commitOpenGroup(): void {
    const group = this.#group
    if (!group) return
    this.#group = null
    try {
      this.#exec('commit')
      this.#commits++
      group.settle()
    } catch (error) {
      if (this.#raw.inTransaction) {
        try {
          this.#exec('rollback')
        } catch {
          // The COMMIT's error is the one to report.
        }
      }
      group.settle(error)
    }
  }

  /**
   * Passes the connection to the next waiter, first committing the open group if it has been
   * open long enough. With nobody waiting, the group is committed at the end of this turn of the
   * event loop, once the requests that arrived with this one have joined it.
   */
  #handOver(lease: Lease) {
    lease.released = true
    const group = this.#group
    if (group && performance.now() - group.openedAt >= this.#maxGroupMs) this.commitOpenGroup()
    const next = this.#waiting.shift()
    if (next) {
      next()
      return
    }
    this.#held = false
    if (this.#group && !this.#commitScheduled) {
      this.#commitScheduled = true
      setImmediate(this.#commitWhenFree)
    }
  }

  readonly #commitWhenFree = () => {
    this.#commitScheduled = false
    if (!this.#group) return
    if (this.#held) {
      // Whoever holds the connection hands it over later and schedules this again.
      return
    }
    this.commitOpenGroup()
  }

  async destroy(): Promise<void> {
    this.endRead()
    this.commitOpenGroup()
    this.#raw.close()
  }
}

/** SQLite's adapter, which knows the driver its statements run on (for db/prepared.ts). */
export class GroupCommitSqliteAdapter extends SqliteAdapter {
  constructor(readonly driver: GroupCommitDriver) {
    super()
  }
}

/** Kysely's SQLite dialect on one GroupCommitDriver. */
export class GroupCommitSqliteDialect extends SqliteDialect {
  readonly #driver: GroupCommitDriver

  constructor(driver: GroupCommitDriver) {
    super({ database: driver.database })
    this.#driver = driver
  }

  override createDriver(): Driver {
    return this.#driver
  }

  override createAdapter(): DialectAdapter {
    return new GroupCommitSqliteAdapter(this.#driver)
  }
}
