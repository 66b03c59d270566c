import type { Kysely, QueryResult, RawBuilder, Selection, SelectQueryBuilder, SqlBool } from 'kysely'
import type { DialectName } from '../db/database.js'
import { preparedQuery } from '../db/prepared.js'
import type { Database } from '../db/schema.js'
import { recentlyUsed } from '../shared/lru.js'
import { countContacts as countLiveContacts, LISTED_COLUMNS } from './contacts.repository.js'
import { orderByClauses, type SortKey } from './search.compiler.js'

/** Compiled conditions of a search (see search.compiler.ts): bound parameters only. */
export type SearchCondition = RawBuilder<SqlBool>

function liveContacts(db: Kysely<Database>, orgId: string, conditions: readonly SearchCondition[]) {
  let query = db.selectFrom('contacts').where('org_id', '=', orgId).where('deleted_at', 'is', null)
  for (const condition of conditions) query = query.where(condition)
  return query
}

function ordered<O>(
  dialect: DialectName,
  query: SelectQueryBuilder<Database, 'contacts', O>,
  keys: SortKey[],
) {
  let result = query
  for (const clause of orderByClauses(dialect, keys)) result = result.orderBy(clause)
  return result
}

/** Up to `limit` live contacts matching every condition, in the sort's order. */
export function findContacts(
  db: Kysely<Database>,
  dialect: DialectName,
  orgId: string,
  conditions: readonly SearchCondition[],
  keys: SortKey[],
  limit: number,
) {
  return ordered(dialect, liveContacts(db, orgId, conditions).select(LISTED_COLUMNS), keys).limit(limit)
}

/**
 * A page by offset, as a deferred join: the offset is walked over ids only (from an index,
 * without reading the rows it skips), and only the page's own rows are read, in the columns a
 * contact is made of (the search's folded copies would add a fifth to the read).
 */
export async function findContactsAtOffset(...page: PageAtOffset) {
  const [db, dialect, orgId, conditions, keys, limit, offset] = page
  if (conditions.length === 0) return (await unfilteredPage(dialect, keys)(db, orgId, limit, offset)).rows
  return pageAtOffset(...page).execute()
}

type PageAtOffset = [
  db: Kysely<Database>,
  dialect: DialectName,
  orgId: string,
  conditions: readonly SearchCondition[],
  keys: SortKey[],
  limit: number,
  offset: number,
]

function pageAtOffset(...[db, dialect, orgId, conditions, keys, limit, offset]: PageAtOffset) {
  const pageIds = ordered(dialect, liveContacts(db, orgId, conditions).select('id'), keys)
    .limit(limit)
    .offset(offset)
  return ordered(
    dialect,
    db.selectFrom('contacts').select(LISTED_COLUMNS).where('org_id', '=', orgId).where('id', 'in', pageIds),
    keys,
  )
}

type UnfilteredPage = (
  db: Kysely<Database>,
  orgId: string,
  limit: number,
  offset: number,
) => Promise<QueryResult<Selection<Database, 'contacts', (typeof LISTED_COLUMNS)[number]>>>

/**
 * The plain list (no filter, the page and its size only) compiled once per sort: named and
 * planned once on PostgreSQL instead of at every page, and not built again on SQLite. Sorts come
 * from requests, so only the most recently used are kept.
 */
const unfilteredPage = (dialect: DialectName, keys: SortKey[]): UnfilteredPage =>
  unfilteredPages.get(`${dialect} ${JSON.stringify(keys)}`, () =>
    preparedQuery(3, (db, orgId: string, limit: number, offset: number) =>
      pageAtOffset(db, dialect, orgId, [], keys, limit, offset),
    ),
  )

const unfilteredPages = recentlyUsed<UnfilteredPage>(16)

/** Live contacts matching every condition; without conditions, the organization's kept count. */
export async function countContacts(
  db: Kysely<Database>,
  orgId: string,
  conditions: readonly SearchCondition[],
): Promise<number> {
  if (conditions.length === 0) return countLiveContacts(db, orgId)
  const { total } = await liveContacts(db, orgId, conditions)
    .select((eb) => eb.fn.countAll<number | string | bigint>().as('total'))
    .executeTakeFirstOrThrow()
  return Number(total)
}
