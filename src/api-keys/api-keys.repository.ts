import type { Kysely } from 'kysely'
import { preparedQuery } from '../db/prepared.js'
import type { Database, InsertableApiKeyRow } from '../db/schema.js'

export async function insertApiKey(db: Kysely<Database>, row: InsertableApiKeyRow): Promise<void> {
  await db.insertInto('api_keys').values(row).execute()
}

const activeKeyByHash = preparedQuery(1, (db, keyHash: string) =>
  db
    .selectFrom('api_keys')
    .select(['id', 'org_id', 'role', 'key_hash', 'last_used_at'])
    .where('key_hash', '=', keyHash)
    .where('revoked_at', 'is', null),
)

/**
 * The per-request lookup: only what authorization needs, by the unique hash index. A revoked key
 * is filtered out by the query itself, so it costs exactly what an unknown key costs: one
 * statement that finds nothing.
 */
export async function findActiveApiKeyByHash(db: Kysely<Database>, keyHash: string) {
  return (await activeKeyByHash(db, keyHash)).rows[0]
}

export async function listApiKeys(
  db: Kysely<Database>,
  orgId: string,
  filter: { createdBy?: string; activeOnly?: boolean } = {},
) {
  let query = db
    .selectFrom('api_keys')
    .select([
      'id',
      'org_id',
      'name',
      'description',
      'role',
      'prefix',
      'created_at',
      'last_used_at',
      'revoked_at',
      'created_by_user_id',
    ])
    .where('org_id', '=', orgId)
  if (filter.createdBy !== undefined) query = query.where('created_by_user_id', '=', filter.createdBy)
  if (filter.activeOnly) query = query.where('revoked_at', 'is', null)
  return query.orderBy('created_at').orderBy('id').execute()
}

export async function revokeApiKey(
  db: Kysely<Database>,
  id: string,
  revokedAt: string,
  scope: { orgId?: string; createdBy?: string } = {},
) {
  let query = db.updateTable('api_keys').set({ revoked_at: revokedAt }).where('id', '=', id)
  if (scope.orgId !== undefined) query = query.where('org_id', '=', scope.orgId)
  if (scope.createdBy !== undefined) query = query.where('created_by_user_id', '=', scope.createdBy)
  return query.where('revoked_at', 'is', null).returning(['id', 'org_id']).executeTakeFirst()
}

export async function findApiKeyById(db: Kysely<Database>, id: string) {
  return db
    .selectFrom('api_keys')
    .select(['id', 'org_id', 'revoked_at'])
    .where('id', '=', id)
    .executeTakeFirst()
}

export async function touchApiKey(db: Kysely<Database>, orgId: string, id: string, usedAt: string) {
  await db
    .updateTable('api_keys')
    .set({ last_used_at: usedAt })
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .execute()
}
