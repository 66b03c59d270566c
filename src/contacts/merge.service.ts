import type { Kysely } from 'kysely'
import type { Principal } from '../api-keys/api-keys.service.js'
import type { ContactRow, Database } from '../db/schema.js'
import { AppError, ValidationFailedError } from '../errors.js'
import { recordEvent } from '../events/events.service.js'
import { nowTimestamp } from '../shared/time.js'
import * as contacts from './contacts.repository.js'
import type { Contact, Duplicate, MergeBody } from './contacts.schemas.js'
import { getContact, parseJsonObject, toContact, type VersionedContact } from './contacts.service.js'
import {
  findIdentityHolders,
  identitiesHeldBy,
  identitiesOf,
  normalizeEmail,
  releaseIdentities,
  syncIdentities,
} from './identities.js'
import { normalizePhone } from './phone.js'

const time = (value: Date | string | null) => (value === null ? null : new Date(value).getTime())
const byCreated = (a: ContactRow, b: ContactRow) => (time(a.created_at) ?? 0) - (time(b.created_at) ?? 0)
/** Most recent activity first: last seen, else last update. */
const byLatest = (a: ContactRow, b: ContactRow) =>
  (time(b.last_seen) ?? time(b.updated_at) ?? 0) - (time(a.last_seen) ?? time(a.updated_at) ?? 0)

const firstNonNull = <K extends keyof ContactRow>(rows: ContactRow[], column: K): ContactRow[K] | null =>
  rows.find((row) => row[column] !== null)?.[column] ?? null

const latestTime = (rows: ContactRow[], column: 'last_seen' | 'last_sent') => {
  const times = rows.map((row) => time(row[column])).filter((t): t is number => t !== null)
  return times.length === 0 ? null : new Date(Math.max(...times)).toISOString()
}

/**
 * Survivorship, documented in the README: the primary's non-null fields win, others are filled
 * from the duplicates (most recently updated first); channels, user_attributes and custom_fields
 * are merged key by key with the primary's keys winning; first_* and created_at come from the
 * earliest contact, last_* from the most recently active, last_seen and last_sent are the latest.
 */
function survivingFields(primary: ContactRow, duplicates: ContactRow[]) {
  const all = [primary, ...duplicates]
  const fillOrder = [
    primary,
    ...[...duplicates].sort((a, b) => (time(b.updated_at) ?? 0) - (time(a.updated_at) ?? 0)),
  ]
  const earliest = [...all].sort(byCreated)
  const latest = [...all].sort(byLatest)
  const mergeObjects = (column: 'channels' | 'user_attributes' | 'custom_fields') =>
    JSON.stringify(
      Object.assign(
        {},
        ...[...duplicates].sort(byCreated).map((row) => parseJsonObject(row[column])),
        parseJsonObject(primary[column]),
      ),
    )
  const email = firstNonNull(fillOrder, 'email')
  return {
    first_name: firstNonNull(fillOrder, 'first_name'),
    last_name: firstNonNull(fillOrder, 'last_name'),
    email,
    email_normalized: normalizeEmail(email),
    external_id: firstNonNull(fillOrder, 'external_id'),
    channels: mergeObjects('channels'),
    user_attributes: mergeObjects('user_attributes'),
    custom_fields: mergeObjects('custom_fields'),
    first_assistant_id: firstNonNull(earliest, 'first_assistant_id'),
    first_widget_id: firstNonNull(earliest, 'first_widget_id'),
    last_assistant_id: firstNonNull(latest, 'last_assistant_id'),
    last_widget_id: firstNonNull(latest, 'last_widget_id'),
    last_seen: latestTime(all, 'last_seen'),
    last_sent: latestTime(all, 'last_sent'),
    created_at: new Date((earliest[0] as ContactRow).created_at).toISOString(),
    updated_at: nowTimestamp(),
  }
}

/**
 * Merges duplicates into a primary contact in one transaction: the primary takes their fields by
 * the survivorship rules and every identity they held; the duplicates disappear, and their ids
 * answer 404 with `merged_into` naming the primary from then on. Nothing is half-done on failure.
 */
