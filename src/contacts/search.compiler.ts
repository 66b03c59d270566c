import { type RawBuilder, type SqlBool, sql } from 'kysely'
import type { DialectName } from '../db/database.js'
import type { CustomFieldType } from '../db/schema.js'
import { ValidationFailedError, type ValidationIssue } from '../errors.js'
import type { CursorValue } from '../shared/cursor.js'
import { isUuid } from '../shared/ids.js'
import { parseDateTime } from '../shared/time.js'
import { normalizeEmail } from './identities.js'
import { normalizePhone } from './phone.js'
import {
  type Filter,
  type FilterCondition,
  type FilterOperator,
  MAX_FILTER_CONDITIONS,
  MAX_FILTER_DEPTH,
  MAX_IN_VALUES,
} from './search.schemas.js'
import { foldText, searchDocument } from './search-document.js'

/**
 * Compiles the search language (a JSON tree of and/or/not over field conditions) to SQL. Every
 * value reaches the database as a bound parameter; only names from the closed lists below, or
 * JSON keys checked against a strict pattern and also bound, shape the statement. The semantics
 * are the same on both backends: text compares by code point, email case-insensitively, phone
 * numbers in E.164, JSON values by their JSON type, and a missing value never equals anything.
 */

export interface SearchContext {
  dialect: DialectName
  orgId: string
  /** Types of the organization's declared custom fields, by name. */
  customFieldTypes: ReadonlyMap<string, CustomFieldType>
}

type Where = RawBuilder<SqlBool>
type Scalar = string | number | boolean

const TEXT_COLUMNS = ['first_name', 'last_name', 'external_id'] as const
const UUID_COLUMNS = [
  'id',
  'first_assistant_id',
  'last_assistant_id',
  'first_widget_id',
  'last_widget_id',
] as const
const TIMESTAMP_COLUMNS = ['created_at', 'updated_at', 'last_seen', 'last_sent'] as const
const JSON_COLUMNS = ['custom_fields', 'user_attributes', 'channels'] as const
/** JSON keys usable in a filter: they end up in a JSON path, so quotes and control characters are out. */
const hasControlCharacter = (text: string) =>
  [...text].some((char) => (char.codePointAt(0) ?? 0) < 0x20 || char === '\u007f')
