import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'

export const POSTGRES_URL = process.env.TEST_POSTGRES_URL ?? 'postgres://postgres@127.0.0.1:5432/test'

export interface ScratchDatabase {
  /** A DATABASE_URL for the server, the CLI or openDatabase. */
  readonly url: string
  /** The PostgreSQL schema it lives in (for tools such as pgbench); undefined on SQLite. */
  readonly schema?: string
  drop(): Promise<void>
}

/**
 * A throwaway database for a test, a benchmark or a script: a SQLite file in a temporary folder,
 * or a schema of its own on the PostgreSQL server, so that several can run at once on one server.
 */
export async function scratchDatabase(
  kind: 'sqlite' | 'postgres',
  prefix = 'contacts',
): Promise<ScratchDatabase> {
  if (kind === 'sqlite') {
    const dir = await mkdtemp(join(tmpdir(), `${prefix}-`))
    return {
      url: `sqlite:${join(dir, 'contacts.db')}`,
      drop: () => rm(dir, { recursive: true, force: true }),
    }
  }
  const schema = `${prefix.replaceAll('-', '_')}_${randomBytes(6).toString('hex')}`
  const admin = new pg.Client({ connectionString: POSTGRES_URL })
  await admin.connect()
  await admin.query(`create schema "${schema}"`)
  await admin.end()
  const url = new URL(POSTGRES_URL)
  url.searchParams.set('options', `-c search_path=${schema}`)
  return {
    url: url.toString(),
    schema,
    async drop() {
      const client = new pg.Client({ connectionString: POSTGRES_URL })
      await client.connect()
      await client.query(`drop schema if exists "${schema}" cascade`)
      await client.end()
    },
  }
}
