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

/**
 * The tables whose rows are led by an organization: planned from each organization's share of
 * them, which only an ANALYZE tells the planner.
 */
const ORGANIZATION_TABLES = ['contacts', 'contact_identities', 'contact_events']

/**
 * The table-wide rule above misses an organization that is new to tables others fill: until an
 * ANALYZE counts its rows, the planner thinks it holds next to nothing, and a query by its id
 * and a key (a contact by id, an identity by its value) may read every row it holds through an
 * index led by the organization alone. Measured on a copy of the tables holding 1,000,000
 * contacts of one organization and 200,000 of a second, not yet analyzed: 16 ms for one of the
 * second's contacts by id, 100 ms for the lookup of two identities. So the tables are also
 * analyzed when an organization's live contacts reach STALE_ROWS and twice what they were at the
 * last refresh this process made: a few times an organization, as it grows. Each server process
 * keeps its own sizes, so with several processes one such ANALYZE may run once in each.
 */
export interface OrganizationSizes {
  /** Each organization's live contacts at the last refresh; null before the first look. */
  atLastRefresh: Map<string, number> | null
}

export const organizationSizes = (): OrganizationSizes => ({ atLastRefresh: null })

async function liveContactsByOrganization(db: Kysely<Database>): Promise<Map<string, number>> {
  const rows = await db
    .selectFrom('contact_counts')
    .select(['org_id', sql<string>`sum(live)`.as('live')])
    .groupBy('org_id')
    .execute()
  return new Map(rows.map((row) => [row.org_id, Number(row.live)]))
}

/**
 * The tables of the connection's schema whose statistics are stale, by the rule above, and the
 * tables named in `also`; only those a role this one can act as owns.
 */
async function tablesToAnalyze(db: Kysely<Database>, also: readonly string[]): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`
    select quote_ident(s.schemaname) || '.' || quote_ident(s.relname) as name
    from pg_stat_user_tables s
    join pg_class c on c.oid = s.relid
    where s.schemaname = current_schema()
      and pg_has_role(current_user, c.relowner, 'USAGE')
      and (s.n_mod_since_analyze > ${STALE_ROWS} + ${STALE_SHARE} * greatest(c.reltuples, 0)
        or s.relname = any(${[...also]}::text[]))
    order by s.relname`.execute(db)
  return rows.map((row) => row.name)
}

/** The tables of the connection's schema whose statistics are stale, by the rule above. */
export const tablesWithStaleStatistics = (db: Kysely<Database>) => tablesToAnalyze(db, [])

/**
 * Refreshes the statistics of the stale tables, and, given the sizes of the organizations at the
 * last refresh, of the organizations' tables when one has grown (see OrganizationSizes); the
 * tables analyzed.
 */
export async function refreshStaleStatistics(
  db: Kysely<Database>,
  sizes?: OrganizationSizes,
): Promise<string[]> {
  const live = sizes ? await liveContactsByOrganization(db) : null
  const before = sizes?.atLastRefresh ?? null
  const grown =
    live !== null &&
    before !== null &&
    [...live].some(([orgId, count]) => count >= STALE_ROWS && count >= 2 * (before.get(orgId) ?? 0))
  const tables = await tablesToAnalyze(db, grown ? ORGANIZATION_TABLES : [])
  // Names quoted by quote_ident, from the catalog: safe to write into the statement.
  for (const table of tables) await sql`analyze ${sql.raw(table)}`.execute(db)
  // The first look only takes the sizes; later ones only when the contacts were analyzed.
  if (sizes && live && (before === null || tables.some((table) => table.endsWith('.contacts')))) {
    sizes.atLastRefresh = live
  }
  return tables
}
