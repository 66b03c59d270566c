import type { Kysely } from 'kysely'
import type { Database } from '../db/schema.js'
import { AppError } from '../errors.js'
import { isUuid, uuidv7 } from '../shared/ids.js'
import { formatTimestamp, nowTimestamp } from '../shared/time.js'
import * as organizations from './organizations.repository.js'

export interface Organization {
  id: string
  name: string
  created_at: string
}

const toOrganization = (row: { id: string; name: string; created_at: Date | string }): Organization => ({
  id: row.id,
  name: row.name,
  created_at: formatTimestamp(row.created_at),
})

export async function createOrganization(db: Kysely<Database>, name: string): Promise<Organization> {
  const trimmed = name.trim()
  if (trimmed === '' || trimmed.length > 200) {
    throw new AppError('validation_failed', 'organization name must be 1 to 200 characters')
  }
  if (await organizations.findOrganizationByName(db, trimmed)) {
    throw new AppError('organization_exists', `an organization named "${trimmed}" already exists`)
  }
  const row = { id: uuidv7(), name: trimmed, created_at: nowTimestamp() }
  await organizations.insertOrganization(db, row)
  return toOrganization(row)
}

/** Operators name an organization by id or by name; an id is tried first. */
export async function resolveOrganization(db: Kysely<Database>, idOrName: string): Promise<Organization> {
  const row =
    (isUuid(idOrName) ? await organizations.findOrganizationById(db, idOrName.toLowerCase()) : undefined) ??
    (await organizations.findOrganizationByName(db, idOrName))
  if (!row) throw new AppError('organization_not_found', `no organization with id or name "${idOrName}"`)
  return toOrganization(row)
}

export async function listOrganizations(db: Kysely<Database>): Promise<Organization[]> {
  return (await organizations.listOrganizations(db)).map(toOrganization)
}