const isUsableJsonKey = (key: string) =>
  key.length >= 1 && key.length <= 100 && !/["\\]/.test(key) && !hasControlCharacter(key)

type Field =
  | { kind: 'text'; column: (typeof TEXT_COLUMNS)[number] }
  | { kind: 'email' }
  | { kind: 'uuid'; column: (typeof UUID_COLUMNS)[number] }
  | { kind: 'timestamp'; column: (typeof TIMESTAMP_COLUMNS)[number] }
  | { kind: 'phone' }
  | { kind: 'json'; column: (typeof JSON_COLUMNS)[number]; key: string; declared?: CustomFieldType }

const OPERATORS_OF: Record<Field['kind'], readonly FilterOperator[]> = {
  text: ['eq', 'neq', 'in', 'nin', 'gt', 'gte', 'lt', 'lte', 'contains', 'starts_with', 'exists'],
  email: ['eq', 'neq', 'in', 'nin', 'gt', 'gte', 'lt', 'lte', 'contains', 'starts_with', 'exists'],
  uuid: ['eq', 'neq', 'in', 'nin', 'exists'],
  timestamp: ['eq', 'neq', 'in', 'nin', 'gt', 'gte', 'lt', 'lte', 'exists'],
  phone: ['eq', 'neq', 'in', 'nin', 'exists'],
  json: ['eq', 'neq', 'in', 'nin', 'gt', 'gte', 'lt', 'lte', 'contains', 'starts_with', 'exists'],
}

const COMPARISON = { eq: '=', gt: '>', gte: '>=', lt: '<', lte: '<=' } as const

class FilterProblem extends Error {}

function resolveField(name: string, context: SearchContext): Field {
  if (name === 'email') return { kind: 'email' }
  if (name === 'phone') return { kind: 'phone' }
  for (const column of TEXT_COLUMNS) if (name === column) return { kind: 'text', column }
  for (const column of UUID_COLUMNS) if (name === column) return { kind: 'uuid', column }
  for (const column of TIMESTAMP_COLUMNS) if (name === column) return { kind: 'timestamp', column }
  for (const column of JSON_COLUMNS) {
    if (!name.startsWith(`${column}.`)) continue
    const key = name.slice(column.length + 1)
    if (!isUsableJsonKey(key))
      throw new FilterProblem(`"${name}": the name after "${column}." is not usable in a filter`)
    const declared = column === 'custom_fields' ? context.customFieldTypes.get(key) : undefined
    return declared ? { kind: 'json', column, key, declared } : { kind: 'json', column, key }
  }
  throw new FilterProblem(`unknown field "${name}"`)
}

/** A value checked and brought to the form the column stores. */
function normalizeValue(field: Field, op: FilterOperator, value: unknown): Scalar {
  const substring = op === 'contains' || op === 'starts_with'
  switch (field.kind) {
    case 'text':
      if (typeof value !== 'string') throw new FilterProblem('the value must be a string')
      return value
    case 'email':
      if (typeof value !== 'string') throw new FilterProblem('the value must be a string')
      return substring ? value.toLowerCase() : (normalizeEmail(value) ?? '')
    case 'uuid':
      if (typeof value !== 'string' || !isUuid(value)) throw new FilterProblem('the value must be a UUID')
      return value.toLowerCase()
    case 'timestamp': {
      const time = typeof value === 'string' ? parseDateTime(value) : null
      if (!time) throw new FilterProblem('the value must be an RFC 3339 date-time')
      return time.toISOString()
    }
    case 'phone': {
      const phone = typeof value === 'string' ? normalizePhone(value) : null
      if (!phone) throw new FilterProblem('the value must be a phone number')
      return phone
    }
    case 'json': {
      if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') {
        throw new FilterProblem('the value must be a string, a number or a boolean')
      }
      if (field.declared && typeof value !== field.declared) {
        throw new FilterProblem(`custom field "${field.key}" holds ${field.declared}s`)
      }
      if (typeof value === 'boolean' && op !== 'eq' && op !== 'in') {
        throw new FilterProblem('booleans can only be compared for equality')
      }
      if (substring && typeof value !== 'string') throw new FilterProblem(`${op} needs a string`)
      if (typeof value === 'number' && !Number.isFinite(value))
        throw new FilterProblem('the number is not finite')
      return value
    }
  }
}

/** `contains x` / `starts_with x` on a text expression, by code point on both backends. */
function substringTest(
  dialect: DialectName,
  text: RawBuilder<unknown>,
  op: 'contains' | 'starts_with',
  value: string,
): Where {
  if (op === 'starts_with') return sql<SqlBool>`substr(${text}, 1, ${[...value].length}) = ${value}`
  return dialect === 'postgres'
    ? sql<SqlBool>`strpos(${text}, ${value}) > 0`
    : sql<SqlBool>`instr(${text}, ${value}) > 0`
}

/** Text ordered by code point: SQLite's default, PostgreSQL's "C" collation. */
function byCodePoint(dialect: DialectName, text: RawBuilder<unknown>): RawBuilder<unknown> {
  return dialect === 'postgres' ? sql`${text} collate "C"` : text
}

