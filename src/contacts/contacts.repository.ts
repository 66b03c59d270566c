import { type Kysely, type QueryResult, sql } from 'kysely'
import { insertAsRecordset } from '../db/bulk.js'
import { dialectOf } from '../db/database.js'
import { preparedQuery } from '../db/prepared.js'
import type { ContactRow, Database, InsertableContactRow, UpdateableContactRow } from '../db/schema.js'
import type { ListStart } from '../shared/list-paging.js'
import { recentlyUsed } from '../shared/lru.js'
import { withSearchColumns } from './search-document.js'

/**
 * What a read for the API (one contact, a list page, an export) takes of each contact: the contact
 * as the API shows it, and every column a sort key names (email sorts by email_normalized). Not
 * the search's folded copies nor the trash's bookkeeping, which an export would otherwise parse
 * and drop a million times.
 */
export const LISTED_COLUMNS = [
  'org_id',
  'id',
  'first_name',
  'last_name',
  'email',
  'email_normalized',
  'external_id',
  'channels',
  'user_attributes',
  'custom_fields',
  'last_seen',
  'last_sent',
  'first_assistant_id',
  'last_assistant_id',
  'first_widget_id',
  'last_widget_id',
  'created_at',
  'updated_at',
  'version',
] as const satisfies readonly (keyof ContactRow)[]

/**
 * Every column of a contact, named: the hot reads name their columns rather than `*`, so that
 * SQLite's rows can be made from arrays (db/group-commit.ts `rowMakerOf`). The check below fails to
 * compile when a column is added to the table and not here.
 */
export const CONTACT_ROW_COLUMNS = [
  ...LISTED_COLUMNS,
  'first_name_folded',
  'last_name_folded',
  'channels_folded',
  'deleted_at',
  'trashed_identities',
] as const satisfies readonly (keyof ContactRow)[]
type UnlistedContactColumn = Exclude<keyof ContactRow, (typeof CONTACT_ROW_COLUMNS)[number]>
const everyContactColumnListed: [UnlistedContactColumn] extends [never] ? true : UnlistedContactColumn = true
void everyContactColumnListed

const liveContactById = preparedQuery(2, (db, orgId: string, id: string) =>
  db
    .selectFrom('contacts')
    .select(LISTED_COLUMNS)
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .where('deleted_at', 'is', null),
)

/** A live contact (not in the trash), in the columns it is made of. */
export async function findContactById(db: Kysely<Database>, orgId: string, id: string) {
  return (await liveContactById(db, orgId, id)).rows[0]
}

/** Locked on PostgreSQL; live only, or live and in the trash. */
const contactForUpdate = (includeTrash: boolean) =>
  preparedQuery(2, (db, orgId: string, id: string) =>
    db
      .selectFrom('contacts')
      .select(CONTACT_ROW_COLUMNS)
      .where('org_id', '=', orgId)
      .where('id', '=', id)
      .$if(!includeTrash, (query) => query.where('deleted_at', 'is', null))
      .$if(dialectOf(db) === 'postgres', (query) => query.forUpdate()),
  )
const liveContactForUpdate = contactForUpdate(false)
const anyContactForUpdate = contactForUpdate(true)

/**
 * A contact about to be written, locked until the transaction ends (on PostgreSQL; a SQLite
 * transaction holds the whole database), so that what the event log records as its previous
 * values is what the write replaced. Live only, unless `includeTrash`.
 */
export async function findContactForUpdate(
  trx: Kysely<Database>,
  orgId: string,
  id: string,
  options: { includeTrash?: boolean } = {},
) {
  const query = options.includeTrash ? anyContactForUpdate : liveContactForUpdate
  return (await query(trx, orgId, id)).rows[0]
}

/** Live or in the trash (restore and erase reach both). */
export async function findContactIncludingTrash(db: Kysely<Database>, orgId: string, id: string) {
  return db
    .selectFrom('contacts')
    .select(CONTACT_ROW_COLUMNS)
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .executeTakeFirst()
}

