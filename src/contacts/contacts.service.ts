import type { Kysely } from 'kysely'
import type { Principal } from '../api-keys/api-keys.service.js'
import { assertCustomFieldTypes } from '../custom-fields/custom-fields.service.js'
import { isUniqueViolation } from '../db/errors.js'
import type {
  ContactRow,
  CustomFieldType,
  Database,
  InsertableContactRow,
  UpdateableContactRow,
} from '../db/schema.js'
import { AppError, notFound, ValidationFailedError, type ValidationIssue } from '../errors.js'
import type { HistoryQuery } from '../events/events.schemas.js'
import {
  type Actor,
  changesBetween,
  contactHistory as historyOf,
  recordEvent,
  recordEvents,
  redactHistory,
  systemActor,
} from '../events/events.service.js'
import type { VersionCondition } from '../http/etag.js'
import { type CursorCodec, queryKeyOf } from '../shared/cursor.js'
import { isUuid, uuidv7 } from '../shared/ids.js'
import { assertJsonBounded } from '../shared/json-bounds.js'
import { pageTimeOrderedList, type TimeOrderedList } from '../shared/list-paging.js'
import {
  type ListPagingQuery,
  offsetOf,
  type PageOf,
  type PaginationQuery,
  pageOf,
} from '../shared/schemas.js'
import { assertOwnOrganization } from '../shared/tenancy.js'
import { formatNullableTimestamp, formatTimestamp, nowTimestamp, parseDateTime } from '../shared/time.js'
import type { LISTED_COLUMNS } from './contacts.repository.js'
import * as contacts from './contacts.repository.js'
import type {
  Contact,
  ContactPatchBody,
  ContactUpdateBody,
  TrashedContact,
  UpsertBody,
  UpsertQuery,
} from './contacts.schemas.js'
import {
  conflictAfterRace,
  findIdentityHolders,
  type Identity,
  IdentityConflictError,
  identitiesHeldBy,
  identitiesOf,
  moveFieldIdentities,
  normalizeEmail,
  releaseIdentities,
  sameIdentitySources,
} from './identities.js'
import { normalizePhone } from './phone.js'

type JsonObject = Record<string, unknown>

export const parseJsonObject = (value: JsonObject | string): JsonObject =>
  typeof value === 'string' ? (JSON.parse(value) as JsonObject) : value

/**
 * A contact with its version, which every write bumps. The version travels as the ETag header;
 * the response schemas leave it out of the body, so the original shape is kept.
 */
export type VersionedContact = Contact & { version: number }

/**
 * The columns a contact is made of: what lists and exports read (LISTED_COLUMNS), so that a column
 * the contact comes to need cannot be missing from their pages; a full row has them all.
 */
type ContactColumns = Pick<ContactRow, (typeof LISTED_COLUMNS)[number]>

/** The one place where a stored row becomes the API's contact (and backend differences vanish). */
export function toContact(row: ContactColumns): VersionedContact {
  return {
    version: row.version,
    first_name: row.first_name,
    last_name: row.last_name,
    email: row.email,
    channels: parseJsonObject(row.channels),
    user_attributes: parseJsonObject(row.user_attributes),
    last_seen: formatNullableTimestamp(row.last_seen),
    last_sent: formatNullableTimestamp(row.last_sent),
    org_id: row.org_id,
    first_assistant_id: row.first_assistant_id,
    last_assistant_id: row.last_assistant_id,
    first_widget_id: row.first_widget_id,
    last_widget_id: row.last_widget_id,
    custom_fields: parseJsonObject(row.custom_fields),
    id: row.id,
    created_at: formatTimestamp(row.created_at),
    updated_at: formatTimestamp(row.updated_at),
    external_id: row.external_id,
  }
}

