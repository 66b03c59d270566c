import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'

/**
 * Every suite runs once per backend. SQLite always runs; PostgreSQL runs against the server at
 * TEST_POSTGRES_URL (default: the local one). Where it cannot be reached the PostgreSQL suites are
 * skipped and say so, unless REQUIRE_POSTGRES=1 (as in CI), where they fail instead.
 */
export const POSTGRES_URL = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test'
const postgresRequired = process.env.REQUIRE_POSTGRES === '1'

export interface TestDatabase {
  readonly url: string
  drop(): Promise<void>
}

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
  async createDatabase() {
    const dir = await mkdtemp(join(tmpdir(), 'contacts-test-'))
    return {
      url: `sqlite:${join(dir, 'contacts.db')}`,
      drop: () => rm(dir, { recursive: true, force: true }),
    }
  },
}

/** Each test database is a schema of its own, so suites can run in parallel on one server. */
const postgres: TestBackend = {
  name: 'postgres',
  skip: postgresSkip,
  async createDatabase() {
    const schema = `contacts_test_${randomBytes(6).toString('hex')}`
    const admin = new pg.Client({ connectionString: POSTGRES_URL })
    await admin.connect()
    await admin.query(`create schema "${schema}"`)
    await admin.end()
    const url = new URL(POSTGRES_URL)
    url.searchParams.set('options', `-c search_path=${schema}`)
    return {
      url: url.toString(),
      async drop() {
        const client = new pg.Client({ connectionString: POSTGRES_URL })
        await client.connect()
        await client.query(`drop schema if exists "${schema}" cascade`)
        await client.end()
      },
    }
  },
}

export const BACKENDS: readonly TestBackend[] = [sqlite, postgres]
