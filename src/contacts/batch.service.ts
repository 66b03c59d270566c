import type { Kysely } from 'kysely'
import type { Principal } from '../api-keys/api-keys.service.js'
import { isUniqueViolation } from '../db/errors.js'
import type { ContactRow, Database, InsertableContactRow } from '../db/schema.js'
import { recordEvents } from '../events/events.service.js'
import { toHttpError } from '../http/errors.js'
import { validateBody } from '../http/validation.js'
import { insertContacts } from './contacts.repository.js'
import { UpsertBody } from './contacts.schemas.js'
import {
  lostIdentityRace,
  newRowOfUpsert,
  prepareUpsert,
  toContact,
  upsertPrepared,
} from './contacts.service.js'
import { type Identity, identitiesOf } from './identities.js'

export interface BatchItemResult {
  index: number
  status: 'created' | 'updated' | 'error'
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
export async function batchUpsert(db: Kysely<Database>, principal: Principal, items: readonly unknown[]) {
  const fast = await createAllAtOnce(db, principal, items)
  const results = fast ?? (await upsertOneByOne(db, principal, items))
  const count = (status: BatchItemResult['status']) => results.filter((r) => r.status === status).length
  return { created: count('created'), updated: count('updated'), failed: count('error'), results }
}

const CHUNK = 500

/**
 * The common bulk load (every item a new person, no two items the same person) done set-wise:
 * one lookup for all identities, then multi-row inserts, in one transaction. Returns null when
 * the batch is not of that kind, or when a concurrent writer took an identity meanwhile: the
 * caller then applies it item by item, with the same results the item-by-item path always gives.
 */
async function createAllAtOnce(
  db: Kysely<Database>,
  principal: Principal,
  items: readonly unknown[],
): Promise<BatchItemResult[] | null> {
  const results: BatchItemResult[] = []
  const rows: { index: number; row: InsertableContactRow; identities: Identity[] }[] = []
  const seen = new Set<string>()
  for (const [index, item] of items.entries()) {
    const invalid = invalidItem(index, item)
    if (invalid) {
      results.push(invalid)
      continue
    }
    let prepared: Awaited<ReturnType<typeof prepareUpsert>>
    try {
      prepared = await prepareUpsert(db, principal, {}, item as UpsertBody, 'item')
    } catch (error) {
      results.push(failure(index, error))
      continue
    }
    const row = newRowOfUpsert(principal.orgId, prepared)
    // The identities the item looks up are among those its new row holds (email, telephone,
    // external id), so the row's are the ones to check and to insert.
    const identities = identitiesOf({
      email: row.email ?? null,
      channels: JSON.parse(row.channels as string) as Record<string, unknown>,
      external_id: row.external_id ?? null,
    })
    const keys = identities.map((identity) => `${identity.kind}\u0000${identity.value}`)
    // The same person twice in one batch: the second item updates what the first creates.
    if (keys.some((key) => seen.has(key))) return null
    for (const key of keys) seen.add(key)
    rows.push({ index, row, identities })
  }
  if (rows.length === 0) return null
  const everyIdentity = rows.flatMap((r) => r.identities)
  if (await anyHeld(db, principal.orgId, everyIdentity)) return null
  try {
    await db.transaction().execute(async (trx) => {
      for (let i = 0; i < rows.length; i += CHUNK) {
        await insertContacts(
          trx,
          rows.slice(i, i + CHUNK).map((r) => r.row),
        )
      }
      const identityRows = rows.flatMap(({ row, identities }) =>
        identities.map((identity) => ({
          org_id: principal.orgId,
          ...identity,
          contact_id: row.id as string,
          origin: 'field' as const,
        })),
      )
      for (let i = 0; i < identityRows.length; i += CHUNK) {
        await trx
          .insertInto('contact_identities')
          .values(identityRows.slice(i, i + CHUNK))
          .execute()
      }
      await recordEvents(
        trx,
        principal,
        rows.map(({ row }) => ({
          type: 'contact.created' as const,
          contact: toContact({ ...row, version: 1 } as ContactRow),
        })),
      )
    })
  } catch (error) {
    if (isUniqueViolation(error)) return null
    throw error
  }
  for (const { index, row } of rows) results.push({ index, status: 'created', id: row.id })
  return results.sort((a, b) => a.index - b.index)
}

async function upsertOneByOne(db: Kysely<Database>, principal: Principal, items: readonly unknown[]) {
  const results: BatchItemResult[] = []
  const trx = await db.startTransaction().execute()
  try {
    for (const [index, item] of items.entries()) {
      const invalid = invalidItem(index, item)
      if (invalid) {
        results.push(invalid)
        continue
      }
      results.push(await upsertItem(trx, principal, index, item as UpsertBody))
    }
    await trx.commit().execute()
  } catch (error) {
    await trx.rollback().execute()
    throw error
  }
  return results
}

async function upsertItem(
  trx: Awaited<ReturnType<ReturnType<Kysely<Database>['startTransaction']>['execute']>>,
  principal: Principal,
  index: number,
  item: UpsertBody,
): Promise<BatchItemResult> {
  let prepared: Awaited<ReturnType<typeof prepareUpsert>>
  try {
    prepared = await prepareUpsert(trx, principal, {}, item, 'item')
  } catch (error) {
    return failure(index, error)
  }
  for (let attempt = 1; ; attempt++) {
    const savepoint = await trx.savepoint('batch_item').execute()
    try {
      const { created, contact } = await upsertPrepared(savepoint, principal, prepared)
      await savepoint.releaseSavepoint('batch_item').execute()
      return { index, status: created ? 'created' : 'updated', id: contact.id }
    } catch (error) {
      await savepoint.rollbackToSavepoint('batch_item').execute()
      // A concurrent writer took one of the identities: the retry finds and updates its contact.
      if (lostIdentityRace(error) && attempt < 3) continue
      return failure(index, error)
    }
  }
}

/** Whether any of these identities is held by a contact of the organization (or its trash merges). */
async function anyHeld(
  db: Kysely<Database>,
  orgId: string,
  identities: readonly Identity[],
): Promise<boolean> {
  for (const kind of ['email', 'phone', 'external_id'] as const) {
    const values = identities.filter((identity) => identity.kind === kind).map((identity) => identity.value)
    for (let i = 0; i < values.length; i += CHUNK) {
      const held = await db
        .selectFrom('contact_identities')
        .select('value')
        .where('org_id', '=', orgId)
        .where('kind', '=', kind)
        .where('value', 'in', values.slice(i, i + CHUNK))
        .limit(1)
        .executeTakeFirst()
      if (held) return true
    }
  }
  return false
}
