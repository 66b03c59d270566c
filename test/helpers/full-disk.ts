import { sql } from 'kysely'
import type { DatabaseHandle } from '../../src/db/database.js'

/**
 * Makes the database refuse to grow, as on a full disk: SQLite stops at its present size
 * (max_page_count, which SQLite reports as SQLITE_FULL); PostgreSQL answers every write to
 * contacts with disk_full (53100), as it does when it cannot extend a file. Resolves to the undo.
 */
export async function fillTheDisk(database: DatabaseHandle): Promise<() => Promise<void>> {
  const { db } = database
  if (database.dialect === 'sqlite') {
    const { rows } = await sql<{ page_count: number }>`pragma page_count`.execute(db)
    await sql.raw(`pragma max_page_count = ${rows[0]?.page_count}`).execute(db)
    return async () => {
      await sql.raw('pragma max_page_count = 1073741823').execute(db)
    }
  }
  await sql`create function refuse_for_lack_of_space() returns trigger language plpgsql as $$
    begin raise exception 'could not extend file: No space left on device' using errcode = '53100'; end $$`.execute(
    db,
  )
  await sql`create trigger no_space before insert or update on contacts
    for each row execute function refuse_for_lack_of_space()`.execute(db)
  return async () => {
    await sql`drop trigger no_space on contacts`.execute(db)
    await sql`drop function refuse_for_lack_of_space()`.execute(db)
  }
}
