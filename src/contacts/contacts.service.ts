import type { Kysely } from 'kysely'
import type { Principal } from '../api-keys/api-keys.service.js'
import { assertCustomFieldTypes } from '../custom-fields/custom-fields.service.js'
import type { ContactRow, Database, InsertableContactRow, UpdateableContactRow } from '../db/schema.js'
import { notFound, ValidationFailedError, type ValidationIssue } from '../errors.js'
import { uuidv7 } from '../shared/ids.js'
import { assertJsonBounded } from '../shared/json-bounds.js'
import { offsetOf, type PageOf, type PaginationQuery, pageOf } from '../shared/schemas.js'
import { assertOwnOrganization } from '../shared/tenancy.js'
import { formatNullableTimestamp, formatTimestamp, nowTimestamp, parseDateTime } from '../shared/time.js'
import * as contacts from './contacts.repository.js'
import type { Contact, ContactUpdateBody, UpsertBody, UpsertQuery } from './contacts.schemas.js'
import { normalizePhone, phoneOfChannels } from './phone.js'

type JsonObject = Record<string, unknown>

const parseJsonObject = (value: JsonObject | string): JsonObject =>
  typeof value === 'string' ? (JSON.parse(value) as JsonObject) : value

/** The one place where a stored row becomes the API's contact (and backend differences vanish). */
export function toContact(row: ContactRow): Contact {
  return {
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
  }
}

const UUID_COLUMNS = ['first_assistant_id', 'last_assistant_id', 'first_widget_id', 'last_widget_id'] as const
const TIMESTAMP_COLUMNS = ['last_seen', 'last_sent'] as const
const OBJECT_COLUMNS = ['channels', 'user_attributes', 'custom_fields'] as const

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
): Promise<UpdateableContactRow> {
  const columns: UpdateableContactRow = {}
  const issues: ValidationIssue[] = []
  if (input.first_name !== undefined) columns.first_name = input.first_name
  if (input.last_name !== undefined) columns.last_name = input.last_name
  if (input.email !== undefined) {
    columns.email = input.email
    columns.email_normalized = normalizeEmail(input.email)
  }
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
    if (column === 'custom_fields') await assertCustomFieldTypes(db, orgId, object, [loc, column])
    if (column === 'channels') columns.phone = phoneOfChannels(object)
    columns[column] = JSON.stringify(object)
  }
  if (issues.length > 0) throw new ValidationFailedError(issues)
  return columns
}

const normalizeEmail = (email: string | null) => {
  const normalized = email?.trim().toLowerCase()
  return normalized ? normalized : null
}

function newContactRow(orgId: string, columns: UpdateableContactRow): InsertableContactRow {
  const now = nowTimestamp()
  return {
    first_name: null,
    last_name: null,
    email: null,
    email_normalized: null,
    phone: null,
    channels: '{}',
    user_attributes: '{}',
    custom_fields: '{}',
    last_seen: null,
    last_sent: null,
    first_assistant_id: null,
    last_assistant_id: null,
    first_widget_id: null,
    last_widget_id: null,
    ...columns,
    org_id: orgId,
    id: uuidv7(),
    created_at: now,
    updated_at: now,
  }
}

export async function createContact(
  db: Kysely<Database>,
  principal: Principal,
  input: ContactUpdateBody,
): Promise<Contact> {
  assertOwnOrganization(principal, input.org_id)
  const columns = await columnsFromInput(db, principal.orgId, input, 'body')
  return toContact(await contacts.insertContact(db, newContactRow(principal.orgId, columns)))
}

export async function getContact(db: Kysely<Database>, orgId: string, id: string): Promise<Contact> {
  const row = await contacts.findContactById(db, orgId, id.toLowerCase())
  if (!row) throw notFound('contact_not_found', 'Contact')
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

/** The seed's PUT: a partial update of the fields present in the body. */
export async function updateContact(
  db: Kysely<Database>,
  principal: Principal,
  id: string,
  input: ContactUpdateBody,
): Promise<Contact> {
  assertOwnOrganization(principal, input.org_id)
  const columns = await columnsFromInput(db, principal.orgId, input, 'body')
  if (Object.keys(columns).length === 0) return getContact(db, principal.orgId, id)
  columns.updated_at = nowTimestamp()
  const row = await contacts.updateContact(db, principal.orgId, id.toLowerCase(), columns)
  if (!row) throw notFound('contact_not_found', 'Contact')
  return toContact(row)
}

export async function deleteContact(
  db: Kysely<Database>,
  orgId: string,
  id: string,
): Promise<{ id: string }> {
  const deleted = await contacts.deleteContact(db, orgId, id.toLowerCase())
  if (!deleted) throw notFound('contact_not_found', 'Contact')
  return { id: deleted.id }
}

export async function deleteContacts(db: Kysely<Database>, orgId: string, ids: readonly string[]) {
  const requested = [...new Set(ids.map((id) => id.toLowerCase()))]
  const deleted = new Set(await contacts.deleteContacts(db, orgId, requested))
  return { deleted: deleted.size, not_found: requested.filter((id) => !deleted.has(id)) }
}

/**
 * Create-or-update matched on email (case-insensitively), else on phone number. The original
 * takes the fields as query parameters; a JSON body may carry them and every other writable field.
 * Given fields are set, the others kept; the phone number is stored as the telephone channel.
 */
export async function upsertContact(
  db: Kysely<Database>,
  principal: Principal,
  query: UpsertQuery,
  body: UpsertBody,
): Promise<{ created: boolean; contact: Contact }> {
  const { phone_number: bodyPhone, ...bodyFields } = body
  const input: ContactUpdateBody = { ...bodyFields }
  for (const field of ['first_name', 'last_name', 'email'] as const) {
    if (query[field] !== undefined) input[field] = query[field]
  }
  const rawPhone = query.phone_number ?? bodyPhone ?? undefined
  const phoneLoc = query.phone_number !== undefined ? 'query' : 'body'
  const phone = rawPhone === undefined ? null : normalizePhone(rawPhone)
  if (rawPhone !== undefined && phone === null) {
    throw new ValidationFailedError([
      { loc: [phoneLoc, 'phone_number'], msg: 'Input should be a valid phone number', type: 'value_error' },
    ])
  }
  const email = normalizeEmail(input.email ?? null)
  if (!email && !phone) {
    throw new ValidationFailedError([
      { loc: ['query', 'email'], msg: 'Either email or phone_number is required', type: 'missing' },
    ])
  }
  assertOwnOrganization(principal, input.org_id)
  const columns = await columnsFromInput(db, principal.orgId, input, 'body')

  return db.transaction().execute(async (trx) => {
    const existing =
      (email ? await contacts.findContactByEmail(trx, principal.orgId, email) : undefined) ??
      (phone ? await contacts.findContactByPhone(trx, principal.orgId, phone) : undefined)
    if (phone) {
      const base =
        input.channels !== undefined
          ? (input.channels ?? {})
          : existing
            ? parseJsonObject(existing.channels)
            : {}
      columns.channels = JSON.stringify({ ...base, telephone: phone })
      columns.phone = phone
    }
    if (!existing) {
      const row = await contacts.insertContact(trx, newContactRow(principal.orgId, columns))
      return { created: true, contact: toContact(row) }
    }
    columns.updated_at = nowTimestamp()
    const row = await contacts.updateContact(trx, principal.orgId, existing.id, columns)
    if (!row) throw notFound('contact_not_found', 'Contact')
    return { created: false, contact: toContact(row) }
  })
}
