import { type Kysely, sql } from 'kysely'
import { findCustomFieldTypesOf } from '../custom-fields/custom-fields.repository.js'
import { insertAsRecordset } from '../db/bulk.js'
import { dialectOf } from '../db/database.js'
import { isUniqueViolation } from '../db/errors.js'
import type { ContactRow, CustomFieldType, Database, InsertableContactRow } from '../db/schema.js'
import { type Actor, recordEvents } from '../events/events.service.js'
import { toHttpError } from '../http/errors.js'
import { validateBody } from '../http/validation.js'
import { CONTACT_ROW_COLUMNS, insertContacts } from './contacts.repository.js'
import { UpsertBody } from './contacts.schemas.js'
import {
  lostIdentityRace,
  newRowOfUpsert,
  type PreparedUpsert,
  prepareUpsert,
  toContact,
  type UpsertMode,
  upsertChanges,
  upsertColumns,
  upsertPrepared,
} from './contacts.service.js'
import { type Identity, identitiesOf } from './identities.js'

export interface BatchItemResult {
  index: number
  /** `unchanged` only in a mode that skips writes which change nothing (imports). */
  status: 'created' | 'updated' | 'unchanged' | 'error'
  id?: string
  error?: { code: string; detail: unknown; existing_id?: string }
}

const atItem = (index: number, loc: (string | number)[]) => ['body', 'contacts', index, ...loc.slice(1)]

/** The outcome of an item that does not match the upsert body's schema, or null when it does. */
function invalidItem(index: number, item: unknown): BatchItemResult | null {
  const issues = validateBody(UpsertBody, item)
  if (issues.length === 0) return null
  return {
    index,
    status: 'error',
    error: {
      code: 'validation_failed',
      detail: issues.map((issue) => ({ ...issue, loc: atItem(index, issue.loc) })),
    },
  }
}

const failure = (index: number, error: unknown): BatchItemResult => {
  const { code, detail, existing_id } = toHttpError(error).body
  const located = Array.isArray(detail)
    ? detail.map((issue) => ({ ...issue, loc: atItem(index, issue.loc) }))
    : detail
  return { index, status: 'error', error: { code, detail: located, ...(existing_id ? { existing_id } : {}) } }
}

/**
 * Up to 1000 upserts in one call, in one transaction with a savepoint per item: the good items
 * are committed together (one commit instead of a thousand), while an item that fails is rolled
 * back to its savepoint alone and reported with its reason. Items are applied in order, so a
 * person listed twice is created by the first and updated by the second.
 */
export async function batchUpsert(db: Kysely<Database>, principal: Actor, items: readonly unknown[]) {
  const { created, updated, failed, results } = await applyBatch(db, principal, items)
  // The API's upsert always writes, so no item comes back unchanged.
  return { created, updated, failed, results: results as (BatchItemResult & { status: ApiItemStatus })[] }
}

type ApiItemStatus = Exclude<BatchItemResult['status'], 'unchanged'>

/** The batch with every option: what imports run, a chunk of rows at a time. */
export async function applyBatch(
  db: Kysely<Database>,
  principal: Actor,
  items: readonly unknown[],
  options: BatchOptions = {},
) {
  // An import's batch (which may skip rows that change nothing) is planned set-wise; the API's
  // takes the set-wise path only when every item is a new person.
  if (options.mode?.skipUnchanged) {
    return applyPreparedBatch(db, principal, await prepareBatch(db, principal, items, options), options)
  }
  const results =
    (await createAllAtOnce(db, principal, items, options)) ??
    (await upsertOneByOne(db, principal, items, options))
  return summarize(results)
}

/** Items prepared between two turns of the event loop (see prepareBatch): a fraction of a millisecond. */
const PREPARE_SLICE = 10

/** A batch whose items are validated and prepared, with no database work done yet. */
export interface PreparedBatch {
  readonly items: readonly unknown[]
  /** The items that cannot be applied, with why. */
  readonly invalid: readonly BatchItemResult[]
  readonly ready: readonly ReadyItem[]
}