const UUID_COLUMNS = ['first_assistant_id', 'last_assistant_id', 'first_widget_id', 'last_widget_id'] as const
const TIMESTAMP_COLUMNS = ['last_seen', 'last_sent'] as const
const OBJECT_COLUMNS = ['channels', 'user_attributes', 'custom_fields'] as const
const IDENTITY_COLUMNS = ['email', 'channels', 'external_id'] as const

/**
 * Turns the fields present in a validated body into column values. Absent fields are left out
 * (they keep their stored value), null clears, objects replace. Checks that JSON Schema cannot
 * express (nesting depth, real calendar dates, custom field types) happen here, before any write.
 */
async function columnsFromInput(
  db: Kysely<Database>,
  orgId: string,
  input: ContactUpdateBody,
  loc: string,
  customFieldTypes?: ReadonlyMap<string, CustomFieldType>,
): Promise<UpdateableContactRow> {
  const columns: UpdateableContactRow = {}
  const issues: ValidationIssue[] = []
  if (input.first_name !== undefined) columns.first_name = input.first_name
  if (input.last_name !== undefined) columns.last_name = input.last_name
  if (input.email !== undefined) {
    columns.email = input.email
    columns.email_normalized = normalizeEmail(input.email)
  }
  if (input.external_id !== undefined)
    columns.external_id = input.external_id === '' ? null : input.external_id
  for (const column of UUID_COLUMNS) {
    const value = input[column]
    if (value !== undefined) columns[column] = value === null ? null : value.toLowerCase()
  }
  for (const column of TIMESTAMP_COLUMNS) {
    const value = input[column]
    if (value === undefined) continue
    const time = value === null ? null : parseDateTime(value)
    if (value !== null && time === null) {
      issues.push({ loc: [loc, column], msg: 'Input should be a valid datetime', type: 'datetime_parsing' })
    } else columns[column] = time === null ? null : time.toISOString()
  }
  for (const column of OBJECT_COLUMNS) {
    const value = input[column]
    if (value === undefined) continue
    const object = value ?? {}
    assertJsonBounded(object, [loc, column])
    if (column === 'custom_fields')
      await assertCustomFieldTypes(db, orgId, object, [loc, column], customFieldTypes)
    columns[column] = JSON.stringify(object)
  }
  if (issues.length > 0) throw new ValidationFailedError(issues)
  return columns
}

const touchesIdentities = (columns: UpdateableContactRow) =>
  IDENTITY_COLUMNS.some((column) => column in columns)

/**
 * Brings a changed contact's identity rows in step with its fields. Every committed write leaves
 * the rows derived from the fields, so while the fields identities come from keep their text the
 * rows are already right, and the common update (a name, attributes, another channel) writes
 * nothing more. Otherwise what the previous fields gave is replaced by what the new ones give.
 */
async function keepIdentitiesInStep(trx: Kysely<Database>, before: Contact, after: Contact) {
  if (sameIdentitySources(before, after)) return
  await moveFieldIdentities(trx, after.org_id, after.id, before, after)
}

/** The identities a body sets (those it does not mention are not known without reading the row). */
const identitiesOfInput = (input: ContactUpdateBody) =>
  identitiesOf({
    email: input.email ?? null,
    channels: input.channels ?? {},
    external_id: input.external_id ?? null,
  })

export function newContactRow(orgId: string, columns: UpdateableContactRow): InsertableContactRow {
  const now = nowTimestamp()
  return {
    first_name: null,
    last_name: null,
    email: null,
    email_normalized: null,
    external_id: null,
    channels: '{}',
    user_attributes: '{}',
    custom_fields: '{}',
    last_seen: null,
    last_sent: null,
    first_assistant_id: null,
    last_assistant_id: null,
    first_widget_id: null,
    last_widget_id: null,
    deleted_at: null,
    trashed_identities: null,
    ...columns,
    org_id: orgId,
    id: uuidv7(),
    created_at: now,
    updated_at: now,
  }
}

