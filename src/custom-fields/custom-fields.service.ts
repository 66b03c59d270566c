import type { Kysely } from 'kysely'
import type { Principal } from '../api-keys/api-keys.service.js'
import type { CustomFieldRow, CustomFieldType, Database, InsertableCustomFieldRow } from '../db/schema.js'
import { AppError, notFound, ValidationFailedError, type ValidationIssue } from '../errors.js'
import { type CursorCodec, queryKeyOf } from '../shared/cursor.js'
import { uuidv7 } from '../shared/ids.js'
import { pageTimeOrderedList, type TimeOrderedList } from '../shared/list-paging.js'
import type { ListPagingQuery } from '../shared/schemas.js'
import { assertOwnOrganization } from '../shared/tenancy.js'
import { nowTimestamp } from '../shared/time.js'
import * as customFields from './custom-fields.repository.js'
import type { CustomField, CustomFieldCreateBody } from './custom-fields.schemas.js'

const toCustomField = (row: CustomFieldRow): CustomField => ({
  id: row.id,
  custom_field_name: row.custom_field_name,
  custom_field_type: row.custom_field_type,
  org_id: row.org_id,
})

export async function createCustomField(
  db: Kysely<Database>,
  principal: Principal,
  body: CustomFieldCreateBody,
): Promise<CustomField> {
  assertOwnOrganization(principal, body.org_id)
  const row: InsertableCustomFieldRow = {
    org_id: principal.orgId,
    id: uuidv7(),
    custom_field_name: body.custom_field_name,
    custom_field_type: body.custom_field_type,
    created_at: nowTimestamp(),
  }
  // The unique index decides under concurrency; this read only gives the common case a clear message.
  if (await customFields.findCustomFieldByName(db, principal.orgId, row.custom_field_name)) {
    throw new AppError(
      'custom_field_exists',
      `A custom field named "${row.custom_field_name}" already exists`,
    )
  }
  await customFields.insertCustomField(db, row)
  return toCustomField(row)
}

/** Definitions, paged as the API asks: original pages (with a cursor to continue) or by cursor. */
export function listCustomFieldsPaged(
  db: Kysely<Database>,
  cursors: () => Promise<CursorCodec>,
  orgId: string,
  query: ListPagingQuery,
) {
  const list: TimeOrderedList<CustomFieldRow, CustomField> = {
    find: (limit, start) => customFields.listCustomFields(db, orgId, limit, start),
    count: () => customFields.countCustomFields(db, orgId),
    positionOf: (row) => ({ time: row.created_at, id: row.id }),
    toItem: toCustomField,
  }
  return pageTimeOrderedList(list, query, cursors, queryKeyOf([orgId, 'custom_fields']))
}

export async function deleteCustomField(db: Kysely<Database>, orgId: string, id: string) {
  const deleted = await customFields.deleteCustomField(db, orgId, id.toLowerCase())
  if (!deleted) throw notFound('custom_field_not_found', 'Custom field')
  return { id: deleted.id }
}

/**
 * Checks the values of defined custom fields against their declared type. A value may always be
 * null (the field is unset); names without a definition are stored as given.
 */
export async function assertCustomFieldTypes(
  db: Kysely<Database>,
  orgId: string,
  values: Record<string, unknown>,
  loc: (string | number)[],
  /** The organization's definitions when the caller has them already (an import loads them once). */
  known?: ReadonlyMap<string, CustomFieldType>,
): Promise<void> {
  const names = Object.keys(values)
  if (names.length === 0) return
  const definitions = known
    ? names.flatMap((name) => {
        const type = known.get(name)
        return type ? [{ custom_field_name: name, custom_field_type: type }] : []
      })
    : await customFields.findCustomFieldTypes(db, orgId, names)
  const issues: ValidationIssue[] = []
  for (const { custom_field_name: name, custom_field_type: type } of definitions) {
    const value = values[name]
    if (value === null || matchesType(value, type)) continue
    issues.push({
      loc: [...loc, name],
      msg: type === 'number' ? 'Input should be a valid number' : 'Input should be a valid string',
      type: type === 'number' ? 'float_type' : 'string_type',
    })
  }
  if (issues.length > 0) throw new ValidationFailedError(issues)
}

const matchesType = (value: unknown, type: CustomFieldType) =>
  type === 'number' ? typeof value === 'number' && Number.isFinite(value) : typeof value === 'string'