function columnCondition(context: SearchContext, field: Field, op: FilterOperator, values: Scalar[]): Where {
  const { dialect } = context
  const column =
    field.kind === 'email' ? sql.ref('email_normalized') : sql.ref((field as { column: string }).column)
  const first = values[0] as Scalar
  switch (op) {
    case 'exists':
      return sql<SqlBool>`${column} is not null`
    case 'in':
      return sql<SqlBool>`${column} in (${sql.join(values)})`
    case 'contains':
    case 'starts_with':
      return substringTest(dialect, column, op, first as string)
    case 'eq':
      // Equality is the same under every deterministic collation; keeping the column's own lets
      // PostgreSQL use its index.
      return sql<SqlBool>`${column} = ${first}`
    default: {
      const operator = sql.raw(COMPARISON[op as keyof typeof COMPARISON])
      const text = field.kind === 'text' || field.kind === 'email'
      return sql<SqlBool>`${text ? byCodePoint(dialect, column) : column} ${operator} ${first}`
    }
  }
}

function phoneCondition(context: SearchContext, op: FilterOperator, values: Scalar[]): Where {
  const numbers = op === 'exists' ? sql`` : sql` and value in (${sql.join(values)})`
  return sql<SqlBool>`id in (select contact_id from contact_identities where org_id = ${context.orgId} and kind = 'phone'${numbers})`
}

function jsonCondition(
  context: SearchContext,
  field: Extract<Field, { kind: 'json' }>,
  op: FilterOperator,
  values: Scalar[],
): Where {
  const postgres = context.dialect === 'postgres'
  const column = sql.ref(field.column)
  const path = `$."${field.key}"`
  const jsonType = postgres
    ? sql<string>`jsonb_typeof(${column} -> ${field.key}::text)`
    : sql<string>`json_type(${column}, ${path})`
  const asText = postgres ? sql`(${column} ->> ${field.key}::text)` : sql`json_extract(${column}, ${path})`
  const isText = postgres ? sql`${jsonType} = 'string'` : sql`${jsonType} = 'text'`
  const isNumber = postgres ? sql`${jsonType} = 'number'` : sql`${jsonType} in ('integer', 'real')`
  const asNumber = postgres
    ? sql`(case when ${jsonType} = 'number' then (${column} ->> ${field.key}::text)::numeric end)`
    : sql`json_extract(${column}, ${path})`

  const equals = (value: Scalar): Where => {
    // Containment is what PostgreSQL's jsonb_path_ops index answers; for scalars it is equality.
    if (postgres) return sql<SqlBool>`${column} @> ${JSON.stringify({ [field.key]: value })}::jsonb`
    if (typeof value === 'boolean') return sql<SqlBool>`${jsonType} = ${value ? 'true' : 'false'}`
    return typeof value === 'number'
      ? sql<SqlBool>`(${isNumber} and ${asNumber} = ${value})`
      : sql<SqlBool>`(${isText} and ${asText} = ${value})`
  }
  const first = values[0] as Scalar
  switch (op) {
    case 'exists':
      return sql<SqlBool>`coalesce(${jsonType}, 'null') <> 'null'`
    case 'eq':
      return equals(first)
    case 'in':
      return sql<SqlBool>`(${sql.join(values.map(equals), sql` or `)})`
    case 'contains':
    case 'starts_with':
      return sql<SqlBool>`(${isText} and ${substringTest(context.dialect, asText, op, first as string)})`
    default: {
      const operator = sql.raw(COMPARISON[op as keyof typeof COMPARISON])
      return typeof first === 'number'
        ? sql<SqlBool>`(${isNumber} and ${asNumber} ${operator} ${first})`
        : sql<SqlBool>`(${isText} and ${byCodePoint(context.dialect, asText)} ${operator} ${first})`
    }
  }
}