/** 404 for an id with no live contact, naming the survivor when it was merged away. */
async function missingContact(db: Kysely<Database>, orgId: string, id: string): Promise<AppError> {
  const survivor = isUuid(id) ? await contacts.findMergeSurvivor(db, orgId, id.toLowerCase()) : null
  if (survivor) {
    return new AppError('contact_merged', 'Contact was merged into another contact', {
      merged_into: survivor,
    })
  }
  return notFound('contact_not_found', 'Contact')
}

/**
 * Runs a write that changes identities. A unique violation means another writer took one of
 * them between our check and our insert; the client gets the 409 it would have got a moment later.
 */
async function withIdentityRace<T>(
  db: Kysely<Database>,
  orgId: string,
  contactId: string | null,
  desired: () => Identity[],
  write: () => Promise<T>,
): Promise<T> {
  try {
    return await write()
  } catch (error) {
    if (!isUniqueViolation(error)) throw error
    throw (await conflictAfterRace(db, orgId, contactId, desired())) ?? error
  }
}

async function insertWithIdentities(trx: Kysely<Database>, actor: Actor, row: InsertableContactRow) {
  const inserted = await contacts.insertContact(trx, row)
  const contact = toContact(inserted)
  await moveFieldIdentities(trx, inserted.org_id, inserted.id, null, contact)
  await recordEvent(trx, actor, { type: 'contact.created', contact })
  return contact
}

export async function createContact(
  db: Kysely<Database>,
  principal: Principal,
  input: ContactUpdateBody,
): Promise<VersionedContact> {
  assertOwnOrganization(principal, input.org_id)
  const columns = await columnsFromInput(db, principal.orgId, input, 'body')
  const row = newContactRow(principal.orgId, columns)
  return withIdentityRace(
    db,
    principal.orgId,
    null,
    () => identitiesOfInput(input),
    () => db.transaction().execute((trx) => insertWithIdentities(trx, principal, row)),
  )
}

export async function getContact(db: Kysely<Database>, orgId: string, id: string): Promise<VersionedContact> {
  const row = await contacts.findContactById(db, orgId, id.toLowerCase())
  if (!row) throw await missingContact(db, orgId, id)
  return toContact(row)
}

export async function listContacts(
  db: Kysely<Database>,
  orgId: string,
  pagination: PaginationQuery,
): Promise<PageOf<Contact>> {
  const [rows, total] = await Promise.all([
    contacts.listContacts(db, orgId, pagination.size, offsetOf(pagination)),
    contacts.countContacts(db, orgId),
  ])
  return pageOf(rows.map(toContact), total, pagination)
}

/**
 * Applies changes to a live contact, keeps its identities in step and records the event, in one
 * transaction. Nothing is written (undefined) when the contact is gone or not at the version expected.
 */
async function applyChanges(
  db: Kysely<Database>,
  actor: Actor,
  id: string,
  columns: UpdateableContactRow,
  expectedVersion?: number,
): Promise<ContactRow | undefined> {
  const orgId = actor.orgId
  columns.updated_at = nowTimestamp()
  return db.transaction().execute(async (trx) => {
    const updated = await contacts.updateContactReturningPrevious(trx, orgId, id, columns, expectedVersion)
    if (!updated) return undefined
    const { before, row } = updated
    const contact = toContact(row)
    const previous = toContact(before)
    if (touchesIdentities(columns)) await keepIdentitiesInStep(trx, previous, contact)
    await recordEvent(trx, actor, { type: 'contact.updated', before: previous, contact })
    return row
  })
}

const preconditionFailed = () =>
  new AppError('precondition_failed', 'The contact has changed since the version named in If-Match')

/**
 * The version a conditional write must find, from If-Match: none for an unconditional write (or
 * `*`), the one named, or (for a list) the current one if it is listed. A write then succeeds
 * only if the stored version is still that one, checked in the same statement as the write.
 */
