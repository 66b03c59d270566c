import type { Kysely } from 'kysely'
import { preparedQuery } from '../db/prepared.js'
import type { Database, IdentityKind } from '../db/schema.js'
import { AppError } from '../errors.js'
import { normalizePhone, PHONE_CHANNELS, phonesOfChannels } from './phone.js'

/**
 * An identity names one person within an organization: their email (the email field and the
 * email channel, compared case-insensitively), any phone number in their telephone or WhatsApp
 * channel (in E.164), and the caller's own external id. The primary key of contact_identities makes each one belong to one contact at
 * most; this module only keeps the rows in step with the contacts.
 */
export interface Identity {
  kind: IdentityKind
  value: string
}

export const normalizeEmail = (email: string | null | undefined): string | null => {
  const normalized = email?.trim().toLowerCase()
  return normalized ? normalized : null
}

export function identitiesOf(contact: {
  email: string | null
  channels: Record<string, unknown>
  external_id: string | null
}): Identity[] {
  const identities: Identity[] = []
  const channelEmail = typeof contact.channels.email === 'string' ? contact.channels.email : null
  const emails = new Set([normalizeEmail(contact.email), normalizeEmail(channelEmail)])
  for (const email of emails) if (email) identities.push({ kind: 'email', value: email })
  for (const phone of phonesOfChannels(contact.channels)) identities.push({ kind: 'phone', value: phone })
  if (contact.external_id) identities.push({ kind: 'external_id', value: contact.external_id })
  return identities
}

/**
 * Whether two states of a contact hold their identities in the same fields with the same text:
 * then they derive the same identities, and no phone number needs parsing to tell.
 */
export function sameIdentitySources(
  a: { email: string | null; channels: Record<string, unknown>; external_id: string | null },
  b: { email: string | null; channels: Record<string, unknown>; external_id: string | null },
): boolean {
  return (
    a.email === b.email &&
    a.external_id === b.external_id &&
    a.channels.email === b.channels.email &&
    PHONE_CHANNELS.every((channel) => a.channels[channel] === b.channels[channel])
  )
}

const keyOf = (identity: Identity) => `${identity.kind}\u0000${identity.value}`

export class IdentityConflictError extends AppError {
  constructor(identity: Identity, existingId: string) {
    super('identity_conflict', `Another contact already has this ${identity.kind.replace('_', ' ')}`, {
      existing_id: existingId,
    })
  }
}

/** An upsert's common lookup (one email, say), compiled once: named and planned once on PostgreSQL. */
const holderOf = preparedQuery(3, (db, orgId: string, kind: IdentityKind, value: string) =>
  db
    .selectFrom('contact_identities')
    .select(['kind', 'value', 'contact_id', 'origin'])
    .where('org_id', '=', orgId)
    .where('kind', '=', kind)
    .where('value', '=', value),
)

/** Contact rows holding any of these identities, with what they hold. */
export async function findIdentityHolders(
  db: Kysely<Database>,
  orgId: string,
  identities: readonly Identity[],
) {
  if (identities.length === 0) return []
  const [only] = identities
  if (identities.length === 1 && only) return (await holderOf(db, orgId, only.kind, only.value)).rows
  return db
    .selectFrom('contact_identities')
    .select(['kind', 'value', 'contact_id', 'origin'])
    .where('org_id', '=', orgId)
    .where((eb) =>
      eb.or(
        identities.map((identity) =>
          eb.and([eb('kind', '=', identity.kind), eb('value', '=', identity.value)]),
        ),
      ),
    )
    .execute()
}

/**
 * Makes the identity rows derived from a contact's fields equal `desired`, inside the caller's
 * transaction. Identities another contact holds are a conflict (409 naming that contact); rows
 * taken over in a merge are kept whatever the fields say.
 */
