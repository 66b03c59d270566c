import { type Kysely, sql } from 'kysely'
import type { Database } from './schema.js'

/**
 * PostgreSQL: the planner's statistics of this service's tables, refreshed when the tables have
 * changed a lot since their last ANALYZE and nobody else refreshed them.
 *
 * Autovacuum does this where it runs, but a server may run without it, and a connection keeps the
 * plans it made for as long as the statistics they came from stand. The check of a foreign key
 * (each identity's contact) is planned once per connection: planned while `contacts` held a few
 * hundred rows, it finds the contact by reading all of the organization's, and kept while the
 * table grows, each check costs more than the one before (1 ms at 17,000 contacts: 285 ms for the
 * identities of 250 new people). An ANALYZE makes every connection plan again, with what the
 * table holds now.
 *
 * A table is refreshed once its rows changed (inserted, updated or deleted) by more than
 * STALE_ROWS plus STALE_SHARE of the rows it had at its last ANALYZE: past autovacuum's own
 * threshold (50 and a tenth), so that where autovacuum runs this mostly finds its work done (in
 * the minute after a bulk load it may come first, which costs one ANALYZE more). The rows
 * changed are PostgreSQL's own count (`pg_stat_user_tables`); tables owned by a role this one
 * cannot act as are left alone, since ANALYZE would only skip them.
 */
const STALE_ROWS = 1000
const STALE_SHARE = 0.5

/** The tables of the connection's schema whose statistics are stale, by the rule above. */
export async function tablesWithStaleStatistics(db: Kysely<Database>): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`
    select quote_ident(s.schemaname) || '.' || quote_ident(s.relname) as name
    from pg_stat_user_tables s
    join pg_class c on c.oid = s.relid
    where s.schemaname = current_schema()
      and pg_has_role(current_user, c.relowner, 'USAGE')
      and s.n_mod_since_analyze > ${STALE_ROWS} + ${STALE_SHARE} * greatest(c.reltuples, 0)
    order by s.relname`.execute(db)
  return rows.map((row) => row.name)
}

/** Refreshes the statistics of the stale tables; the tables analyzed. */
export async function refreshStaleStatistics(db: Kysely<Database>): Promise<string[]> {
  const tables = await tablesWithStaleStatistics(db)
  // Names quoted by quote_ident, from the catalog: safe to write into the statement.
  for (const table of tables) await sql`analyze ${sql.raw(table)}`.execute(db)
  return tables
}