async function expectedVersion(
  db: Kysely<Database>,
  orgId: string,
  id: string,
  condition: VersionCondition | undefined,
): Promise<number | undefined> {
  if (condition === undefined || condition === '*') return undefined
  if (condition.length === 1) return condition[0]
  const current = await contacts.findContactById(db, orgId, id)
  if (!current) throw await missingContact(db, orgId, id)
  if (!condition.includes(current.version)) throw preconditionFailed()
  return current.version
}

/** Why a write found no row: the contact is gone (404), or its version moved on (412). */
async function refusedWrite(db: Kysely<Database>, orgId: string, id: string, expected: number | undefined) {
  if (expected !== undefined && (await contacts.findContactById(db, orgId, id))) return preconditionFailed()
  return missingContact(db, orgId, id)
}

/** The seed's PUT: a partial update of the fields present in the body; objects replace. */
export async function updateContact(
  db: Kysely<Database>,
  principal: Principal,
  id: string,
  input: ContactUpdateBody,
  ifMatch?: VersionCondition,
): Promise<VersionedContact> {
  assertOwnOrganization(principal, input.org_id)
  const contactId = id.toLowerCase()
  const columns = await columnsFromInput(db, principal.orgId, input, 'body')
  const expected = await expectedVersion(db, principal.orgId, contactId, ifMatch)
  if (Object.keys(columns).length === 0) {
    const current = await getContact(db, principal.orgId, contactId)
    if (expected !== undefined && current.version !== expected) throw preconditionFailed()
    return current
  }
  const row = await withIdentityRace(
    db,
    principal.orgId,
    contactId,
    () => identitiesOfInput(input),
    () => applyChanges(db, principal, contactId, columns, expected),
  )
  if (!row) throw await refusedWrite(db, principal.orgId, contactId, expected)
  return toContact(row)
}

/** RFC 7396: null removes a member, objects merge recursively, anything else replaces. */
export function applyMergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch
  const result: JsonObject =
    target !== null && typeof target === 'object' && !Array.isArray(target)
      ? { ...(target as JsonObject) }
      : {}
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key]
    else result[key] = applyMergePatch(result[key], value)
  }
  return result
}

const PATCH_ATTEMPTS = 25
const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * PATCH with a JSON merge patch: omitted members are kept, null clears (an object field becomes
 * {}), and channels, user_attributes and custom_fields are merged key by key, so a client can set
 * one custom field without reading the contact first. The merge is computed on the stored
 * version and written only if that version is still current; otherwise it is recomputed.
 */
export async function patchContact(
  db: Kysely<Database>,
  principal: Principal,
  id: string,
  patch: ContactPatchBody,
  ifMatch?: VersionCondition,
): Promise<VersionedContact> {
  assertOwnOrganization(principal, patch.org_id)
  // Merging is recursive: a patch nested deeper than any stored object can be is refused first.
  for (const column of OBJECT_COLUMNS) {
    if (patch[column] !== undefined && patch[column] !== null)
      assertJsonBounded(patch[column], ['body', column])
  }
  const contactId = id.toLowerCase()
  for (let attempt = 1; attempt <= PATCH_ATTEMPTS; attempt++) {
    const current = await contacts.findContactById(db, principal.orgId, contactId)
    if (!current) throw await missingContact(db, principal.orgId, contactId)
    // With If-Match the client asked for this version only: no silent re-merge onto a newer one.
    if (Array.isArray(ifMatch) && !ifMatch.includes(current.version)) throw preconditionFailed()
    const input: ContactUpdateBody = { ...patch }
    for (const column of OBJECT_COLUMNS) {
      const value = patch[column]
      if (value !== undefined) {
        input[column] =
          value === null ? {} : (applyMergePatch(parseJsonObject(current[column]), value) as JsonObject)
      }
    }
    const columns = await columnsFromInput(db, principal.orgId, input, 'body')
    if (Object.keys(columns).length === 0) return toContact(current)
    const row = await withIdentityRace(
      db,
      principal.orgId,
      contactId,
      () => identitiesOfInput(input),
      () => applyChanges(db, principal, contactId, columns, current.version),
    )
    if (row) return toContact(row)
    if (Array.isArray(ifMatch)) throw preconditionFailed()
    // Lost a race with another writer: back off a little, at random, before re-reading.
    await pause(Math.random() * 2 * attempt)
  }
  throw new AppError('conflict', 'The contact kept changing while the patch was applied; retry it')
}