/**
 * Validates and prepares a batch's items, all in memory when `options.customFieldTypes` is given:
 * a caller can prepare the next batch while the database applies this one.
 */
export async function prepareBatch(
  db: Kysely<Database>,
  principal: Actor,
  items: readonly unknown[],
  options: BatchOptions,
): Promise<PreparedBatch> {
  const invalid: BatchItemResult[] = []
  const ready: ReadyItem[] = []
  for (const [index, item] of items.entries()) {
    // Lets replies from the database in between, so that a batch being applied meanwhile goes
    // on with its next statement instead of waiting for the whole of this one to be prepared.
    if (index % PREPARE_SLICE === PREPARE_SLICE - 1) await new Promise(setImmediate)
    const prepared = await readyItem(db, principal, index, item, options)
    if ('status' in prepared) invalid.push(prepared)
    else ready.push(prepared)
  }
  return { items, invalid, ready }
}

/** A prepared batch, planned set-wise as an import applies it (see applyPlanned). */
export async function applyPreparedBatch(
  db: Kysely<Database>,
  principal: Actor,
  batch: PreparedBatch,
  options: BatchOptions,
) {
  const results =
    (await applyPlanned(db, principal, batch, options)) ??
    (await upsertOneByOne(db, principal, batch.items, options))
  return summarize(results)
}

function summarize(results: BatchItemResult[]) {
  const count = (status: BatchItemResult['status']) => results.filter((r) => r.status === status).length
  return {
    created: count('created'),
    updated: count('updated'),
    unchanged: count('unchanged'),
    failed: count('error'),
    results,
  }
}

export interface BatchOptions {
  mode?: UpsertMode
  /** Apply everything, then roll it back: exactly what would happen, with nothing written. */
  dryRun?: boolean
  /** The organization's custom field definitions, when the caller has loaded them already. */
  customFieldTypes?: ReadonlyMap<string, CustomFieldType>
  /** Runs inside the batch's transaction just before it commits (not in a dry run). */
  beforeCommit?: (trx: Kysely<Database>, results: readonly BatchItemResult[]) => Promise<void>
}

type OpenTransaction = Awaited<ReturnType<ReturnType<Kysely<Database>['startTransaction']>['execute']>>

/** Commits the batch (after beforeCommit), or rolls it back in a dry run or on any failure. */
async function finish(
  trx: OpenTransaction,
  options: BatchOptions,
  results: readonly BatchItemResult[],
): Promise<void> {
  if (options.dryRun) {
    await trx.rollback().execute()
    return
  }
  try {
    await options.beforeCommit?.(trx, results)
  } catch (error) {
    await trx.rollback().execute()
    throw error
  }
  await trx.commit().execute()
}

const CHUNK = 500

/**
 * The common bulk load (every item a new person, no two items the same person) done set-wise:
 * multi-row inserts in one transaction. Returns null when the batch is not of that kind, or when
 * an identity it would insert is held by a contact already (or was taken meanwhile by a
 * concurrent writer): the caller then applies it item by item, with the same results the
 * item-by-item path always gives.
 */
async function createAllAtOnce(
  db: Kysely<Database>,
  principal: Actor,
  items: readonly unknown[],
  options: BatchOptions,
): Promise<BatchItemResult[] | null> {
  return dialectOf(db) === 'postgres'
    ? createAllAtOnceStreamed(db, principal, items, options)
    : createAllAtOnceChecked(db, principal, items, options)
}

/** Whether an item is a person the batch has not seen yet (noting its identities if so). */
function isNewPerson(ready: ReadyItem, seen: Set<string>): boolean {
  // The identities the item looks up are among those its new row holds (email, telephone,
  // external id), so the row's are the ones to check and to insert.
  const keys = ready.identities.map(keyOf)
  // The same person twice in one batch: the second item updates what the first creates.
  if (keys.some((key) => seen.has(key))) return false
  for (const key of keys) seen.add(key)
  return true
}