/** One condition, as SQL that holds exactly when the condition does (never NULL when negated). */
function compileCondition(context: SearchContext, condition: FilterCondition, negate: boolean): Where {
  const field = resolveField(condition.field, context)
  let op = condition.op
  let flip = negate
  if (!OPERATORS_OF[field.kind].includes(op)) {
    throw new FilterProblem(`"${condition.field}" does not support ${op}`)
  }
  // neq and nin are the negations of eq and in; "exists: false" of exists.
  if (op === 'neq') [op, flip] = ['eq', !flip]
  if (op === 'nin') [op, flip] = ['in', !flip]
  let values: Scalar[] = []
  if (op === 'exists') {
    if (condition.value !== undefined && typeof condition.value !== 'boolean') {
      throw new FilterProblem('exists takes no value, or true or false')
    }
    if (condition.value === false) flip = !flip
  } else if (op === 'in') {
    if (!Array.isArray(condition.value) || condition.value.length === 0) {
      throw new FilterProblem(`${condition.op} needs a non-empty list of values`)
    }
    if (condition.value.length > MAX_IN_VALUES) throw new FilterProblem(`at most ${MAX_IN_VALUES} values`)
    values = condition.value.map((value) => normalizeValue(field, 'eq', value))
  } else {
    if (condition.value === undefined || Array.isArray(condition.value)) {
      throw new FilterProblem(`${condition.op} needs one value`)
    }
    values = [normalizeValue(field, op, condition.value)]
  }
  const positive =
    field.kind === 'phone'
      ? phoneCondition(context, op, values)
      : field.kind === 'json'
        ? jsonCondition(context, field, op, values)
        : columnCondition(context, field, op, values)
  return flip ? sql<SqlBool>`not coalesce(${positive}, false)` : positive
}

const NODE_KEYS = [['and'], ['or'], ['not'], ['field', 'op', 'value']]

function compileNode(
  context: SearchContext,
  node: Filter,
  negate: boolean,
  path: (string | number)[],
): Where {
  const keys = Object.keys(node)
  const shape = NODE_KEYS.find((allowed) => keys.some((key) => allowed.includes(key)))
  const stray = keys.find((key) => !shape?.includes(key))
  if (stray !== undefined) {
    throw new ValidationFailedError([
      {
        loc: [...path, stray],
        msg: 'A filter is one of {"and": [...]}, {"or": [...]}, {"not": {...}} or {"field", "op", "value"}',
        type: 'extra_forbidden',
      },
    ])
  }
  if ('and' in node || 'or' in node) {
    const conjunction = 'and' in node
    const children = conjunction ? (node as { and: Filter[] }).and : (node as { or: Filter[] }).or
    const key = conjunction ? 'and' : 'or'
    const parts = children.map((child, index) => compileNode(context, child, negate, [...path, key, index]))
    // De Morgan: a negated "and" is an "or" of negations, so no NOT ever wraps a NULL.
    const joiner = conjunction !== negate ? sql` and ` : sql` or `
    return sql<SqlBool>`(${sql.join(parts, joiner)})`
  }
  if ('not' in node) return compileNode(context, node.not, !negate, [...path, 'not'])
  try {
    return compileCondition(context, node, negate)
  } catch (error) {
    if (error instanceof FilterProblem) {
      throw new ValidationFailedError([{ loc: path, msg: error.message, type: 'value_error' }])
    }
    throw error
  }
}

/**
 * Depth and number of conditions of a filter tree, walked without recursion: a body can nest
 * far deeper than the call stack, and must get its 422 rather than crash the check.
 */
function measure(filter: unknown): { depth: number; conditions: number } {
  let depth = 0
  let conditions = 0
  const pending: [unknown, number][] = [[filter, 1]]
  while (pending.length > 0) {
    const [node, level] = pending.pop() as [unknown, number]
    depth = Math.max(depth, level)
    if (depth > MAX_FILTER_DEPTH || conditions > MAX_FILTER_CONDITIONS) break
    if (typeof node !== 'object' || node === null) continue
    const children = 'and' in node ? node.and : 'or' in node ? node.or : 'not' in node ? [node.not] : null
    if (children === null) conditions += 1
    else if (Array.isArray(children)) for (const child of children) pending.push([child, level + 1])
  }
  return { depth, conditions }
}