/** Moves a live contact (locked by the caller) to the trash and frees its identities for others. */
async function trash(trx: Kysely<Database>, actor: Actor, row: ContactRow): Promise<void> {
  const held = await identitiesHeldBy(trx, actor.orgId, row.id)
  await contacts.moveToTrash(trx, actor.orgId, row.id, nowTimestamp(), JSON.stringify(held))
  await releaseIdentities(trx, actor.orgId, [row.id])
  await recordEvent(trx, actor, { type: 'contact.deleted', contact: toContact(row) })
}

export async function deleteContact(
  db: Kysely<Database>,
  actor: Actor,
  id: string,
  ifMatch?: VersionCondition,
): Promise<{ id: string }> {
  const { orgId } = actor
  const contactId = id.toLowerCase()
  const expected = await expectedVersion(db, orgId, contactId, ifMatch)
  const deleted = await db.transaction().execute(async (trx) => {
    const row = await contacts.findContactForUpdate(trx, orgId, contactId)
    if (!row || (expected !== undefined && row.version !== expected)) return false
    await trash(trx, actor, row)
    return true
  })
  if (!deleted) throw await refusedWrite(db, orgId, contactId, expected)
  return { id: contactId }
}

export async function deleteContacts(db: Kysely<Database>, actor: Actor, ids: readonly string[]) {
  const requested = [...new Set(ids.map((id) => id.toLowerCase()))]
  const deleted = await db.transaction().execute(async (trx) => {
    const live = await contacts.findLiveContacts(trx, actor.orgId, requested, { lock: true })
    for (const row of live) await trash(trx, actor, row)
    return new Set(live.map((row) => row.id))
  })
  return { deleted: deleted.size, not_found: requested.filter((id) => !deleted.has(id)) }
}

/**
 * Brings a contact back from the trash exactly as it was, with the identities it held. If
 * another contact has taken one of them meanwhile, nothing is restored (409 naming that contact).
 */
export async function restoreContact(
  db: Kysely<Database>,
  actor: Actor,
  id: string,
): Promise<VersionedContact> {
  const { orgId } = actor
  const contactId = id.toLowerCase()
  return db.transaction().execute(async (trx) => {
    const row = await contacts.findContactForUpdate(trx, orgId, contactId, { includeTrash: true })
    if (!row) throw await missingContact(trx, orgId, contactId)
    if (row.deleted_at === null) throw new AppError('contact_not_in_trash', 'The contact is not in the trash')
    const held = JSON.parse(row.trashed_identities ?? '[]') as (Identity & { origin: 'field' | 'merged' })[]
    const taken = (await findIdentityHolders(trx, orgId, held))[0]
    if (taken) throw new IdentityConflictError(taken, taken.contact_id)
    if (held.length > 0) {
      await trx
        .insertInto('contact_identities')
        .values(held.map((identity) => ({ org_id: orgId, contact_id: contactId, ...identity })))
        .execute()
    }
    const restored = await contacts.takeOutOfTrash(trx, orgId, contactId)
    if (!restored) throw notFound('contact_not_found', 'Contact')
    const contact = toContact(restored)
    await recordEvent(trx, actor, { type: 'contact.restored', contact })
    return contact
  })
}

/**
 * Erases contacts for good: their rows and identities, and what their events (and the events of
 * contacts merged into them) say about them; each leaves one `contact.erased` event behind.
 */
