import { mkdirSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, resolve } from 'node:path'
import type BetterSqlite3 from 'better-sqlite3'
import { Kysely, PostgresAdapter, PostgresDialect, type SqliteDatabase, type SqliteStatement } from 'kysely'
import type pg from 'pg'
import { recentlyUsed } from '../shared/lru.js'
import { timestampFromPostgres } from '../shared/time.js'
import { GroupCommitDriver, GroupCommitSqliteDialect } from './group-commit.js'
import { LiteralLimitsPlugin } from './literal-limits.js'
import { withNamedStatements } from './named-statements.js'
import type { Database } from './schema.js'
import { startWalCheckpointer } from './wal-checkpointer.js'

export type DialectName = 'sqlite' | 'postgres'

/**
 * Each backend's driver is loaded when a database of its kind is first opened, so that a server
 * holds only the one it uses: `pg` alone is 3 MB of heap that a server on SQLite never needs.
 * Both are CommonJS, so they load synchronously and opening a database stays synchronous.
 */
const requireDriver = createRequire(import.meta.url)
const sqliteModule = () => requireDriver('better-sqlite3') as typeof BetterSqlite3
const postgresModule = () => requireDriver('pg') as typeof pg

export type DatabaseLocation =
  | { readonly dialect: 'sqlite'; readonly path: string }
  | { readonly dialect: 'postgres'; readonly connectionString: string }

export interface DatabaseHandle {
  readonly db: Kysely<Database>
  readonly dialect: DialectName
  /** Number of prepared statements currently kept (SQLite); 0 on PostgreSQL. */
  statementCacheSize(): number
  /**
   * A number that changes whenever another connection or process commits to the database
   * (SQLite's data_version), for caches that must notice writes made elsewhere; null where no
   * such signal exists (PostgreSQL), where nothing may be cached on its strength.
   */
  foreignWriteCounter(): number | null
  /** PostgreSQL's pool: connections open, idle, and requests waiting for one; null on SQLite. */
  poolStats(): { total: number; idle: number; waiting: number } | null
  /**
   * SQLite: transactions committed and the COMMITs that stored them (transactions that arrive
   * together share one, see group-commit.ts), the read transactions that reads outside
   * transactions share and the reads run in them; null on PostgreSQL, which groups commits itself.
   */
  transactionStats(): {
    transactions: number
    commits: number
    readTransactions: number
    readsInReadTransactions: number
  } | null
  /**
   * SQLite with the background checkpointer: the checkpoints the server's own connection ran
   * (to start the WAL over, or to empty it when the worker fell behind) and the seconds they took,
   * during which every request waited; null elsewhere.
   */
  writerCheckpointStats(): { writerCheckpoints: number; writerCheckpointSeconds: number } | null
  /**
   * Migrations have changed tables: statements kept on open connections (PostgreSQL's named
   * ones) are not used again. SQLite re-prepares its own statements when the schema changes.
   */
  schemaChanged(): void
  close(): Promise<void>
}

export class DatabaseUrlError extends Error {}

/** The backend behind a Kysely instance (or a transaction of one), for the few dialect-specific queries. */
export const dialectOf = (db: Kysely<Database>): DialectName =>
  db.getExecutor().adapter instanceof PostgresAdapter ? 'postgres' : 'sqlite'

/** The contract's `DATABASE_URL` forms: `sqlite:PATH`, `file:PATH`, `postgres://…`, `postgresql://…`. */
export function parseDatabaseUrl(url: string): DatabaseLocation {
  if (url.startsWith('postgres://') || url.startsWith('postgresql://')) {
    return { dialect: 'postgres', connectionString: url }
  }
  for (const scheme of ['sqlite:', 'file:']) {
    if (url.startsWith(scheme)) {
      const path = url.slice(scheme.length).replace(/^\/\/(?=\/)/, '')
      if (path === '') break
      return { dialect: 'sqlite', path }
    }
  }
  throw new DatabaseUrlError(
    `DATABASE_URL must start with sqlite:, file:, postgres:// or postgresql:// (got "${url.split(':')[0]}:…")`,
  )
}

export const STATEMENT_CACHE_CAPACITY = 256

/** About 16 MiB of WAL (4 KiB pages): the size it returns to under sustained writes. */
const WAL_FINISH_AT_FRAMES = 4000
/** The WAL file is never left larger than this after a checkpoint resets it. */
const WAL_LIMIT_BYTES = 64 * 1024 * 1024
/**
 * Past this the writer empties the WAL itself (wal-checkpointer.ts looks every few transactions,
 * and waits up to 5 s for the worker's round to end), so that it stays under WAL_LIMIT_BYTES.
 */