/** The size bounds of a filter, checked before anything else reads it. */
function assertFilterBounded(filter: unknown, loc: (string | number)[]): void {
  const { depth, conditions } = measure(filter)
  const issues: ValidationIssue[] = []
  if (depth > MAX_FILTER_DEPTH)
    issues.push({ loc, msg: `filters nest at most ${MAX_FILTER_DEPTH} levels deep`, type: 'value_error' })
  if (conditions > MAX_FILTER_CONDITIONS)
    issues.push({
      loc,
      msg: `a filter holds at most ${MAX_FILTER_CONDITIONS} conditions`,
      type: 'value_error',
    })
  if (issues.length > 0) throw new ValidationFailedError(issues)
}

/** The WHERE clause of a filter, after checking its size. `loc` names where the filter came from. */
export function compileFilter(context: SearchContext, filter: Filter, loc: (string | number)[]): Where {
  assertFilterBounded(filter, loc)
  return compileNode(context, filter, false, loc)
}

/** The `q` text search, over the folded search document. */
export function compileTextSearch(context: SearchContext, q: string, loc: (string | number)[]): Where | null {
  if (hasControlCharacter(q)) {
    throw new ValidationFailedError([
      { loc, msg: 'q must not contain control characters', type: 'value_error' },
    ])
  }
  const folded = foldText(q.trim())
  if (folded === '') return null
  if (context.dialect === 'postgres') {
    // LIKE, not strpos, because that is what the trigram index answers; the pattern is escaped.
    const pattern = `%${folded.replace(/[\\%_]/g, (c) => `\\${c}`)}%`
    return sql<SqlBool>`${searchDocument()} like ${pattern}`
  }
  const exact = sql<SqlBool>`instr(${searchDocument()}, ${folded}) > 0`
  // The trigram index needs three characters; shorter text is looked for by reading the rows.
  if ([...folded].length < 3) return exact
  // The index knows which contacts hold each trigram, not where: it narrows to those holding
  // every trigram of the text, and the exact test decides.
  const characters = [...folded]
  const trigrams = new Set<string>()
  for (let i = 0; i + 3 <= characters.length; i++) trigrams.add(characters.slice(i, i + 3).join(''))
  const everyTrigram = [...trigrams].map((trigram) => `"${trigram.replaceAll('"', '""')}"`).join(' AND ')
  return sql<SqlBool>`id in (select contact_id from contact_search where org_id = ${context.orgId} and rowid in (select rowid from contact_search_fts where contact_search_fts match ${everyTrigram})) and ${exact}`
}

/** A sort key: the column, its direction, and whether it may be empty (empty sorts last). */
export interface SortKey {
  field: string
  column: string
  descending: boolean
  nullable: boolean
  text: boolean
  timestamp: boolean
}

const SORTABLE: Record<string, Omit<SortKey, 'field' | 'descending'>> = {
  created_at: { column: 'created_at', nullable: false, text: false, timestamp: true },
  updated_at: { column: 'updated_at', nullable: false, text: false, timestamp: true },
  last_seen: { column: 'last_seen', nullable: true, text: false, timestamp: true },
  last_sent: { column: 'last_sent', nullable: true, text: false, timestamp: true },
  first_name: { column: 'first_name', nullable: true, text: true, timestamp: false },
  last_name: { column: 'last_name', nullable: true, text: true, timestamp: false },
  email: { column: 'email_normalized', nullable: true, text: true, timestamp: false },
  external_id: { column: 'external_id', nullable: true, text: true, timestamp: false },
  id: { column: 'id', nullable: false, text: false, timestamp: false },
}
const MAX_SORT_KEYS = 5