const createdResults = (results: BatchItemResult[], rows: readonly ReadyItem[]) => {
  for (const { index, row } of rows) results.push({ index, status: 'created', id: row.id as string })
  return results.sort((a, b) => a.index - b.index)
}

/** SQLite: every item prepared, one lookup of all their identities, then the inserts. */
async function createAllAtOnceChecked(
  db: Kysely<Database>,
  principal: Actor,
  items: readonly unknown[],
  options: BatchOptions,
): Promise<BatchItemResult[] | null> {
  const results: BatchItemResult[] = []
  const rows: ReadyItem[] = []
  const seen = new Set<string>()
  for (const [index, item] of items.entries()) {
    const ready = await readyItem(db, principal, index, item, options)
    if ('status' in ready) results.push(ready)
    else if (isNewPerson(ready, seen)) rows.push(ready)
    else return null
  }
  if (rows.length === 0) return null
  const everyIdentity = rows.flatMap((r) => r.identities)
  if ((await holdersOf(db, principal.orgId, everyIdentity)).size > 0) return null
  const trx = await db.startTransaction().execute()
  try {
    await insertNewContacts(trx, principal, rows)
  } catch (error) {
    await trx.rollback().execute()
    if (isUniqueViolation(error)) return null
    throw error
  }
  await finish(trx, options, createdResults(results, rows))
  return results
}

/**
 * New contacts a PostgreSQL statement inserts at a time: while PostgreSQL inserts these, the
 * server prepares the next ones. With the whole batch prepared first and then inserted in one
 * statement per table, each side was idle while the other worked.
 */
const STREAMED_ROWS = 250

/**
 * PostgreSQL: the items go out STREAMED_ROWS at a time as they are prepared, in a transaction
 * begun first, without looking their identities up beforehand: the identities' unique key refuses
 * one that a contact holds already, and the transaction is rolled back. A batch of new people,
 * the common bulk load, so costs no lookup; one that names an existing person costs the rows
 * inserted before the refusal, on top of the item-by-item path it takes anyway.
 */
async function createAllAtOnceStreamed(
  db: Kysely<Database>,
  principal: Actor,
  items: readonly unknown[],
  options: BatchOptions,
): Promise<BatchItemResult[] | null> {
  // Loaded before the transaction begins: preparing an item must not need a second connection
  // while the transaction holds one (a full pool would then wait for itself).
  const customFieldTypes = options.customFieldTypes ?? (await findCustomFieldTypesOf(db, principal.orgId))
  const prepareWith = { ...options, customFieldTypes }
  const results: BatchItemResult[] = []
  const rows: ReadyItem[] = []
  const seen = new Set<string>()
  const trx = await db.startTransaction().execute()
  const inserts = pipelinedInserts(trx, principal)
  try {
    let sent = 0
    for (const [index, item] of items.entries()) {
      // Lets the connection's answers in, so that its next statement goes out meanwhile.
      if (index % PREPARE_SLICE === PREPARE_SLICE - 1) await new Promise(setImmediate)
      const ready = await readyItem(db, principal, index, item, prepareWith)
      if ('status' in ready) {
        results.push(ready)
        continue
      }
      if (!isNewPerson(ready, seen)) {
        await trx.rollback().execute()
        return null
      }
      rows.push(ready)
      if (rows.length - sent === STREAMED_ROWS) {
        await inserts.send(rows.slice(sent))
        sent = rows.length
      }
    }
    if (rows.length === 0) {
      await trx.rollback().execute()
      return null
    }
    await inserts.send(rows.slice(sent))
    await inserts.allDone()
  } catch (error) {
    await trx.rollback().execute()
    if (isUniqueViolation(error)) return null
    throw error
  }
  await finish(trx, options, createdResults(results, rows))
  return results
}