const WAL_EMPTIED_AT_BYTES = 48 * 1024 * 1024

/**
 * Kysely's SQLite driver prepares every statement anew, which costs more than running it on the
 * hot path. This keeps the most recently used statements, bounded so that queries with varying
 * text (lists of ids, dynamic updates) cannot grow it without limit.
 */
function withStatementCache(database: BetterSqlite3.Database, capacity: number) {
  const cache = recentlyUsed<SqliteStatement>(capacity)
  const wrapped: SqliteDatabase = {
    close: () => database.close(),
    prepare: (sql) => cache.get(sql, () => database.prepare(sql) as unknown as SqliteStatement),
  }
  return { wrapped, size: cache.size }
}

export interface DatabaseOptions {
  /** PostgreSQL connections kept at most. */
  poolSize?: number
  /** PostgreSQL's statement_timeout; on SQLite, the wait for another process's lock. */
  statementTimeoutMs?: number
  /** Wait for a free PostgreSQL connection before giving up. */
  poolTimeoutMs?: number
  /** PostgreSQL: run the fixed-shape statements as named prepared statements (the default). */
  preparedStatements?: boolean
  /**
   * SQLite: checkpoint the WAL from a worker thread instead of inside commits (a long-running
   * server); short-lived commands keep SQLite's automatic checkpoints.
   */
  backgroundCheckpoints?: boolean
  /** SQLite: the connection's page cache, in MiB (SQLite's own default is 2). */
  sqliteCacheMb?: number
}

/**
 * better-sqlite3 waits for a lock synchronously, stalling every request of the process, so the
 * wait stays short whatever the statement timeout says.
 */
const SQLITE_BUSY_TIMEOUT_CAP_MS = 5_000

const DEFAULT_SQLITE_CACHE_MB = 2

/** How long a closing connection keeps trying to fold the WAL back while others hold it. */
const WAL_TRUNCATE_PATIENCE_MS = 2_000
const WAL_TRUNCATE_TRY_MS = 50

/**
 * Folds the WAL back into the database file, so a stopped service leaves one tidy file. Another
 * connection can stand in the way for a moment: a checkpoint of its own (then TRUNCATE gives up at
 * once) or a read in progress (then it waits for as long as the busy timeout). So each try waits
 * briefly and the tries are spaced out on the event loop, which lets this process's own readers
 * finish too. Whether the WAL could be truncated is returned; a WAL left behind loses nothing.
 *
 * With no patience it tries once and waits for nobody: a pending TRUNCATE blocks new writers, and
 * a short-lived command closing beside a running server must not hold up the server's writes (the
 * server tidies the WAL when it stops).
 */
export async function truncateWal(database: BetterSqlite3.Database, patienceMs: number): Promise<boolean> {
  database.pragma(`busy_timeout = ${patienceMs > 0 ? WAL_TRUNCATE_TRY_MS : 0}`)
  const giveUpAt = performance.now() + patienceMs
  for (;;) {
    const [result] = database.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[]
    if (result?.busy === 0) return true
    if (performance.now() >= giveUpAt) return false
    await new Promise((resolve) => setTimeout(resolve, WAL_TRUNCATE_TRY_MS))
  }
}