/** `-last_seen,first_name` → keys, with the id appended so that the order is total. */
export function parseSort(sort: string | undefined, loc: (string | number)[]): SortKey[] {
  const keys: SortKey[] = []
  const problem = (msg: string) => new ValidationFailedError([{ loc, msg, type: 'value_error' }])
  for (const part of (sort ?? '-created_at').split(',')) {
    const descending = part.startsWith('-')
    const field = descending ? part.slice(1) : part
    const spec = SORTABLE[field]
    if (!spec) throw problem(`cannot sort by "${field}"; sortable: ${Object.keys(SORTABLE).join(', ')}`)
    if (keys.some((key) => key.field === field)) throw problem(`"${field}" appears twice in sort`)
    keys.push({ field, descending, ...spec })
  }
  if (keys.length > MAX_SORT_KEYS) throw problem(`at most ${MAX_SORT_KEYS} sort fields`)
  if (!keys.some((key) => key.field === 'id')) {
    keys.push({ ...(SORTABLE.id as SortKey), field: 'id', descending: (keys.at(-1) as SortKey).descending })
  }
  return keys
}

function sortExpression(dialect: DialectName, key: SortKey): RawBuilder<unknown> {
  const column = sql.ref(key.column)
  return key.text ? byCodePoint(dialect, column) : column
}

export function orderByClauses(dialect: DialectName, keys: readonly SortKey[]): RawBuilder<unknown>[] {
  return keys.map((key) => {
    const direction = sql.raw(key.descending ? 'desc' : 'asc')
    return key.nullable
      ? sql`${sortExpression(dialect, key)} ${direction} nulls last`
      : sql`${sortExpression(dialect, key)} ${direction}`
  })
}

/** The sort values of a row, as a cursor carries them. */
export function cursorValuesOf(keys: readonly SortKey[], row: Record<string, unknown>): CursorValue[] {
  return keys.map((key) => {
    const value = row[key.column]
    if (value === null || value === undefined) return null
    // Timestamps as stored (with milliseconds), which is how SQLite compares them as text.
    return key.timestamp ? new Date(value as Date | string).toISOString() : String(value)
  })
}

/**
 * Rows strictly after the cursor in the sort order (keyset paging): the first key that differs
 * decides. Empty values sort last in both directions, so after an empty value only rows with the
 * same empty value and later remaining keys follow.
 */
export function afterCursor(
  dialect: DialectName,
  keys: readonly SortKey[],
  values: readonly CursorValue[],
): Where {
  // A signed cursor is bound to its sort, so a length mismatch means a bug, not bad input.
  if (values.length !== keys.length) throw new Error('a cursor does not match the sort it is bound to')
  const allSameDirection = keys.every((key) => key.descending === keys[0]?.descending)
  if (allSameDirection && keys.every((key) => !key.nullable)) {
    // A row comparison, which both databases answer from an index on the same columns.
    const operator = sql.raw(keys[0]?.descending ? '<' : '>')
    return sql<SqlBool>`(${sql.join(keys.map((key) => sortExpression(dialect, key)))}) ${operator} (${sql.join(values as CursorValue[])})`
  }
  const equal = (key: SortKey, value: CursorValue) =>
    value === null ? sql`${sql.ref(key.column)} is null` : sql`${sql.ref(key.column)} = ${value}`
  const after = (key: SortKey, value: CursorValue): Where | null => {
    if (value === null) return null
    const beyond = sql`${sortExpression(dialect, key)} ${sql.raw(key.descending ? '<' : '>')} ${value}`
    return key.nullable
      ? sql<SqlBool>`(${beyond} or ${sql.ref(key.column)} is null)`
      : sql<SqlBool>`${beyond}`
  }
  const alternatives: Where[] = []
  keys.forEach((key, index) => {
    const next = after(key, values[index] as CursorValue)
    if (!next) return
    const ties = keys.slice(0, index).map((earlier, i) => equal(earlier, values[i] as CursorValue))
    alternatives.push(sql<SqlBool>`(${sql.join([...ties, next], sql` and `)})`)
  })
  return alternatives.length > 0 ? sql<SqlBool>`(${sql.join(alternatives, sql` or `)})` : sql<SqlBool>`false`
}
