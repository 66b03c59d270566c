import type { Kysely } from 'kysely'
import { findCustomFieldTypesOf } from '../custom-fields/custom-fields.repository.js'
import type { DialectName } from '../db/database.js'
import type { CustomFieldType, Database } from '../db/schema.js'
import { ValidationFailedError, type ValidationIssue } from '../errors.js'
import { type CursorCodec, queryKeyOf, readCursor } from '../shared/cursor.js'
import { type CursorPageOf, type PageOf, pageOf } from '../shared/schemas.js'
import type { Contact } from './contacts.schemas.js'
import { toContact } from './contacts.service.js'
import {
  afterCursor,
  compileFilter,
  compileTextSearch,
  cursorValuesOf,
  parseSort,
  type SearchContext,
  type SortKey,
} from './search.compiler.js'
import { countContacts, findContacts, findContactsAtOffset } from './search.repository.js'
import type { Filter, FilterCondition, FilterOperator, ListQuery } from './search.schemas.js'

export interface Search {
  filter?: Filter
  q?: string
  sort?: string
}

export interface SearchEngine {
  db: Kysely<Database>
  dialect: DialectName
  cursors: () => Promise<CursorCodec>
}

/** Where each part of a search came from, for 422s that point at the right parameter. */
interface Origins {
  filter: (string | number)[]
  q: (string | number)[]
  sort: (string | number)[]
  cursor: (string | number)[]
}

const BODY_ORIGINS: Origins = {
  filter: ['body', 'filter'],
  q: ['body', 'q'],
  sort: ['body', 'sort'],
  cursor: ['body', 'cursor'],
}
export const QUERY_ORIGINS: Origins = {
  filter: ['query'],
  q: ['query', 'q'],
  sort: ['query', 'sort'],
  cursor: ['query', 'cursor'],
}

function mentionsCustomFields(filter: Filter | undefined): boolean {
  if (!filter) return false
  if ('and' in filter) return filter.and.some(mentionsCustomFields)
  if ('or' in filter) return filter.or.some(mentionsCustomFields)
  if ('not' in filter) return mentionsCustomFields(filter.not)
  return filter.field.startsWith('custom_fields.')
}

/** A prepared search: the WHERE conditions, the order, and the key its cursors are bound to. */
interface PreparedSearch {
  conditions: ReturnType<typeof compileFilter>[]
  keys: SortKey[]
  queryKey: string
}

async function prepare(
  engine: Pick<SearchEngine, 'db' | 'dialect'>,
  orgId: string,
  search: Search,
  origins: Origins,
): Promise<PreparedSearch> {
  const context: SearchContext = {
    dialect: engine.dialect,
    orgId,
    customFieldTypes: mentionsCustomFields(search.filter)
      ? await findCustomFieldTypesOf(engine.db, orgId)
      : new Map(),
  }
  const keys = parseSort(search.sort, origins.sort)
  const conditions = []
  if (search.filter) conditions.push(compileFilter(context, search.filter, origins.filter))
  const text = search.q === undefined ? null : compileTextSearch(context, search.q, origins.q)
  if (text) conditions.push(text)
  return { conditions, keys, queryKey: searchKey(orgId, search, keys) }
}

/** The key a search's cursors are bound to: its organization, filter, text and sort. */
export function searchKey(orgId: string, search: Search, keys = parseSort(search.sort, QUERY_ORIGINS.sort)) {
  return queryKeyOf([
    orgId,
    search.filter ?? null,
    search.q?.trim() ?? '',
    keys.map((key) => `${key.descending ? '-' : ''}${key.field}`),
  ])
}

/** One page of a search by cursor: keyset paging, so every page costs what the first does. */
export async function searchContacts(
  engine: SearchEngine,
  orgId: string,
  search: Search & { limit?: number; cursor?: string },
  origins: Origins = BODY_ORIGINS,
): Promise<CursorPageOf<Contact>> {
  const { conditions, keys, queryKey } = await prepare(engine, orgId, search, origins)
  const limit = search.limit ?? 50
  const codec = await engine.cursors()
  const where = [...conditions]
  if (search.cursor !== undefined) {
    const values = readCursor(codec, queryKey, search.cursor, origins.cursor)
    where.push(afterCursor(engine.dialect, keys, values))
  }
  const rows = await findContacts(engine.db, engine.dialect, orgId, where, keys, limit + 1).execute()
  const page = rows.slice(0, limit)
  const last = page.at(-1)
  return {
    items: page.map(toContact),
    limit,
    next_cursor: rows.length > limit && last ? codec.encode(queryKey, cursorValuesOf(keys, last)) : null,
  }
}

/**
 * Every contact a search matches, in its order, a page of rows at a time by keyset: an export of
 * any size holds one page in memory (and the next, being read) and every page costs what the
 * first does. The next page is asked for before this one is handed over, so that the database
 * reads it while the caller formats this one.
 */
export async function* eachContactPage(
  engine: Pick<SearchEngine, 'db' | 'dialect'>,
  orgId: string,
  search: Search,
  pageSize = 1000,
): AsyncGenerator<Contact[]> {
  const { conditions, keys } = await prepare(engine, orgId, search, QUERY_ORIGINS)
  const pageAfter = (after: ReturnType<typeof cursorValuesOf> | null) => {
    const where = after === null ? conditions : [...conditions, afterCursor(engine.dialect, keys, after)]
    const page = findContacts(engine.db, engine.dialect, orgId, where, keys, pageSize).execute()
    // A caller that stops early leaves the read already asked for: its failure is nobody's.
    page.catch(() => {})
    return page
  }
  let next = pageAfter(null)
  for (;;) {
    const rows = await next
    const last = rows.at(-1)
    if (last === undefined) return
    const more = rows.length === pageSize
    if (more) next = pageAfter(cursorValuesOf(keys, last))
    yield rows.map(toContact)
    if (!more) return
  }
}