async function eraseForGood(trx: Kysely<Database>, actor: Actor, ids: readonly string[]) {
  const mergedInto = await contacts.findMergedInto(trx, actor.orgId, ids)
  await redactHistory(trx, actor.orgId, [...ids, ...mergedInto])
  await contacts.eraseContacts(trx, actor.orgId, ids)
  await recordEvents(
    trx,
    actor,
    ids.map((contactId) => ({ type: 'contact.erased' as const, contactId })),
  )
}

/** Removes a contact and its personal data for good, whether live or in the trash. */
export async function eraseContact(db: Kysely<Database>, actor: Actor, id: string): Promise<{ id: string }> {
  const { orgId } = actor
  const contactId = id.toLowerCase()
  const erased = await db.transaction().execute(async (trx) => {
    const row = await contacts.findContactForUpdate(trx, orgId, contactId, { includeTrash: true })
    if (row) await eraseForGood(trx, actor, [contactId])
    return row !== undefined
  })
  if (!erased) throw await missingContact(db, orgId, contactId)
  return { id: contactId }
}

const toTrashedContact = (row: ContactRow): TrashedContact => ({
  ...toContact(row),
  deleted_at: formatTimestamp(row.deleted_at ?? row.updated_at),
})

/** One page of the trash, most recently deleted first (the Settings page's view). */
export async function listTrash(
  db: Kysely<Database>,
  orgId: string,
  pagination: PaginationQuery,
): Promise<PageOf<TrashedContact>> {
  const [rows, total] = await Promise.all([
    contacts.listTrash(db, orgId, pagination.size, { offset: offsetOf(pagination) }),
    contacts.countTrash(db, orgId),
  ])
  return pageOf(rows.map(toTrashedContact), total, pagination)
}

/** The trash, paged as the API asks: original pages (with a cursor to continue) or by cursor. */
export function listTrashPaged(
  db: Kysely<Database>,
  cursors: () => Promise<CursorCodec>,
  orgId: string,
  query: ListPagingQuery,
) {
  const list: TimeOrderedList<ContactRow, TrashedContact> = {
    find: (limit, start) => contacts.listTrash(db, orgId, limit, start),
    count: () => contacts.countTrash(db, orgId),
    positionOf: (row) => ({ time: row.deleted_at ?? row.updated_at, id: row.id }),
    toItem: toTrashedContact,
  }
  return pageTimeOrderedList(list, query, cursors, queryKeyOf([orgId, 'trash']))
}

/**
 * A contact's history, newest first. Readable while any of its events remain, so also after it
 * was erased (events without data) or merged away; 404 only when there is no trace of it.
 */
export async function contactHistory(
  db: Kysely<Database>,
  cursors: () => Promise<CursorCodec>,
  orgId: string,
  id: string,
  query: HistoryQuery,
) {
  const contactId = id.toLowerCase()
  const page = await historyOf(db, cursors, orgId, contactId, query, async () =>
    Boolean(await contacts.findContactIncludingTrash(db, orgId, contactId)),
  )
  if (!page) throw await missingContact(db, orgId, contactId)
  return page
}

/**
 * Folds the live-contact counts that writes have spread over many rows (PostgreSQL; see
 * contacts.repository's countContacts): a list read folds its own organization's, and this, run
 * by the server every minute, those of organizations nobody lists.
 */
export async function foldContactCounts(db: Kysely<Database>): Promise<void> {
  await contacts.foldContactCounts(db)
}

/** Erases what has been in the trash longer than the retention period; returns how many. */
export async function purgeTrash(
  db: Kysely<Database>,
  retentionDays: number,
  now = Date.now(),
): Promise<number> {
  const cutoff = new Date(now - retentionDays * 24 * 60 * 60 * 1000).toISOString()
  let purged = 0
  const orgs = await db.selectFrom('organizations').select('id').execute()
  for (const { id: orgId } of orgs) {
    for (;;) {
      const ids = await contacts.findTrashedBefore(db, orgId, cutoff, 500)
      if (ids.length === 0) break
      await db.transaction().execute((trx) => eraseForGood(trx, systemActor(orgId), ids))
      purged += ids.length
    }
  }
  return purged
}