function openSqlite(path: string, options: DatabaseOptions): DatabaseHandle {
  if (path !== ':memory:') mkdirSync(dirname(resolve(path)), { recursive: true })
  const Sqlite = sqliteModule()
  const database = new Sqlite(path)
  // WAL with synchronous=NORMAL: a committed transaction survives a crash of the process (the
  // durability the contract promises); only a power loss may drop the last commits.
  database.pragma('journal_mode = WAL')
  database.pragma('synchronous = NORMAL')
  const busyTimeout = Math.min(
    options.statementTimeoutMs ?? SQLITE_BUSY_TIMEOUT_CAP_MS,
    SQLITE_BUSY_TIMEOUT_CAP_MS,
  )
  database.pragma(`busy_timeout = ${busyTimeout}`)
  database.pragma('foreign_keys = ON')
  database.pragma(`journal_size_limit = ${WAL_LIMIT_BYTES}`)
  // better-sqlite3 builds SQLite with a 16 MiB page cache where SQLite's default is 2 MiB. Pages
  // it does not hold are read from the operating system's file cache: with 100,000 contacts
  // (a 246 MB file), random reads and updates of contacts cost the same CPU with 2 MiB as with
  // 16, and the server's resident memory is 14 MB smaller.
  database.pragma(`cache_size = ${-1024 * (options.sqliteCacheMb ?? DEFAULT_SQLITE_CACHE_MB)}`)
  const checkpointer =
    options.backgroundCheckpoints && path !== ':memory:'
      ? startWalCheckpointer(database, path, {
          finishAtFrames: WAL_FINISH_AT_FRAMES,
          limitBytes: WAL_EMPTIED_AT_BYTES,
          busyIntervalMs: 10,
          idleIntervalMs: 250,
          onError: (error) =>
            process.emitWarning(
              `SQLite background checkpoints stopped, automatic ones resumed: ${(error as Error).message}`,
            ),
        })
      : null
  const cache = withStatementCache(database, STATEMENT_CACHE_CAPACITY)
  const driver = new GroupCommitDriver(cache.wrapped, database, {
    beforeTransaction: () => checkpointer?.beforeTransaction(),
  })
  const db = new Kysely<Database>({
    dialect: new GroupCommitSqliteDialect(driver),
    // prepared.ts runs SQLite's statements without Kysely's executor, and so without the plugins'
    // transformResult: a plugin here may rewrite queries, not results.
    plugins: [new LiteralLimitsPlugin()],
  })
  const dataVersion = database.prepare('pragma data_version').pluck()
  return {
    db,
    dialect: 'sqlite',
    statementCacheSize: cache.size,
    foreignWriteCounter: () => driver.readValue(dataVersion) as number,
    poolStats: () => null,
    transactionStats: () => driver.stats(),
    writerCheckpointStats: () => checkpointer?.stats() ?? null,
    schemaChanged: () => {},
    async close() {
      // Whatever a group still holds is stored before the connection goes.
      driver.endRead()
      driver.commitOpenGroup()
      await checkpointer?.stop()
      if (database.open) await truncateWal(database, checkpointer ? WAL_TRUNCATE_PATIENCE_MS : 0)
      await db.destroy()
    },
  }
}

const TIMESTAMPTZ_OID = 1184

/**
 * Timestamps come back as the same RFC 3339 strings SQLite stores, read straight from their text:
 * the driver's Date (parsed, then formatted again for every answer) was a tenth of an export.
 */
function postgresTypes(driver: typeof pg) {
  const parseTimestamptz = driver.types.getTypeParser(TIMESTAMPTZ_OID, 'text') as (text: string) => unknown
  return {
    getTypeParser: ((oid: number, format?: 'text' | 'binary') =>
      oid === TIMESTAMPTZ_OID && format !== 'binary'
        ? (text: string) => timestampFromPostgres(text, parseTimestamptz)
        : driver.types.getTypeParser(oid, format as 'text')) as typeof pg.types.getTypeParser,
  }
}

function openPostgres(connectionString: string, options: DatabaseOptions): DatabaseHandle {
  const driver = postgresModule()
  const pool = new driver.Pool({
    connectionString,
    types: postgresTypes(driver),
    max: options.poolSize ?? 10,
    connectionTimeoutMillis: options.poolTimeoutMs ?? 5_000,
    // A statement that runs away (or waits on a lock) must not hold a connection, and the
    // request, forever.
    statement_timeout: options.statementTimeoutMs ?? 15_000,
    // Queries are written without waiting for the previous one's answer: a transaction's BEGIN
    // goes out with its first statement (named-statements.ts).
    pipeline: true,
  })
  // Without a listener an idle client's error (for example the server restarting) kills the process.
  pool.on('error', () => {})
  const namedStatementPool = withNamedStatements(pool, { named: options.preparedStatements ?? true })
  const db = new Kysely<Database>({ dialect: new PostgresDialect({ pool: namedStatementPool }) })
  return {
    db,
    dialect: 'postgres',
    statementCacheSize: () => 0,
    foreignWriteCounter: () => null,
    poolStats: () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount }),
    transactionStats: () => null,
    writerCheckpointStats: () => null,
    schemaChanged: () => namedStatementPool.schemaChanged(),
    async close() {
      await db.destroy()
    },
  }
}

export function openDatabase(databaseUrl: string, options: DatabaseOptions = {}): DatabaseHandle {
  const location = parseDatabaseUrl(databaseUrl)
  return location.dialect === 'sqlite'
    ? openSqlite(location.path, options)
    : openPostgres(location.connectionString, options)
}

/** The database settings of a service configuration. */
export function databaseOptionsOf(config: {
  databasePoolSize: number
  databaseStatementTimeoutMs: number
  databasePoolTimeoutMs: number
  databasePreparedStatements: boolean
  sqliteCacheMb: number
}): DatabaseOptions {
  return {
    poolSize: config.databasePoolSize,
    statementTimeoutMs: config.databaseStatementTimeoutMs,
    poolTimeoutMs: config.databasePoolTimeoutMs,
    preparedStatements: config.databasePreparedStatements,
    backgroundCheckpoints: true,
    sqliteCacheMb: config.sqliteCacheMb,
  }
}
