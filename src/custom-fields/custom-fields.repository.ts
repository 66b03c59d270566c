import type { Kysely } from 'kysely'
import type { Database, InsertableCustomFieldRow } from '../db/schema.js'
import type { ListStart } from '../shared/list-paging.js'

export async function insertCustomField(db: Kysely<Database>, row: InsertableCustomFieldRow): Promise<void> {
  await db.insertInto('contact_custom_fields').values(row).execute()
}

export async function findCustomFieldByName(db: Kysely<Database>, orgId: string, name: string) {
  return db
    .selectFrom('contact_custom_fields')
    .selectAll()
    .where('org_id', '=', orgId)
    .where('custom_field_name', '=', name)
    .executeTakeFirst()
}

export async function findCustomFieldTypes(db: Kysely<Database>, orgId: string, names: readonly string[]) {
  return db
    .selectFrom('contact_custom_fields')
    .select(['custom_field_name', 'custom_field_type'])
    .where('org_id', '=', orgId)
    .where('custom_field_name', 'in', names)
    .execute()
}

/** Definitions, oldest first: by offset (`page`) or after a position (`cursor`). */
export async function listCustomFields(db: Kysely<Database>, orgId: string, limit: number, from: ListStart) {
  let query = db
    .selectFrom('contact_custom_fields')
    .selectAll()
    .where('org_id', '=', orgId)
    .orderBy('created_at')
    .orderBy('id')
    .limit(limit)
  if ('offset' in from) query = query.offset(from.offset)
  else if (from.after) {
    const { time, id } = from.after
    query = query.where((eb) => eb(eb.refTuple('created_at', 'id'), '>', eb.tuple(time, id)))
  }
  return query.execute()
}

export async function countCustomFields(db: Kysely<Database>, orgId: string): Promise<number> {
  const { total } = await db
    .selectFrom('contact_custom_fields')
    .select((eb) => eb.fn.countAll<number | string | bigint>().as('total'))
    .where('org_id', '=', orgId)
    .executeTakeFirstOrThrow()
  return Number(total)
}

export async function deleteCustomField(db: Kysely<Database>, orgId: string, id: string) {
  return db
    .deleteFrom('contact_custom_fields')
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .returning('id')
    .executeTakeFirst()
}

/** Every custom field definition of the organization, name to type. */
export async function findCustomFieldTypesOf(db: Kysely<Database>, orgId: string) {
  const rows = await db
    .selectFrom('contact_custom_fields')
    .select(['custom_field_name', 'custom_field_type'])
    .where('org_id', '=', orgId)
    .execute()
  return new Map(rows.map((row) => [row.custom_field_name, row.custom_field_type]))
}