const UPSERT_ATTEMPTS = 4

/**
 * Another writer committed one of the identities after this upsert looked them up: either the
 * unique index refused our insert, or our own check saw the new holder. Looking up again finds it.
 */
export const lostIdentityRace = (error: unknown) =>
  isUniqueViolation(error) || error instanceof IdentityConflictError

/**
 * Create-or-update matched on any identity given: external id, email (case-insensitively) or
 * phone number (E.164). Given fields are set, the others kept; the phone number is stored as the
 * telephone channel. Safe under concurrency: when simultaneous upserts of one new person race,
 * the unique identity index lets one insert win and the others retry, finding and updating it.
 */
export async function upsertContact(
  db: Kysely<Database>,
  principal: Principal,
  query: UpsertQuery,
  body: UpsertBody,
): Promise<UpsertOutcome> {
  const prepared = await prepareUpsert(db, principal, query, body)
  for (let attempt = 1; ; attempt++) {
    try {
      return await db.transaction().execute((trx) => upsertPrepared(trx, principal, prepared))
    } catch (error) {
      if (!lostIdentityRace(error) || attempt >= UPSERT_ATTEMPTS) throw error
    }
  }
}

export interface PreparedUpsert {
  lookup: Identity[]
  phone: string | null
  input: ContactUpdateBody
  columns: UpdateableContactRow
}

/** Everything about an upsert that needs no transaction: validation, normalization, lookup keys. */
export async function prepareUpsert(
  db: Kysely<Database>,
  principal: Actor,
  query: UpsertQuery,
  body: UpsertBody,
  loc = 'body',
  customFieldTypes?: ReadonlyMap<string, CustomFieldType>,
): Promise<PreparedUpsert> {
  const { phone_number: bodyPhone, ...bodyFields } = body
  const input: ContactUpdateBody = { ...bodyFields }
  for (const field of ['first_name', 'last_name', 'email', 'external_id'] as const) {
    if (query[field] !== undefined) input[field] = query[field]
  }
  const rawPhone = query.phone_number ?? bodyPhone ?? undefined
  const phoneLoc = query.phone_number !== undefined ? 'query' : loc
  const phone = rawPhone === undefined ? null : normalizePhone(rawPhone)
  if (rawPhone !== undefined && phone === null) {
    throw new ValidationFailedError([
      { loc: [phoneLoc, 'phone_number'], msg: 'Input should be a valid phone number', type: 'value_error' },
    ])
  }
  const lookup: Identity[] = []
  if (input.external_id) lookup.push({ kind: 'external_id', value: input.external_id })
  const email = normalizeEmail(input.email)
  if (email) lookup.push({ kind: 'email', value: email })
  if (phone) lookup.push({ kind: 'phone', value: phone })
  if (lookup.length === 0) {
    throw new ValidationFailedError([
      {
        loc: [loc === 'body' ? 'query' : loc, 'email'],
        msg: 'One of email, phone_number or external_id is required',
        type: 'missing',
      },
    ])
  }
  assertOwnOrganization(principal, input.org_id)
  const columns = await columnsFromInput(db, principal.orgId, input, loc, customFieldTypes)
  return { lookup, phone, input, columns }
}

/** The part of an upsert that must run inside one transaction (or one savepoint of a batch). */
/** The row an upsert creates when no contact holds its identities (its telephone set from phone_number). */
export function newRowOfUpsert(
  orgId: string,
  { phone, input, columns }: PreparedUpsert,
): InsertableContactRow {
  const withPhone = { ...columns }
  if (phone) withPhone.channels = JSON.stringify({ ...(input.channels ?? {}), telephone: phone })
  return newContactRow(orgId, withPhone)
}

/**
 * How an upsert treats a contact it finds. The API's upsert replaces the objects given and always
 * writes; an import merges objects key by key (a file naming one custom field keeps the others)
 * and leaves a contact it would not change untouched, so that importing a file twice changes
 * nothing the second time.
 */
