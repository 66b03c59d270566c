import type { Kysely } from 'kysely'
import type { ApiKeyRole, Database, InsertableApiKeyRow } from '../db/schema.js'
import { AppError } from '../errors.js'
import type { Actor } from '../events/events.service.js'
import { isUuid, uuidv7 } from '../shared/ids.js'
import { formatNullableTimestamp, formatTimestamp, nowTimestamp } from '../shared/time.js'
import { API_KEY_PATTERN, generateApiKey, hashApiKey, hashesMatch } from './api-key-secret.js'
import * as apiKeys from './api-keys.repository.js'

export const API_KEY_ROLES: readonly ApiKeyRole[] = ['full_access', 'read_only']

export interface ApiKeySummary {
  id: string
  org_id: string
  name: string
  description: string | null
  role: ApiKeyRole
  prefix: string
  created_at: string
  last_used_at: string | null
  revoked_at: string | null
  created_by_user_id: string | null
}

/**
 * Who a request acts as, once authenticated: an API key, or a person signed in to the Settings
 * pages (whose role in the organization lets them write).
 */
/** Who is calling: an API key, or a member through the Settings page; answerable for each change. */
export interface Principal extends Actor {
  actorType: 'api_key' | 'user'
  /** The API key's id or the user's id. */
  actorId: string
  role: ApiKeyRole
}

export interface NewApiKey {
  orgId: string
  name: string
  role: string
  description?: string | null
  createdByUserId?: string | null
}

export async function createApiKey(db: Kysely<Database>, input: NewApiKey) {
  const name = input.name.trim()
  if (name === '' || name.length > 200) {
    throw new AppError('validation_failed', 'key name must be 1 to 200 characters')
  }
  if (!API_KEY_ROLES.includes(input.role as ApiKeyRole)) {
    throw new AppError('validation_failed', `role must be one of ${API_KEY_ROLES.join(', ')}`)
  }
  const description = input.description?.trim() || null
  if (description && description.length > 1000) {
    throw new AppError('validation_failed', 'description must be at most 1000 characters')
  }
  const secret = generateApiKey()
  const row: InsertableApiKeyRow = {
    org_id: input.orgId,
    id: uuidv7(),
    name,
    description,
    role: input.role as ApiKeyRole,
    prefix: secret.prefix,
    key_hash: secret.hash,
    created_at: nowTimestamp(),
    last_used_at: null,
    revoked_at: null,
    created_by_user_id: input.createdByUserId ?? null,
  }
  await apiKeys.insertApiKey(db, row)
  return {
    id: row.id,
    key: secret.key,
    prefix: row.prefix,
    org_id: row.org_id,
    role: row.role,
    name: row.name,
  }
}

export async function listApiKeys(
  db: Kysely<Database>,
  orgId: string,
  filter: { createdBy?: string; activeOnly?: boolean } = {},
): Promise<ApiKeySummary[]> {
  const rows = await apiKeys.listApiKeys(db, orgId, filter)
  return rows.map((row) => ({
    ...row,
    created_at: formatTimestamp(row.created_at),
    last_used_at: formatNullableTimestamp(row.last_used_at),
    revoked_at: formatNullableTimestamp(row.revoked_at),
  }))
}

export async function revokeApiKey(
  db: Kysely<Database>,
  id: string,
): Promise<{ id: string; org_id: string }> {
  if (!isUuid(id)) throw new AppError('api_key_not_found', `no API key with id "${id}"`)
  const revoked = await apiKeys.revokeApiKey(db, id.toLowerCase(), nowTimestamp())
  forgetPrincipals(db)
  if (revoked) return revoked
  const existing = await apiKeys.findApiKeyById(db, id.toLowerCase())
  if (existing) return { id: existing.id, org_id: existing.org_id } // already revoked: revoking is idempotent
  throw new AppError('api_key_not_found', `no API key with id "${id}"`)
}

/**
 * Revocation from the Settings page: only a key of the current organization, and for a member
 * only one of their own. Anything else is "not found", whether or not it exists elsewhere.
 */
export async function revokeApiKeyInOrganization(
  db: Kysely<Database>,
  orgId: string,
  id: string,
  scope: { createdBy?: string } = {},
): Promise<void> {
  if (!isUuid(id)) throw new AppError('api_key_not_found', 'API key not found')
  const revoked = await apiKeys.revokeApiKey(db, id.toLowerCase(), nowTimestamp(), { orgId, ...scope })
  forgetPrincipals(db)
  if (!revoked) throw new AppError('api_key_not_found', 'API key not found')
}

interface CachedPrincipal {
  principal: Principal
  lastUsed: number
}

interface PrincipalCache {
  /** The database's foreign-write counter the entries were read under. */
  counter: number
  entries: Map<string, CachedPrincipal>
}

/**
 * Keys found valid, per database, for where the database can say that nobody else wrote to it
 * since (SQLite, through data_version): a key revoked by another process changes that counter,
 * and a key revoked through this process clears the cache, so a revoked key is refused from its
 * next request on either way. Where no such signal exists (PostgreSQL) nothing is cached.
 */
const principalCaches = new WeakMap<Kysely<Database>, PrincipalCache>()
const PRINCIPAL_CACHE_LIMIT = 10_000

const forgetPrincipals = (db: Kysely<Database>) => principalCaches.delete(db)

/** How often last_used_at is written: a write per request would double the cost of a read. */
const LAST_USED_RESOLUTION_MS = 60_000

/**
 * Resolves a presented key to its principal, or null. Unknown and revoked keys take the same path
 * and give the same answer, so a caller cannot tell a revoked key from one that never existed.
 */
export async function authenticateApiKey(
  db: Kysely<Database>,
  presented: string,
  foreignWriteCounter: () => number | null = () => null,
  /** The presented key's hash, when the caller has made it already. */
  hash = hashApiKey(presented),
): Promise<Principal | null> {
  if (!API_KEY_PATTERN.test(presented)) return null
  const counter = foreignWriteCounter()
  let cache = counter === null ? undefined : principalCaches.get(db)
  // Another process wrote since these entries were read (a revocation, perhaps): drop them all.
  if (cache && cache.counter !== counter) cache = undefined
  const cached = cache?.entries.get(hash)
  if (cached) {
    touchWhenDue(db, cached.principal, cached)
    return cached.principal
  }
  const row = await apiKeys.findActiveApiKeyByHash(db, hash)
  if (!row || !hashesMatch(row.key_hash, hash)) return null
  const principal: Principal = { actorType: 'api_key', actorId: row.id, orgId: row.org_id, role: row.role }
  const entry = { principal, lastUsed: row.last_used_at === null ? 0 : new Date(row.last_used_at).getTime() }
  touchWhenDue(db, principal, entry)
  if (counter !== null) {
    if (!cache || cache.entries.size >= PRINCIPAL_CACHE_LIMIT) {
      cache = { counter, entries: new Map() }
      principalCaches.set(db, cache)
    }
    cache.entries.set(hash, entry)
  }
  return principal
}

function touchWhenDue(db: Kysely<Database>, principal: Principal, entry: { lastUsed: number }) {
  const now = Date.now()
  if (now - entry.lastUsed <= LAST_USED_RESOLUTION_MS) return
  entry.lastUsed = now
  // Recording use is bookkeeping: it must never fail or slow the request it describes.
  apiKeys.touchApiKey(db, principal.orgId, principal.actorId, new Date(now).toISOString()).catch(() => {})
}
