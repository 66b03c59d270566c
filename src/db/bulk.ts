import { type Kysely, type RawBuilder, sql } from 'kysely'
import type { Database } from './schema.js'

/** A row as the query builder takes it: column names to values. */
type Row = object

/**
 * `select <columns> from json_populate_recordset(null::<table>, $1)`: many rows as a query, for an
 * INSERT … SELECT (or a CTE of one) on PostgreSQL, sent as one JSON parameter and expanded into
 * the table's own column types. A multi-row VALUES list binds one parameter per value: for a
 * thousand contacts, tens of thousands of parameters that the query builder, the driver and the
 * server's parser each go through one by one, which costs more than the insert itself. Columns
 * in `jsonColumns` hold JSON text, which travels as a JSON string and is parsed on arrival. Only
 * the columns the rows name are selected, so an INSERT leaves the others to their defaults.
 */
function rowsAsRecordset<T extends keyof Database & string>(
  table: T,
  rows: readonly Row[],
  jsonColumns: ReadonlySet<string> = new Set(),
): { columns: string[]; select: RawBuilder<unknown> } {
  const named = new Set<string>()
  for (const row of rows as readonly Readonly<Record<string, unknown>>[]) {
    for (const column in row) if (row[column] !== undefined) named.add(column)
  }
  const columns = [...named]
  return { columns, select: recordsetSelect(table, columns, recordsetJson(rows), jsonColumns) }
}

/** The select of rowsAsRecordset, for given columns and rows already as recordsetJson's text. */
export function recordsetSelect(
  table: keyof Database & string,
  columns: readonly string[],
  json: string,
  jsonColumns: ReadonlySet<string> = new Set(),
): RawBuilder<unknown> {
  const list = sql.join(
    columns.map((column) =>
      jsonColumns.has(column) ? sql`(${sql.ref(column)} #>> '{}')::jsonb` : sql.ref(column),
    ),
  )
  return sql`select ${list} from json_populate_recordset(null::${sql.table(table)}, ${json}::json)`
}

/**
 * JSON.stringify writes a lone UTF-16 surrogate (text a JSON body can carry, `"\ud800"`) as an
 * escape, which PostgreSQL refuses as invalid Unicode. Sent as a bound value, the same text
 * reaches the database as U+FFFD, the replacement character: here too, so that a value is
 * stored alike whichever way it travels. Every \ud800-\udfff escape in JSON.stringify's output
 * is a lone surrogate (pairs are written as they are); an escaped backslash is skipped whole.
 */
export const recordsetJson = (rows: readonly Row[]) =>
  JSON.stringify(rows).replace(/\\\\|\\ud[89a-f][0-9a-f]{2}/g, (match) =>
    match === '\\\\' ? match : '\\ufffd',
  )

/** Inserts rows into a table on PostgreSQL with one JSON parameter (see rowsAsRecordset). */
export async function insertAsRecordset<T extends keyof Database & string>(
  db: Kysely<Database>,
  table: T,
  rows: readonly Row[],
  jsonColumns?: ReadonlySet<string>,
): Promise<void> {
  if (rows.length === 0) return
  const { columns, select } = rowsAsRecordset(table, rows, jsonColumns)
  await sql`insert into ${sql.table(table)} (${sql.join(columns.map((column) => sql.ref(column)))}) ${select}`.execute(
    db,
  )
}
