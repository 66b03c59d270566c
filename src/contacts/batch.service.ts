import type { Kysely } from 'kysely'
import type { Principal } from '../api-keys/api-keys.service.js'
import type { Database } from '../db/schema.js'
import { toHttpError } from '../http/errors.js'
import { validateBody } from '../http/validation.js'
import { UpsertBody } from './contacts.schemas.js'
import { lostIdentityRace, prepareUpsert, upsertPrepared } from './contacts.service.js'

export interface BatchItemResult {
  index: number
  status: 'created' | 'updated' | 'error'
  id?: string
  error?: { code: string; detail: unknown; existing_id?: string }
}

const atItem = (index: number, loc: (string | number)[]) => ['body', 'contacts', index, ...loc.slice(1)]

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
  const results: BatchItemResult[] = []
  const trx = await db.startTransaction().execute()
  try {
    for (const [index, item] of items.entries()) {
      const issues = validateBody(UpsertBody, item)
      if (issues.length > 0) {
        results.push({
          index,
          status: 'error',
          error: {
            code: 'validation_failed',
            detail: issues.map((issue) => ({ ...issue, loc: atItem(index, issue.loc) })),
          },
        })
        continue
      }
      results.push(await upsertItem(trx, principal, index, item as UpsertBody))
    }
    await trx.commit().execute()
  } catch (error) {
    await trx.rollback().execute()
    throw error
  }
  const count = (status: BatchItemResult['status']) => results.filter((r) => r.status === status).length
  return { created: count('created'), updated: count('updated'), failed: count('error'), results }
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
      const { created, contact } = await upsertPrepared(savepoint, principal.orgId, prepared)
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