/** New contacts, their identities and their `contact.created` events, in multi-row statements. */
async function insertNewContacts(trx: Kysely<Database>, actor: Actor, rows: readonly NewPersonRows[]) {
  if (dialectOf(trx) === 'postgres') {
    // One statement per table: an import prepares its next batch while this one is applied.
    const inserts = pipelinedInserts(trx, actor)
    await inserts.send(rows)
    await inserts.allDone()
    return
  }
  // SQLite's parameters are limited per statement.
  for (let i = 0; i < rows.length; i += CHUNK) {
    await insertContacts(
      trx,
      rows.slice(i, i + CHUNK).map((r) => r.row),
    )
  }
  const identityRows = identityRowsOf(actor, rows)
  for (let i = 0; i < identityRows.length; i += CHUNK) {
    await trx
      .insertInto('contact_identities')
      .values(identityRows.slice(i, i + CHUNK))
      .execute()
  }
  await recordEvents(trx, actor, rows.map(createdEventOf))
}

/** A new person's contact row and the identities it holds. */
interface NewPersonRows {
  row: InsertableContactRow
  identities: readonly Identity[]
}

/**
 * PostgreSQL statements inserting new contacts, their identities and their events, each sent as
 * soon as it is made (one statement per table for the rows of each send, the rows in one JSON
 * parameter): the transaction's connection runs them in order while the thread makes the next.
 * allDone throws the first failure (a unique violation when an identity is held); the statements
 * behind it fail with the transaction.
 */
function pipelinedInserts(trx: Kysely<Database>, actor: Actor) {
  const sent: Promise<unknown>[] = []
  // A statement reaches the connection only once the thread lets its promises run.
  const send = async (statement: () => Promise<unknown>) => {
    const running = statement()
    // Settled here too: one failing before the others are sent must not go unhandled meanwhile.
    running.catch(() => {})
    sent.push(running)
    await new Promise(setImmediate)
  }
  return {
    async send(rows: readonly NewPersonRows[]) {
      if (rows.length === 0) return
      await send(() =>
        insertContacts(
          trx,
          rows.map((r) => r.row),
        ),
      )
      await send(() => insertAsRecordset(trx, 'contact_identities', identityRowsOf(actor, rows)))
      await send(() => recordEvents(trx, actor, rows.map(createdEventOf)))
    },
    async allDone() {
      const failure = (await Promise.allSettled(sent)).find((outcome) => outcome.status === 'rejected')
      if (failure) throw failure.reason
    },
  }
}

const identityRowsOf = (actor: Actor, rows: readonly NewPersonRows[]) =>
  rows.flatMap(({ row, identities }) =>
    identities.map((identity) => ({
      org_id: actor.orgId,
      ...identity,
      contact_id: row.id as string,
      origin: 'field' as const,
    })),
  )

const createdEventOf = ({ row }: { row: InsertableContactRow }) => ({
  type: 'contact.created' as const,
  contact: toContact({ ...row, version: 1 } as ContactRow),
})

const keyOf = (identity: Identity) => `${identity.kind}\u0000${identity.value}`

interface ReadyItem {
  index: number
  prepared: PreparedUpsert
  /** The row the item creates if it matches no contact. */
  row: InsertableContactRow
  /** The identities that row holds. */
  identities: Identity[]
  /** Those and the identities the item looks up, as keyOf. */
  keys: string[]
}

/** An item validated and prepared, or the result that says why it cannot be applied. */
async function readyItem(
  db: Kysely<Database>,
  actor: Actor,
  index: number,
  item: unknown,
  options: BatchOptions,
): Promise<ReadyItem | BatchItemResult> {
  const invalid = invalidItem(index, item)
  if (invalid) return invalid
  let prepared: PreparedUpsert
  try {
    prepared = await prepareUpsert(db, actor, {}, item as UpsertBody, 'item', options.customFieldTypes)
  } catch (error) {
    return failure(index, error)
  }
  const row = newRowOfUpsert(actor.orgId, prepared)
  const identities = identitiesOf({
    email: row.email ?? null,
    channels: JSON.parse(row.channels as string) as Record<string, unknown>,
    external_id: row.external_id ?? null,
  })
  const keys = [...new Set([...prepared.lookup, ...identities].map(keyOf))]
  return { index, prepared, row, identities, keys }
}

