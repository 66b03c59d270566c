import { createHash, randomBytes } from 'node:crypto'
import type { Kysely } from 'kysely'
import type { Database } from '../db/schema.js'

export const SESSION_LIFETIME_MS = 7 * 24 * 60 * 60 * 1000

export interface Session {
  tokenHash: string
  userId: string
  email: string
  name: string
  orgId: string | null
  csrfToken: string
}

const hashToken = (token: string) => createHash('sha256').update(token).digest('hex')

/** A new session; the token goes into the cookie, only its hash into the database. */
export async function createSession(db: Kysely<Database>, userId: string, orgId: string | null) {
  const token = randomBytes(32).toString('base64url')
  const now = Date.now()
  await db
    .insertInto('sessions')
    .values({
      token_hash: hashToken(token),
      user_id: userId,
      org_id: orgId,
      csrf_token: randomBytes(24).toString('base64url'),
      created_at: new Date(now).toISOString(),
      expires_at: new Date(now + SESSION_LIFETIME_MS).toISOString(),
    })
    .execute()
  return token
}

export async function findSession(db: Kysely<Database>, token: string): Promise<Session | null> {
  const row = await db
    .selectFrom('sessions')
    .innerJoin('users', 'users.id', 'sessions.user_id')
    .select([
      'sessions.token_hash',
      'sessions.user_id',
      'sessions.org_id',
      'sessions.csrf_token',
      'sessions.expires_at',
      'users.email',
      'users.name',
    ])
    .where('sessions.token_hash', '=', hashToken(token))
    .executeTakeFirst()
  if (!row || new Date(row.expires_at).getTime() <= Date.now()) return null
  return {
    tokenHash: row.token_hash,
    userId: row.user_id,
    email: row.email,
    name: row.name,
    orgId: row.org_id,
    csrfToken: row.csrf_token,
  }
}

export async function switchOrganization(db: Kysely<Database>, tokenHash: string, orgId: string) {
  await db.updateTable('sessions').set({ org_id: orgId }).where('token_hash', '=', tokenHash).execute()
}

export async function deleteSession(db: Kysely<Database>, tokenHash: string) {
  await db.deleteFrom('sessions').where('token_hash', '=', tokenHash).execute()
}
