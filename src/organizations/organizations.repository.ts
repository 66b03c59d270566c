import type { Kysely } from 'kysely'
import type { Database, InsertableOrganizationRow } from '../db/schema.js'

export async function insertOrganization(
  db: Kysely<Database>,
  row: InsertableOrganizationRow,
): Promise<void> {
  await db.insertInto('organizations').values(row).execute()
}

export async function findOrganizationById(db: Kysely<Database>, id: string) {
  return db.selectFrom('organizations').selectAll().where('id', '=', id).executeTakeFirst()
}

export async function findOrganizationByName(db: Kysely<Database>, name: string) {
  return db.selectFrom('organizations').selectAll().where('name', '=', name).executeTakeFirst()
}

export async function listOrganizations(db: Kysely<Database>) {
  return db.selectFrom('organizations').selectAll().orderBy('created_at').orderBy('id').execute()
}