export interface UpsertMode {
  mergeObjects?: boolean
  skipUnchanged?: boolean
}

export interface UpsertOutcome {
  created: boolean
  changed: boolean
  contact: VersionedContact
}

export async function upsertPrepared(
  trx: Kysely<Database>,
  actor: Actor,
  prepared: PreparedUpsert,
  mode: UpsertMode = {},
): Promise<UpsertOutcome> {
  const orgId = actor.orgId
  const found = await findIdentityHolders(trx, orgId, prepared.lookup)
  const holders = [...new Set(found.map((row) => row.contact_id))]
  if (holders.length > 1) throw identitiesOfSeveralContacts(holders[0] as string)
  const existing = holders[0] ? await contacts.findContactForUpdate(trx, orgId, holders[0]) : undefined
  const columns = upsertColumns(prepared, existing, found, mode)
  if (!existing) {
    const contact = await insertWithIdentities(trx, actor, newContactRow(orgId, columns))
    return { created: true, changed: true, contact }
  }
  const before = toContact(existing)
  if (mode.skipUnchanged && !upsertChanges(existing, columns)) {
    return { created: false, changed: false, contact: before }
  }
  columns.updated_at = nowTimestamp()
  const row = await contacts.updateContact(trx, orgId, existing.id, columns, existing)
  if (!row) throw notFound('contact_not_found', 'Contact')
  const contact = toContact(row)
  await keepIdentitiesInStep(trx, before, contact)
  await recordEvent(trx, actor, { type: 'contact.updated', before, contact })
  return { created: false, changed: true, contact }
}

const identitiesOfSeveralContacts = (first: string) =>
  new AppError(
    'identity_conflict',
    'The email, phone number and external id given belong to different contacts',
    {
      existing_id: first,
    },
  )

/**
 * The columns an upsert writes, given the contact its identities found (if any) and the identity
 * rows that found it. Pure, so that an import can tell, for a whole batch at once, which rows
 * would change nothing.
 */
export function upsertColumns(
  { lookup, phone, input, columns: prepared }: PreparedUpsert,
  existing: ContactRow | undefined,
  found: readonly { kind: Identity['kind']; value: string }[],
  mode: UpsertMode,
): UpdateableContactRow {
  const columns = { ...prepared }
  // An identity the contact holds besides its own email or telephone (say, an address taken over
  // in a merge) only found it: writing it over that field would drop the identity the field held.
  const heldElsewhere = (kind: Identity['kind'], own: string | null) =>
    found.some((row) => row.kind === kind) &&
    own !== null &&
    own !== lookup.find((i) => i.kind === kind)?.value
  if (existing && heldElsewhere('email', existing.email_normalized)) {
    delete columns.email
    delete columns.email_normalized
  }
  const ownTelephone = existing ? parseJsonObject(existing.channels).telephone : undefined
  const ownPhone = typeof ownTelephone === 'string' ? normalizePhone(ownTelephone) : null
  if (phone && !(existing && heldElsewhere('phone', ownPhone))) {
    const base =
      input.channels !== undefined
        ? (input.channels ?? {})
        : existing
          ? parseJsonObject(existing.channels)
          : {}
    columns.channels = JSON.stringify({ ...base, telephone: phone })
  }
  if (existing && mode.mergeObjects) {
    for (const column of OBJECT_COLUMNS) {
      const given = columns[column]
      if (typeof given !== 'string') continue
      columns[column] = JSON.stringify({ ...parseJsonObject(existing[column]), ...JSON.parse(given) })
    }
  }
  return columns
}

/** Whether writing these columns would change any field of the contact. */
export function upsertChanges(existing: ContactRow, columns: UpdateableContactRow): boolean {
  const after = toContact({ ...existing, ...columns } as ContactRow)
  return Object.keys(changesBetween(toContact(existing), after)).length > 0
}