export async function findLiveContacts(
  db: Kysely<Database>,
  orgId: string,
  ids: readonly string[],
  options: { lock?: boolean } = {},
) {
  if (ids.length === 0) return []
  return db
    .selectFrom('contacts')
    .select(CONTACT_ROW_COLUMNS)
    .where('org_id', '=', orgId)
    .where('id', 'in', ids)
    .where('deleted_at', 'is', null)
    .orderBy('id')
    .$if(options.lock === true && dialectOf(db) === 'postgres', (query) => query.forUpdate())
    .execute()
}

export async function listContacts(db: Kysely<Database>, orgId: string, limit: number, offset: number) {
  return db
    .selectFrom('contacts')
    .select(CONTACT_ROW_COLUMNS)
    .where('org_id', '=', orgId)
    .where('deleted_at', 'is', null)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
    .offset(offset)
    .execute()
}

const liveCountOf = preparedQuery(1, (db, orgId: string) =>
  db
    .selectFrom('contact_counts')
    .select((eb) => [
      eb.fn.sum<number | string | bigint | null>('live').as('total'),
      eb.fn.countAll<number | string | bigint>().as('rows'),
    ])
    .where('org_id', '=', orgId),
)

/** Rows an organization's count may span (PostgreSQL) before a read folds them into one. */
const COUNT_ROWS_FOLDED_AT = 64

/** Organizations whose count this process is folding, per database: one fold at a time is enough. */
const foldsInFlight = new WeakMap<Kysely<Database>, Set<string>>()

/**
 * The organization's live contacts (not in the trash), kept by migration 016's triggers: one
 * indexed read however many contacts there are. A read that finds the count spread over many rows
 * folds them before it answers.
 */
export async function countContacts(db: Kysely<Database>, orgId: string): Promise<number> {
  const [row] = (await liveCountOf(db, orgId)).rows
  const inFlight = foldsInFlight.get(db) ?? new Set<string>()
  if (Number(row?.rows ?? 0) > COUNT_ROWS_FOLDED_AT && !inFlight.has(orgId)) {
    foldsInFlight.set(db, inFlight.add(orgId))
    await foldContactCounts(db, orgId).finally(() => inFlight.delete(orgId))
  }
  return Number(row?.total ?? 0)
}

/**
 * Folds each organization's count rows into one (PostgreSQL, where every change adds a row), for
 * one organization or every one that has more than a few. One statement: a concurrent fold waits
 * for it and then finds nothing left to fold, and a change committed meanwhile is a row it never
 * saw, kept as it is. The sum is unchanged either way.
 */
export async function foldContactCounts(db: Kysely<Database>, orgId?: string): Promise<void> {
  if (dialectOf(db) !== 'postgres') return
  const organizations =
    orgId === undefined
      ? sql`select org_id from contact_counts group by org_id having count(*) > 1`
      : sql`select ${orgId}::uuid`
  await sql`
    with folded as (
      delete from contact_counts where org_id in (${organizations}) returning org_id, live
    )
    insert into contact_counts (org_id, slot, live)
    select org_id, nextval('contact_counts_slot_seq'), sum(live) from folded group by org_id`.execute(db)
}

