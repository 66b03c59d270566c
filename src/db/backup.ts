import { randomBytes } from 'node:crypto'
import { existsSync } from 'node:fs'
import { open, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { sql } from 'kysely'
import type { DatabaseHandle } from './database.js'

/**
 * Writes a consistent copy of a SQLite database, live or not, to `file`. Copying the database file
 * while a server writes is not a backup: its latest commits are in the WAL beside it, and the copy
 * can tear between pages. SQLite's VACUUM INTO reads one snapshot (a read transaction, so the
 * server's writes go on) and writes it out compacted. It goes to a temporary name in the same
 * folder, is synced, and only then takes its name: `file` is never a half-written backup, and a
 * backup never overwrites anything.
 */
export async function backupSqlite(database: DatabaseHandle, file: string): Promise<{ bytes: number }> {
  if (database.dialect !== 'sqlite') {
    throw new Error('backup copies a SQLite database; back up PostgreSQL with pg_dump')
  }
  if (existsSync(file)) throw new Error(`${file} already exists; a backup never overwrites a file`)
  const partial = join(dirname(file), `.${basename(file)}.partial-${randomBytes(4).toString('hex')}`)
  try {
    await sql`vacuum into ${partial}`.execute(database.db)
    await syncFile(partial)
    if (existsSync(file)) throw new Error(`${file} already exists; a backup never overwrites a file`)
    await rename(partial, file)
    await syncFile(dirname(file))
    return { bytes: (await stat(file)).size }
  } finally {
    await rm(partial, { force: true })
  }
}

async function syncFile(path: string) {
  const handle = await open(path, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}