export async function mergeContacts(
  db: Kysely<Database>,
  principal: Principal,
  body: MergeBody,
): Promise<VersionedContact> {
  const orgId = principal.orgId
  const primaryId = body.primary_id.toLowerCase()
  const duplicateIds = [...new Set(body.duplicate_ids.map((id) => id.toLowerCase()))]
  if (duplicateIds.includes(primaryId)) {
    throw new ValidationFailedError([
      {
        loc: ['body', 'duplicate_ids'],
        msg: 'The primary contact cannot also be a duplicate',
        type: 'value_error',
      },
    ])
  }
  return db.transaction().execute(async (trx) => {
    const rows = await contacts.findLiveContacts(trx, orgId, [primaryId, ...duplicateIds], { lock: true })
    const primary = rows.find((row) => row.id === primaryId)
    const missing = [primaryId, ...duplicateIds].filter((id) => !rows.some((row) => row.id === id))
    if (!primary || missing.length > 0) {
      throw new AppError('contact_not_found', `Contact not found: ${missing.join(', ')}`)
    }
    const duplicates = rows.filter((row) => row.id !== primaryId)
    const taken = (await Promise.all(duplicates.map((row) => identitiesHeldBy(trx, orgId, row.id)))).flat()
    await releaseIdentities(trx, orgId, duplicateIds)

    const merged = await contacts.updateContactAtVersion(
      trx,
      orgId,
      primaryId,
      primary.version,
      survivingFields(primary, duplicates),
    )
    if (!merged) throw new AppError('conflict', 'The primary contact changed during the merge; retry it')
    const fieldIdentities = identitiesOf(toContact(merged))
    await syncIdentities(trx, orgId, primaryId, fieldIdentities)
    const held = new Set(fieldIdentities.map((identity) => `${identity.kind}\u0000${identity.value}`))
    const takenOver = taken.filter((identity) => !held.has(`${identity.kind}\u0000${identity.value}`))
    if (takenOver.length > 0) {
      await trx
        .insertInto('contact_identities')
        .values(
          takenOver.map((identity) => ({
            org_id: orgId,
            kind: identity.kind,
            value: identity.value,
            contact_id: primaryId,
            origin: 'merged' as const,
          })),
        )
        .execute()
    }

    // Ids merged earlier into a duplicate now lead to the primary too, so no redirect chains form.
    await trx
      .updateTable('contact_merges')
      .set({ survivor_id: primaryId })
      .where('org_id', '=', orgId)
      .where('survivor_id', 'in', duplicateIds)
      .execute()
    const mergedAt = nowTimestamp()
    await trx
      .insertInto('contact_merges')
      .values(
        duplicateIds.map((id) => ({
          org_id: orgId,
          merged_id: id,
          survivor_id: primaryId,
          merged_at: mergedAt,
        })),
      )
      .execute()
    await trx.deleteFrom('contacts').where('org_id', '=', orgId).where('id', 'in', duplicateIds).execute()
    const contact = toContact(merged)
    await recordEvent(trx, principal, {
      type: 'contact.merged',
      before: toContact(primary),
      contact,
      mergedIds: duplicateIds,
    })
    return contact
  })
}

const DUPLICATE_CANDIDATES = 50

/** Every email and phone number a contact shows, wherever in it they stand. */
function contactPoints(contact: Contact) {
  const emails = new Set<string>()
  const phones = new Set<string>()
  const email = normalizeEmail(contact.email)
  if (email) emails.add(email)
  for (const value of Object.values(contact.channels)) {
    if (typeof value !== 'string') continue
    if (value.includes('@')) emails.add(value.trim().toLowerCase())
    const phone = normalizePhone(value)
    if (phone) phones.add(phone)
  }
  return { emails, phones }
}

const channelPairs = (contact: Contact) =>
  new Set(
    Object.entries(contact.channels)
      .filter(([, value]) => typeof value === 'string' && value.trim() !== '')
      .map(([key, value]) => `${key}\u0000${String(value).trim().toLowerCase()}`),
  )

/**
 * Contacts that look like the same person: the same email or phone number anywhere in them
 * (email field, identities, channel values), or the same full name together with an equal
 * channel value (the same Instagram handle, Slack id, …).
 */
export async function findDuplicates(db: Kysely<Database>, orgId: string, id: string): Promise<Duplicate[]> {
  const contact = await getContact(db, orgId, id)
  const points = contactPoints(contact)
  const holders = await findIdentityHolders(db, orgId, [
    ...[...points.emails].map((value) => ({ kind: 'email' as const, value })),
    ...[...points.phones].map((value) => ({ kind: 'phone' as const, value })),
  ])
  const emailRows =
    points.emails.size === 0
      ? []
      : await db
          .selectFrom('contacts')
          .select('id')
          .where('org_id', '=', orgId)
          .where('deleted_at', 'is', null)
          .where('email_normalized', 'in', [...points.emails])
          .limit(DUPLICATE_CANDIDATES)
          .execute()
  const nameRows =
    contact.first_name === null && contact.last_name === null
      ? []
      : await db
          .selectFrom('contacts')
          .select('id')
          .where('org_id', '=', orgId)
          .where('deleted_at', 'is', null)
          .where('first_name', contact.first_name === null ? 'is' : '=', contact.first_name)
          .where('last_name', contact.last_name === null ? 'is' : '=', contact.last_name)
          .limit(DUPLICATE_CANDIDATES)
          .execute()
  const candidateIds = [
    ...new Set([
      ...holders.map((h) => h.contact_id),
      ...emailRows.map((r) => r.id),
      ...nameRows.map((r) => r.id),
    ]),
  ]
  const candidates = (
    await contacts.findLiveContacts(
      db,
      orgId,
      candidateIds.filter((c) => c !== contact.id),
    )
  ).map(toContact)

  const ownPairs = channelPairs(contact)
  const duplicates: Duplicate[] = []
  for (const candidate of candidates) {
    const theirs = contactPoints(candidate)
    const matched_on: Duplicate['matched_on'] = []
    if ([...theirs.emails].some((email) => points.emails.has(email))) matched_on.push('email')
    if ([...theirs.phones].some((phone) => points.phones.has(phone))) matched_on.push('phone')
    const sameName = candidate.first_name === contact.first_name && candidate.last_name === contact.last_name
    if (sameName && [...channelPairs(candidate)].some((pair) => ownPairs.has(pair)))
      matched_on.push('name_and_channel')
    if (matched_on.length > 0) duplicates.push({ ...candidate, matched_on })
  }
  return duplicates.sort((a, b) => a.created_at.localeCompare(b.created_at) || a.id.localeCompare(b.id))
}