/**
 * A batch as an import applies it, sorted in three kinds with a few set-wise reads: rows of new
 * people (inserted together), rows that would change nothing (no write at all: the common case
 * of a file imported again), and the rest (rows that change a contact, or that share a person
 * with another row of the batch), applied one by one in file order with a savepoint each.
 * Returns null when a concurrent writer took an identity meanwhile; the caller then applies the
 * batch one by one.
 */
async function applyPlanned(
  db: Kysely<Database>,
  actor: Actor,
  { invalid, ready }: PreparedBatch,
  options: BatchOptions,
): Promise<BatchItemResult[] | null> {
  const mode = options.mode ?? {}
  const results: BatchItemResult[] = [...invalid]
  const uses = new Map<string, number>()
  for (const item of ready) for (const key of item.keys) uses.set(key, (uses.get(key) ?? 0) + 1)
  const oneByOne: ReadyItem[] = []
  const independent: ReadyItem[] = []
  for (const item of ready) {
    if (item.keys.some((key) => (uses.get(key) ?? 0) > 1)) oneByOne.push(item)
    else independent.push(item)
  }
  const held = await holdersOf(
    db,
    actor.orgId,
    independent.flatMap((item) => [...item.prepared.lookup, ...item.identities]),
  )
  const created: ReadyItem[] = []
  const candidates: { item: ReadyItem; contactId: string; found: Identity[] }[] = []
  for (const item of independent) {
    const found = item.prepared.lookup.filter((identity) => held.has(keyOf(identity)))
    const contactIds = new Set(found.map((identity) => held.get(keyOf(identity))))
    if (contactIds.size === 1) {
      candidates.push({ item, contactId: [...contactIds][0] as string, found })
    } else if (contactIds.size === 0 && !item.identities.some((identity) => held.has(keyOf(identity)))) {
      created.push(item)
    } else oneByOne.push(item) // The upsert itself says which contact holds what.
  }
  const perContact = new Map<string, number>()
  for (const { contactId } of candidates) perContact.set(contactId, (perContact.get(contactId) ?? 0) + 1)
  const existing = await findContactsByIds(db, actor.orgId, [...perContact.keys()])
  for (const { item, contactId, found } of candidates) {
    const contact = existing.get(contactId)
    if (contact && (perContact.get(contactId) ?? 0) === 1) {
      const columns = upsertColumns(item.prepared, contact, found, mode)
      if (!upsertChanges(contact, columns)) {
        results.push({ index: item.index, status: 'unchanged', id: contactId })
        continue
      }
    }
    oneByOne.push(item)
  }
  oneByOne.sort((a, b) => a.index - b.index)
  const trx = await db.startTransaction().execute()
  try {
    await insertNewContacts(trx, actor, created)
    for (const item of created)
      results.push({ index: item.index, status: 'created', id: item.row.id as string })
    for (const item of oneByOne)
      results.push(await upsertPreparedItem(trx, actor, item.index, item.prepared, options))
  } catch (error) {
    await trx.rollback().execute()
    if (isUniqueViolation(error)) return null
    throw error
  }
  results.sort((a, b) => a.index - b.index)
  await finish(trx, options, results)
  return results
}