/** The trash, most recently deleted first: by offset (`page`) or after a position (`cursor`). */
export async function listTrash(db: Kysely<Database>, orgId: string, limit: number, from: ListStart) {
  let query = db
    .selectFrom('contacts')
    .select(CONTACT_ROW_COLUMNS)
    .where('org_id', '=', orgId)
    .where('deleted_at', 'is not', null)
    .orderBy('deleted_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
  if ('offset' in from) query = query.offset(from.offset)
  else if (from.after) {
    const { time, id } = from.after
    query = query.where((eb) => eb(eb.refTuple('deleted_at', 'id'), '<', eb.tuple(time, id)))
  }
  return query.execute()
}

export async function countTrash(db: Kysely<Database>, orgId: string): Promise<number> {
  const { total } = await db
    .selectFrom('contacts')
    .select((eb) => eb.fn.countAll<number | string | bigint>().as('total'))
    .where('org_id', '=', orgId)
    .where('deleted_at', 'is not', null)
    .executeTakeFirstOrThrow()
  return Number(total)
}

export async function insertContact(db: Kysely<Database>, row: InsertableContactRow): Promise<ContactRow> {
  const { columns, names, values } = columnsToWrite(row)
  if (!values.every(isPlainValue))
    return db
      .insertInto('contacts')
      .values(columns as InsertableContactRow)
      .returning(CONTACT_ROW_COLUMNS)
      .executeTakeFirstOrThrow()
  const [inserted] = (await insertOfColumns(names)(db, ...values)).rows
  if (!inserted) throw new Error('an INSERT … RETURNING returned no row')
  return inserted
}

type ContactInsert = (db: Kysely<Database>, ...args: unknown[]) => Promise<QueryResult<ContactRow>>

/**
 * The INSERT of a new contact, compiled once per set of columns, as updates are: on PostgreSQL an
 * unnamed statement is parsed and planned again at every create. New contacts are made by one
 * function (newContactRow), so there are few sets.
 */
const insertOfColumns = (names: readonly string[]): ContactInsert =>
  insertShapes.get(names.join(','), () =>
    preparedQuery(names.length, (db, ...values) =>
      db
        .insertInto('contacts')
        .values(columnsOf(names, values) as InsertableContactRow)
        .returning(CONTACT_ROW_COLUMNS),
    ),
  )

const CONTACT_JSON_COLUMNS: ReadonlySet<string> = new Set(['channels', 'user_attributes', 'custom_fields'])

/** Several new contacts in one statement (the bulk path of batch upserts and imports). */
export async function insertContacts(
  db: Kysely<Database>,
  rows: readonly InsertableContactRow[],
): Promise<void> {
  if (rows.length === 0) return
  if (dialectOf(db) === 'postgres') {
    await insertAsRecordset(db, 'contacts', rows.map(withSearchColumns), CONTACT_JSON_COLUMNS)
    return
  }
  await db.insertInto('contacts').values(rows.map(withSearchColumns)).execute()
}

/**
 * The columns of contacts that SQLite's indexes hold and an update may set (the others are the key,
 * and the times of creation and trashing, which updates never write). A test compares it with the
 * indexes the migrations make.
 */
export const SQLITE_INDEXED_COLUMNS = ['email_normalized', 'external_id'] as const

/**
 * The changes without the indexed columns they would set to the value `stored` already holds.
 * SQLite deletes and inserts the index entry of every indexed column an UPDATE sets, changed or
 * not, which makes one more page of the index to write and checkpoint: a PUT carries the
 * contact's email, and an upsert the email that found the contact, almost always unchanged.
 * PostgreSQL compares the values itself (an unchanged value keeps a HOT update), so there the
 * statement is left as it is, one shape per body.
 */
function withoutUnchangedIndexed(db: Kysely<Database>, changes: UpdateableContactRow, stored: ContactRow) {
  if (dialectOf(db) !== 'sqlite') return changes
  let kept = changes
  for (const column of SQLITE_INDEXED_COLUMNS) {
    if (column in kept && kept[column] === stored[column]) {
      if (kept === changes) kept = { ...changes }
      delete kept[column]
    }
  }
  return kept
}

/** Updates a live contact; `stored` (the row as the transaction read it) spares unchanged writes. */
export async function updateContact(
  db: Kysely<Database>,
  orgId: string,
  id: string,
  changes: UpdateableContactRow,
  stored?: ContactRow,
): Promise<ContactRow | undefined> {
  const written = stored ? withoutUnchangedIndexed(db, changes, stored) : changes
  const { names, values } = columnsToWrite(written)
  if (!values.every(isPlainValue)) return liveContactUpdate(db, orgId, id, written).executeTakeFirst()
  return (await updateOfColumns(names)(db, orgId, id, ...values)).rows[0]
}

/** What a write stores, its search columns included: the names (its shape) and their values. */
function columnsToWrite(changes: UpdateableContactRow | InsertableContactRow) {
  const columns = withSearchColumns(changes) as Record<string, unknown>
  const names = Object.keys(columns).filter((name) => columns[name] !== undefined)
  return { columns: columns as UpdateableContactRow, names, values: names.map((name) => columns[name]) }
}

const columnsOf = (names: readonly string[], values: readonly unknown[]) =>
  Object.fromEntries(names.map((name, i) => [name, values[i]])) as UpdateableContactRow

const isPlainValue = (value: unknown) =>
  value === null || typeof value === 'string' || typeof value === 'number' || typeof value === 'bigint'

type ContactUpdate = (db: Kysely<Database>, ...args: unknown[]) => Promise<QueryResult<ContactRow>>

/**
 * The UPDATE that writes these columns, compiled once per set of columns: building it with the
 * query builder for every PUT cost about as much as SQLite took to run it. A body's fields decide
 * the set, and clients send few distinct ones; the most recently used UPDATE_SHAPES are kept, so
 * that bodies of ever new shapes cannot grow the cache.
 */
const updateOfColumns = (names: readonly string[]): ContactUpdate =>
  updateShapes.get(names.join(','), () =>
    preparedQuery(2 + names.length, (db, orgId, id, ...values) =>
      db
        .updateTable('contacts')
        .set((eb) => ({ ...columnsOf(names, values), version: eb('version', '+', 1) }))
        .where('org_id', '=', orgId as string)
        .where('id', '=', id as string)
        .where('deleted_at', 'is', null)
        .returning(CONTACT_ROW_COLUMNS),
    ),
  )

export const UPDATE_SHAPES = 64
const updateShapes = recentlyUsed<ContactUpdate>(UPDATE_SHAPES)
const insertShapes = recentlyUsed<ContactInsert>(UPDATE_SHAPES)
/** How many compiled UPDATEs are kept (at most UPDATE_SHAPES). */
export const keptUpdateShapes = updateShapes.size

type UpdatedWithPrevious = ContactRow & { previous: ContactRow }

/**
 * PostgreSQL's UPDATE that also returns the row as it was, locked by the CTE that reads it; at
 * the expected version only, when one is given.
 */
const lockedUpdate = (
  db: Kysely<Database>,
  orgId: string,
  id: string,
  columns: UpdateableContactRow,
  expectedVersion: number | undefined,
) =>
  db
    .with('before', (db) =>
      db
        .selectFrom('contacts')
        .selectAll()
        .where('org_id', '=', orgId)
        .where('id', '=', id)
        .where('deleted_at', 'is', null)
        .forUpdate(),
    )
    .updateTable('contacts')
    .from('before')
    .set((eb) => ({ ...columns, version: eb('contacts.version', '+', 1) }))
    .whereRef('contacts.org_id', '=', 'before.org_id')
    .whereRef('contacts.id', '=', 'before.id')
    .$if(expectedVersion !== undefined, (query) =>
      query.where('before.version', '=', expectedVersion as number),
    )
    .returningAll('contacts')
    .returning(sql<ContactRow>`row_to_json(before.*)`.as('previous'))

type LockedUpdate = (db: Kysely<Database>, ...args: unknown[]) => Promise<QueryResult<UpdatedWithPrevious>>

/** lockedUpdate compiled once per set of columns (and with or without a version), as on SQLite. */
const lockedUpdateOfColumns = (names: readonly string[], atVersion: boolean) =>
  lockedUpdateShapes.get(`${atVersion ? 'v' : '-'}${names.join(',')}`, () =>
    atVersion
      ? preparedQuery(3 + names.length, (db, orgId, id, version, ...values) =>
          lockedUpdate(db, orgId as string, id as string, columnsOf(names, values), version as number),
        )
      : preparedQuery(2 + names.length, (db, orgId, id, ...values) =>
          lockedUpdate(db, orgId as string, id as string, columnsOf(names, values), undefined),
        ),
  ) as LockedUpdate

const lockedUpdateShapes = recentlyUsed<LockedUpdate>(UPDATE_SHAPES)

/**
 * Updates a live contact (at the expected version, when given) and returns it as it was before
 * and after. On PostgreSQL this is one statement, the row locked by the CTE that reads it; on
 * SQLite, where the transaction holds the database, a read and an update.
 */
export async function updateContactReturningPrevious(
  trx: Kysely<Database>,
  orgId: string,
  id: string,
  changes: UpdateableContactRow,
  expectedVersion?: number,
): Promise<{ before: ContactRow; row: ContactRow } | undefined> {
  if (dialectOf(trx) === 'postgres') {
    const { columns, names, values } = columnsToWrite(changes)
    const updated = values.every(isPlainValue)
      ? expectedVersion === undefined
        ? (await lockedUpdateOfColumns(names, false)(trx, orgId, id, ...values)).rows[0]
        : (await lockedUpdateOfColumns(names, true)(trx, orgId, id, expectedVersion, ...values)).rows[0]
      : await lockedUpdate(trx, orgId, id, columns, expectedVersion).executeTakeFirst()
    if (!updated) return undefined
    const { previous, ...row } = updated
    return { before: previous, row: row as ContactRow }
  }
  const before = await findContactForUpdate(trx, orgId, id)
  if (!before || (expectedVersion !== undefined && before.version !== expectedVersion)) return undefined
  const row = await updateContact(trx, orgId, id, changes, before)
  return row && { before, row }
}

export async function moveToTrash(
  db: Kysely<Database>,
  orgId: string,
  id: string,
  deletedAt: string,
  trashedIdentities: string,
  expectedVersion?: number,
) {
  let query = db
    .updateTable('contacts')
    .set({ deleted_at: deletedAt, trashed_identities: trashedIdentities })
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .where('deleted_at', 'is', null)
  if (expectedVersion !== undefined) query = query.where('version', '=', expectedVersion)
  return query.returning('id').executeTakeFirst()
}

export async function takeOutOfTrash(db: Kysely<Database>, orgId: string, id: string) {
  return db
    .updateTable('contacts')
    .set({ deleted_at: null, trashed_identities: null })
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .where('deleted_at', 'is not', null)
    .returning(CONTACT_ROW_COLUMNS)
    .executeTakeFirst()
}

/** Removes contacts for good, with every row that refers to them. */
export async function eraseContacts(db: Kysely<Database>, orgId: string, ids: readonly string[]) {
  if (ids.length === 0) return
  await db
    .deleteFrom('contact_identities')
    .where('org_id', '=', orgId)
    .where('contact_id', 'in', ids)
    .execute()
  await db
    .deleteFrom('contact_merges')
    .where('org_id', '=', orgId)
    .where((eb) => eb.or([eb('survivor_id', 'in', ids), eb('merged_id', 'in', ids)]))
    .execute()
  await db.deleteFrom('contacts').where('org_id', '=', orgId).where('id', 'in', ids).execute()
  // Responses kept for idempotent retries may quote the contact; they go too.
  for (const id of ids) {
    await db
      .deleteFrom('idempotency_keys')
      .where('org_id', '=', orgId)
      .where('response_body', 'like', `%${id}%`)
      .execute()
  }
}

export async function findTrashedBefore(db: Kysely<Database>, orgId: string, cutoff: string, limit: number) {
  const rows = await db
    .selectFrom('contacts')
    .select('id')
    .where('org_id', '=', orgId)
    .where('deleted_at', '<', cutoff)
    .limit(limit)
    .execute()
  return rows.map((row) => row.id)
}

/** Updates a live contact only if nobody wrote it since it was read (optimistic concurrency). */
export async function updateContactAtVersion(
  db: Kysely<Database>,
  orgId: string,
  id: string,
  version: number,
  changes: UpdateableContactRow,
): Promise<ContactRow | undefined> {
  return liveContactUpdate(db, orgId, id, changes).where('version', '=', version).executeTakeFirst()
}

/** The UPDATE of a live contact, built by the query builder (for changes that hold expressions). */
const liveContactUpdate = (db: Kysely<Database>, orgId: string, id: string, changes: UpdateableContactRow) =>
  db
    .updateTable('contacts')
    .set((eb) => ({ ...withSearchColumns(changes), version: eb('version', '+', 1) }))
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .where('deleted_at', 'is', null)
    .returning(CONTACT_ROW_COLUMNS)

/** The contacts merged into these (directly or through earlier merges, which are flattened). */
export async function findMergedInto(db: Kysely<Database>, orgId: string, survivorIds: readonly string[]) {
  if (survivorIds.length === 0) return []
  const rows = await db
    .selectFrom('contact_merges')
    .select('merged_id')
    .where('org_id', '=', orgId)
    .where('survivor_id', 'in', [...survivorIds])
    .execute()
  return rows.map((row) => row.merged_id)
}

export async function findMergeSurvivor(db: Kysely<Database>, orgId: string, mergedId: string) {
  const row = await db
    .selectFrom('contact_merges')
    .select('survivor_id')
    .where('org_id', '=', orgId)
    .where('merged_id', '=', mergedId)
    .executeTakeFirst()
  return row?.survivor_id ?? null
}
