import pg from 'pg'
import { POSTGRES_URL, type ScratchDatabase, scratchDatabase } from './scratch-database.js'

/**
 * Every suite runs once per backend. SQLite always runs; PostgreSQL runs against the server at
 * TEST_POSTGRES_URL (default: the local one). Where it cannot be reached the PostgreSQL suites are
 * skipped and say so, unless REQUIRE_POSTGRES=1 (as in CI), where they fail instead.
 */
const postgresRequired = process.env.REQUIRE_POSTGRES === '1'

export type TestDatabase = ScratchDatabase

export interface TestBackend {
  readonly name: 'sqlite' | 'postgres'
  /** A reason to skip this backend's suites, or false. */
  readonly skip: string | false
  createDatabase(): Promise<TestDatabase>
}

async function probePostgres(): Promise<string | false> {
  const client = new pg.Client({ connectionString: POSTGRES_URL, connectionTimeoutMillis: 3000 })
  try {
    await client.connect()
    await client.query('select 1')
    return false
  } catch (error) {
    const reason = `PostgreSQL suite skipped: cannot reach ${POSTGRES_URL.replace(/\/\/[^@]*@/, '//')} (${(error as Error).message})`
    if (postgresRequired)
      throw new Error(`REQUIRE_POSTGRES=1 but ${reason.replace('PostgreSQL suite skipped: ', '')}`)
    return reason
  } finally {
    await client.end().catch(() => {})
  }
}

const postgresSkip = await probePostgres()
if (postgresSkip) process.stderr.write(`${postgresSkip}\n`)

const sqlite: TestBackend = {
  name: 'sqlite',
  skip: false,
  createDatabase: () => scratchDatabase('sqlite', 'contacts-test'),
}

/** Each test database is a schema of its own, so suites can run in parallel on one server. */
const postgres: TestBackend = {
  name: 'postgres',
  skip: postgresSkip,
  createDatabase: () => scratchDatabase('postgres', 'contacts-test'),
}

export const BACKENDS: readonly TestBackend[] = [sqlite, postgres]
