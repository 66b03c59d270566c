import type { Kysely } from 'kysely'
import type { ContactRow, Database, InsertableContactRow, UpdateableContactRow } from '../db/schema.js'

export async function findContactById(db: Kysely<Database>, orgId: string, id: string) {
  return db
    .selectFrom('contacts')
    .selectAll()
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .executeTakeFirst()
}

export async function findContactByEmail(db: Kysely<Database>, orgId: string, emailNormalized: string) {
  return db
    .selectFrom('contacts')
    .selectAll()
    .where('org_id', '=', orgId)
    .where('email_normalized', '=', emailNormalized)
    .orderBy('created_at')
    .orderBy('id')
    .limit(1)
    .executeTakeFirst()
}

export async function findContactByPhone(db: Kysely<Database>, orgId: string, phone: string) {
  return db
    .selectFrom('contacts')
    .selectAll()
    .where('org_id', '=', orgId)
    .where('phone', '=', phone)
    .orderBy('created_at')
    .orderBy('id')
    .limit(1)
    .executeTakeFirst()
}

export async function listContacts(db: Kysely<Database>, orgId: string, limit: number, offset: number) {
  return db
    .selectFrom('contacts')
    .selectAll()
    .where('org_id', '=', orgId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
    .offset(offset)
    .execute()
}

export async function countContacts(db: Kysely<Database>, orgId: string): Promise<number> {
  const { total } = await db
    .selectFrom('contacts')
    .select((eb) => eb.fn.countAll<number | string | bigint>().as('total'))
    .where('org_id', '=', orgId)
    .executeTakeFirstOrThrow()
  return Number(total)
}

export async function insertContact(db: Kysely<Database>, row: InsertableContactRow): Promise<ContactRow> {
  return db.insertInto('contacts').values(row).returningAll().executeTakeFirstOrThrow()
}

export async function updateContact(
  db: Kysely<Database>,
  orgId: string,
  id: string,
  changes: UpdateableContactRow,
): Promise<ContactRow | undefined> {
  return db
    .updateTable('contacts')
    .set(changes)
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirst()
}

export async function deleteContact(db: Kysely<Database>, orgId: string, id: string) {
  return db
    .deleteFrom('contacts')
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .returning('id')
    .executeTakeFirst()
}

export async function deleteContacts(db: Kysely<Database>, orgId: string, ids: readonly string[]) {
  const rows = await db
    .deleteFrom('contacts')
    .where('org_id', '=', orgId)
    .where('id', 'in', ids)
    .returning('id')
    .execute()
  return rows.map((row) => row.id)
}