/** Which contact holds each of these identities (keyed as keyOf), for those that are held. */
async function holdersOf(db: Kysely<Database>, orgId: string, identities: readonly Identity[]) {
  const held = new Map<string, string>()
  if (dialectOf(db) === 'postgres') {
    // One read for them all, the identities as two array parameters, not a list of parameters.
    const distinct = [...new Map(identities.map((identity) => [keyOf(identity), identity])).values()]
    if (distinct.length === 0) return held
    const rows = await db
      .selectFrom('contact_identities')
      .select(['kind', 'value', 'contact_id'])
      .where('org_id', '=', orgId)
      .where(
        sql<boolean>`(kind, value) in (select * from unnest(${distinct.map((i) => i.kind)}::text[], ${distinct.map((i) => i.value)}::text[]))`,
      )
      .execute()
    for (const row of rows) held.set(keyOf(row), row.contact_id)
    return held
  }
  for (const kind of ['email', 'phone', 'external_id'] as const) {
    const values = [
      ...new Set(identities.filter((identity) => identity.kind === kind).map((identity) => identity.value)),
    ]
    for (let i = 0; i < values.length; i += CHUNK) {
      const rows = await db
        .selectFrom('contact_identities')
        .select(['value', 'contact_id'])
        .where('org_id', '=', orgId)
        .where('kind', '=', kind)
        .where('value', 'in', values.slice(i, i + CHUNK))
        .execute()
      for (const row of rows) held.set(keyOf({ kind, value: row.value }), row.contact_id)
    }
  }
  return held
}

async function findContactsByIds(db: Kysely<Database>, orgId: string, ids: readonly string[]) {
  const found = new Map<string, ContactRow>()
  if (dialectOf(db) === 'postgres' && ids.length > 0) {
    const rows = await db
      .selectFrom('contacts')
      .select(CONTACT_ROW_COLUMNS)
      .where('org_id', '=', orgId)
      .where('id', '=', sql<string>`any(${ids}::uuid[])`)
      .where('deleted_at', 'is', null)
      .execute()
    for (const row of rows) found.set(row.id, row)
    return found
  }
  for (let i = 0; i < ids.length; i += CHUNK) {
    const rows = await db
      .selectFrom('contacts')
      .select(CONTACT_ROW_COLUMNS)
      .where('org_id', '=', orgId)
      .where('id', 'in', ids.slice(i, i + CHUNK))
      .where('deleted_at', 'is', null)
      .execute()
    for (const row of rows) found.set(row.id, row)
  }
  return found
}

async function upsertOneByOne(
  db: Kysely<Database>,
  principal: Actor,
  items: readonly unknown[],
  options: BatchOptions,
) {
  const results: BatchItemResult[] = []
  const trx = await db.startTransaction().execute()
  try {
    for (const [index, item] of items.entries()) {
      const invalid = invalidItem(index, item)
      if (invalid) {
        results.push(invalid)
        continue
      }
      results.push(await upsertItem(trx, principal, index, item as UpsertBody, options))
    }
  } catch (error) {
    await trx.rollback().execute()
    throw error
  }
  await finish(trx, options, results)
  return results
}

async function upsertItem(
  trx: OpenTransaction,
  principal: Actor,
  index: number,
  item: UpsertBody,
  options: BatchOptions,
): Promise<BatchItemResult> {
  let prepared: Awaited<ReturnType<typeof prepareUpsert>>
  try {
    prepared = await prepareUpsert(trx, principal, {}, item, 'item', options.customFieldTypes)
  } catch (error) {
    return failure(index, error)
  }
  return upsertPreparedItem(trx, principal, index, prepared, options)
}

async function upsertPreparedItem(
  trx: OpenTransaction,
  principal: Actor,
  index: number,
  prepared: PreparedUpsert,
  options: BatchOptions,
): Promise<BatchItemResult> {
  for (let attempt = 1; ; attempt++) {
    const savepoint = await trx.savepoint('batch_item').execute()
    try {
      const { created, changed, contact } = await upsertPrepared(savepoint, principal, prepared, options.mode)
      await savepoint.releaseSavepoint('batch_item').execute()
      const status = created ? 'created' : changed ? 'updated' : 'unchanged'
      return { index, status, id: contact.id }
    } catch (error) {
      await savepoint.rollbackToSavepoint('batch_item').execute()
      // A concurrent writer took one of the identities: the retry finds and updates its contact.
      if (lostIdentityRace(error) && attempt < 3) continue
      return failure(index, error)
    }
  }
}