export async function syncIdentities(
  trx: Kysely<Database>,
  orgId: string,
  contactId: string,
  desired: readonly Identity[],
): Promise<void> {
  // What the contact holds first; other holders are looked up only for identities it does not
  // hold yet, so the common write (identities unchanged) costs one indexed read, not two.
  const own = await identitiesHeldBy(trx, orgId, contactId)
  const ownKeys = new Set(own.map(keyOf))
  const holders = await findIdentityHolders(
    trx,
    orgId,
    desired.filter((identity) => !ownKeys.has(keyOf(identity))),
  )
  const rows = [...own.map((row) => ({ ...row, contact_id: contactId })), ...holders]
  const wanted = new Set(desired.map(keyOf))
  const taken = rows.find((row) => row.contact_id !== contactId && wanted.has(keyOf(row)))
  if (taken) throw new IdentityConflictError(taken, taken.contact_id)
  const held = new Set(rows.filter((row) => row.contact_id === contactId).map(keyOf))
  const stale = rows.filter(
    (row) => row.contact_id === contactId && row.origin === 'field' && !wanted.has(keyOf(row)),
  )
  const missing = desired.filter((identity) => !held.has(keyOf(identity)))
  if (stale.length > 0) {
    await trx
      .deleteFrom('contact_identities')
      .where('org_id', '=', orgId)
      .where('contact_id', '=', contactId)
      .where((eb) =>
        eb.or(
          stale.map((identity) => eb.and([eb('kind', '=', identity.kind), eb('value', '=', identity.value)])),
        ),
      )
      .execute()
  }
  await recordFieldIdentities(trx, orgId, contactId, missing)
}

/**
 * Records identities for a contact's fields. One another writer recorded meanwhile for this very
 * contact (two updates of one person at once) is no conflict; one another contact holds is.
 */
async function recordFieldIdentities(
  trx: Kysely<Database>,
  orgId: string,
  contactId: string,
  identities: readonly Identity[],
): Promise<void> {
  if (identities.length === 0) return
  const [only] = identities
  const inserted =
    identities.length === 1 && only
      ? (await recordFieldIdentity(trx, orgId, only.kind, only.value, contactId)).rows
      : await insertFieldIdentities(trx, orgId, contactId, identities).returning(['kind', 'value']).execute()
  if (inserted.length === identities.length) return
  const done = new Set(inserted.map(keyOf))
  const raced = identities.filter((identity) => !done.has(keyOf(identity)))
  const other = (await findIdentityHolders(trx, orgId, raced)).find((row) => row.contact_id !== contactId)
  if (other) throw new IdentityConflictError(other, other.contact_id)
}

const insertFieldIdentities = (
  db: Kysely<Database>,
  orgId: string,
  contactId: string,
  identities: readonly Identity[],
) =>
  db
    .insertInto('contact_identities')
    .values(
      identities.map((identity) => ({
        org_id: orgId,
        kind: identity.kind,
        value: identity.value,
        contact_id: contactId,
        origin: 'field' as const,
      })),
    )
    .onConflict((oc) => oc.columns(['org_id', 'kind', 'value']).doNothing())

/** The common case (a new email, say), compiled once: named and planned once on PostgreSQL. */
const recordFieldIdentity = preparedQuery(
  4,
  (db, orgId: string, kind: IdentityKind, value: string, contactId: string) =>
    insertFieldIdentities(db, orgId, contactId, [{ kind, value }]).returning(['kind', 'value']),
)

const dropFieldIdentity = preparedQuery(
  4,
  (db, orgId: string, contactId: string, kind: IdentityKind, value: string) =>
    db
      .deleteFrom('contact_identities')
      .where('org_id', '=', orgId)
      .where('contact_id', '=', contactId)
      .where('kind', '=', kind)
      .where('value', '=', value)
      .where('origin', '=', 'field'),
  // Nobody waits on its answer: on PostgreSQL it goes out with the transaction's next statement.
  { answeredLater: () => {} },
)

/** A contact's fields that identities come from. */
export interface IdentitySources {
  email: string | null
  channels: Record<string, unknown>
  external_id: string | null
}

/** The identities a contact's fields give except its phone numbers: nothing to parse. */
function textIdentitiesOf(contact: IdentitySources): Identity[] {
  return identitiesOf({
    email: contact.email,
    channels: { email: contact.channels.email },
    external_id: contact.external_id,
  })
}

