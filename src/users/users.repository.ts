import type { Kysely } from 'kysely'
import type { Database, MembershipRole } from '../db/schema.js'

export async function insertUser(
  db: Kysely<Database>,
  row: {
    id: string
    email: string
    email_normalized: string
    name: string
    password_hash: string
    created_at: string
  },
): Promise<void> {
  await db.insertInto('users').values(row).execute()
}

export async function findUserByEmail(db: Kysely<Database>, emailNormalized: string) {
  return db.selectFrom('users').selectAll().where('email_normalized', '=', emailNormalized).executeTakeFirst()
}

export async function countUsers(db: Kysely<Database>): Promise<number> {
  const { total } = await db
    .selectFrom('users')
    .select((eb) => eb.fn.countAll<number | string | bigint>().as('total'))
    .executeTakeFirstOrThrow()
  return Number(total)
}

export async function upsertMembership(
  db: Kysely<Database>,
  orgId: string,
  userId: string,
  role: MembershipRole,
  createdAt: string,
): Promise<void> {
  await db
    .insertInto('memberships')
    .values({ org_id: orgId, user_id: userId, role, created_at: createdAt })
    .onConflict((oc) => oc.columns(['org_id', 'user_id']).doUpdateSet({ role }))
    .execute()
}

export async function findMembership(db: Kysely<Database>, orgId: string, userId: string) {
  return db
    .selectFrom('memberships')
    .select(['org_id', 'user_id', 'role'])
    .where('org_id', '=', orgId)
    .where('user_id', '=', userId)
    .executeTakeFirst()
}

export async function listMembershipsOfUser(db: Kysely<Database>, userId: string) {
  return db
    .selectFrom('memberships')
    .innerJoin('organizations', 'organizations.id', 'memberships.org_id')
    .select(['memberships.org_id', 'memberships.role', 'organizations.name as org_name'])
    .where('memberships.user_id', '=', userId)
    .orderBy('organizations.name')
    .execute()
}

export async function listMembersOfOrganization(db: Kysely<Database>, orgId: string) {
  return db
    .selectFrom('memberships')
    .innerJoin('users', 'users.id', 'memberships.user_id')
    .select(['users.id', 'users.email', 'users.name', 'memberships.role', 'memberships.created_at'])
    .where('memberships.org_id', '=', orgId)
    .orderBy('memberships.created_at')
    .execute()
}