/** The original paging (`page`, `size`, with totals) over the same filters. */
export async function listContactsPage(
  engine: SearchEngine,
  orgId: string,
  search: Search & { page: number; size: number },
): Promise<PageOf<Contact> & { next_cursor: string | null }> {
  const { conditions, keys, queryKey } = await prepare(engine, orgId, search, QUERY_ORIGINS)
  const [rows, total] = await Promise.all([
    findContactsAtOffset(
      engine.db,
      engine.dialect,
      orgId,
      conditions,
      keys,
      search.size,
      (search.page - 1) * search.size,
    ),
    countContacts(engine.db, orgId, conditions),
  ])
  const page = pageOf(rows.map(toContact), total, search)
  const last = rows.at(-1)
  const more = last !== undefined && page.next_page !== null
  const codec = await engine.cursors()
  return { ...page, next_cursor: more ? codec.encode(queryKey, cursorValuesOf(keys, last)) : null }
}

const EQUALITY_PARAMETERS: Record<string, string> = {
  email: 'email',
  phone: 'phone',
  external_id: 'external_id',
  first_assistant_id: 'first_assistant_id',
  last_assistant_id: 'last_assistant_id',
  first_widget_id: 'first_widget_id',
  last_widget_id: 'last_widget_id',
}
const RANGE_PARAMETERS: Record<string, [field: string, op: FilterOperator]> = {
  created_after: ['created_at', 'gt'],
  created_before: ['created_at', 'lt'],
  updated_after: ['updated_at', 'gt'],
  updated_before: ['updated_at', 'lt'],
  last_seen_after: ['last_seen', 'gt'],
  last_seen_before: ['last_seen', 'lt'],
  last_sent_after: ['last_sent', 'gt'],
  last_sent_before: ['last_sent', 'lt'],
}
const NOT_FILTERS = new Set(['page', 'size', 'limit', 'cursor', 'sort', 'q', 'api_key'])
const JSON_PARAMETER =
  /^(custom_fields|user_attributes|channels)\.(.+?)(?:\[(eq|neq|gt|gte|lt|lte|contains|starts_with)\])?$/
const NUMERIC = /^-?\d+(\.\d+)?([eE][-+]?\d+)?$/

/**
 * The list route's query string as a search: every filter parameter becomes a condition, all of
 * them must hold. A parameter that is not a filter this route knows is refused, never ignored.
 */
export async function searchFromQuery(
  db: Kysely<Database>,
  orgId: string,
  query: ListQuery,
): Promise<Search> {
  const raw = query as unknown as Record<string, string | string[] | number | undefined>
  const conditions: FilterCondition[] = []
  const issues: ValidationIssue[] = []
  let declared: Map<string, CustomFieldType> | undefined
  for (const name of Object.keys(raw).sort()) {
    if (NOT_FILTERS.has(name)) continue
    const value = raw[name]
    if (Array.isArray(value)) {
      issues.push({ loc: ['query', name], msg: 'Give each filter once', type: 'value_error' })
      continue
    }
    if (typeof value !== 'string') continue
    const equality = EQUALITY_PARAMETERS[name]
    const range = RANGE_PARAMETERS[name]
    const json = JSON_PARAMETER.exec(name)
    if (equality) conditions.push({ field: equality, op: 'eq', value })
    else if (range) conditions.push({ field: range[0], op: range[1], value })
    else if (json) {
      const [, column, key, op = 'eq'] = json as unknown as [
        string,
        string,
        string,
        FilterOperator | undefined,
      ]
      declared ??= column === 'custom_fields' ? await findCustomFieldTypesOf(db, orgId) : undefined
      const type = column === 'custom_fields' ? declared?.get(key) : undefined
      const comparison = op === 'gt' || op === 'gte' || op === 'lt' || op === 'lte'
      const asNumber = type === 'number' || (type === undefined && comparison && NUMERIC.test(value))
      if (asNumber && !NUMERIC.test(value)) {
        issues.push({ loc: ['query', name], msg: 'Input should be a valid number', type: 'float_parsing' })
        continue
      }
      conditions.push({
        field: `${column}.${key}`,
        op: op as FilterOperator,
        value: asNumber ? Number(value) : value,
      })
    } else {
      issues.push({ loc: ['query', name], msg: `Unknown query parameter "${name}"`, type: 'value_error' })
    }
  }
  if (issues.length > 0) throw new ValidationFailedError(issues)
  const search: Search = {}
  if (conditions.length > 0) search.filter = { and: conditions }
  if (query.q !== undefined) search.q = query.q
  if (query.sort !== undefined) search.sort = query.sort
  return search
}

/** For the query plans the README shows: the SQL a search runs, with its parameters. */
export async function explainableSearch(
  engine: SearchEngine,
  orgId: string,
  search: Search & { limit?: number },
) {
  const { conditions, keys } = await prepare(engine, orgId, search, BODY_ORIGINS)
  return findContacts(engine.db, engine.dialect, orgId, conditions, keys, search.limit ?? 50).compile()
}