/** The field phone rows of a contact except those kept, by how many are kept (a channel gives one at most). */
const dropFieldPhonesExcept = [0, 1, 2].map((kept) =>
  preparedQuery(
    2 + kept,
    (db, orgId: string, contactId: string, ...keep: string[]) =>
      db
        .deleteFrom('contact_identities')
        .where('org_id', '=', orgId)
        .where('contact_id', '=', contactId)
        .where('kind', '=', 'phone')
        .where('origin', '=', 'field')
        .$if(keep.length > 0, (query) => query.where('value', 'not in', keep)),
    { answeredLater: () => {} },
  ),
)

/**
 * Moves a contact's field identities, inside the caller's transaction, from those its previous
 * fields gave (`before`; null for a new contact) to those its fields give now. Every write leaves
 * a contact holding the identities its fields give (and those taken over in a merge, which stay),
 * so the difference is all there is to write. A contact stored before identities were unique may
 * lack one that another contact holds; it gains it only when a write gives it anew, and then as a
 * conflict.
 *
 * Nothing is read first: on PostgreSQL a read is a round trip, and the removals go out with the
 * transaction's next statement. Nor are the previous phone numbers parsed (16 µs each for a +1
 * number): when the phone channels change, the contact's field phones other than the new ones go.
 * A new identity another contact holds is a conflict (409 naming that contact), found when its
 * insert takes nothing.
 */
export async function moveFieldIdentities(
  trx: Kysely<Database>,
  orgId: string,
  contactId: string,
  before: IdentitySources | null,
  after: IdentitySources,
): Promise<void> {
  if (!before) return recordFieldIdentities(trx, orgId, contactId, identitiesOf(after))
  const textBefore = textIdentitiesOf(before)
  const textAfter = textIdentitiesOf(after)
  const beforeKeys = new Set(textBefore.map(keyOf))
  const afterKeys = new Set(textAfter.map(keyOf))
  for (const identity of textBefore) {
    if (!afterKeys.has(keyOf(identity)))
      await dropFieldIdentity(trx, orgId, contactId, identity.kind, identity.value)
  }
  const fresh = textAfter.filter((identity) => !beforeKeys.has(keyOf(identity)))
  const previousPhoneTexts = PHONE_CHANNELS.map((channel) => before.channels[channel])
  if (PHONE_CHANNELS.some((channel, i) => after.channels[channel] !== previousPhoneTexts[i])) {
    const phones = phonesOfChannels(after.channels)
    await dropFieldPhonesExcept[phones.length]?.(trx, orgId, contactId, ...phones)
    // A number whose text a channel held before is held already; any other may be new (or the
    // same number written otherwise, which its insert finds held by this very contact).
    const freshPhones = new Set<string>()
    for (const channel of PHONE_CHANNELS) {
      const text = after.channels[channel]
      if (typeof text !== 'string' || previousPhoneTexts.includes(text)) continue
      const phone = normalizePhone(text)
      if (phone) freshPhones.add(phone)
    }
    for (const phone of freshPhones) fresh.push({ kind: 'phone', value: phone })
  }
  await recordFieldIdentities(trx, orgId, contactId, fresh)
}

/**
 * After a unique violation raced past syncIdentities (two writers at once), finds who holds one
 * of the identities, so that the client gets the same 409 it would have got a moment later.
 */
export async function conflictAfterRace(
  db: Kysely<Database>,
  orgId: string,
  contactId: string | null,
  desired: readonly Identity[],
): Promise<IdentityConflictError | null> {
  const holder = (await findIdentityHolders(db, orgId, desired)).find((row) => row.contact_id !== contactId)
  return holder ? new IdentityConflictError(holder, holder.contact_id) : null
}

const heldBy = preparedQuery(2, (db, orgId: string, contactId: string) =>
  db
    .selectFrom('contact_identities')
    .select(['kind', 'value', 'origin'])
    .where('org_id', '=', orgId)
    .where('contact_id', '=', contactId),
)

export async function identitiesHeldBy(db: Kysely<Database>, orgId: string, contactId: string) {
  return (await heldBy(db, orgId, contactId)).rows
}

export async function releaseIdentities(db: Kysely<Database>, orgId: string, contactIds: readonly string[]) {
  if (contactIds.length === 0) return
  await db
    .deleteFrom('contact_identities')
    .where('org_id', '=', orgId)
    .where('contact_id', 'in', contactIds)
    .execute()
}
