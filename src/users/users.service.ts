import type { Kysely } from 'kysely'
import type { Database, MembershipRole } from '../db/schema.js'
import { AppError } from '../errors.js'
import { uuidv7 } from '../shared/ids.js'
import { nowTimestamp } from '../shared/time.js'
import { decoyPasswordHash, hashPassword, verifyPassword } from './passwords.js'
import * as users from './users.repository.js'

export const MEMBERSHIP_ROLES: readonly MembershipRole[] = ['owner', 'admin', 'member']
export const MIN_PASSWORD_LENGTH = 10

export interface User {
  id: string
  email: string
  name: string
}

const normalizeEmail = (email: string) => email.trim().toLowerCase()

export function checkNewUser(input: { email: string; name: string; password: string }): string | null {
  const email = input.email.trim()
  if (!/^[^\s@]+@[^\s@]+$/.test(email) || email.length > 320) return 'Enter a valid email address.'
  if (input.name.trim() === '' || input.name.trim().length > 200)
    return 'Enter a name of 1 to 200 characters.'
  if (input.password.length < MIN_PASSWORD_LENGTH || input.password.length > 1000) {
    return `The password must have at least ${MIN_PASSWORD_LENGTH} characters.`
  }
  return null
}

/**
 * Adds a person to an organization with a role, creating the account if the email is new. An
 * existing account keeps its password: an admin adding a colleague cannot take over their account.
 */
export async function addMember(
  db: Kysely<Database>,
  orgId: string,
  input: { email: string; name: string; password: string; role: string },
): Promise<{ user: User; created: boolean }> {
  if (!MEMBERSHIP_ROLES.includes(input.role as MembershipRole)) {
    throw new AppError('validation_failed', `role must be one of ${MEMBERSHIP_ROLES.join(', ')}`)
  }
  const existing = await users.findUserByEmail(db, normalizeEmail(input.email))
  if (existing) {
    await users.upsertMembership(db, orgId, existing.id, input.role as MembershipRole, nowTimestamp())
    return { user: { id: existing.id, email: existing.email, name: existing.name }, created: false }
  }
  const problem = checkNewUser(input)
  if (problem) throw new AppError('validation_failed', problem)
  const user = { id: uuidv7(), email: input.email.trim(), name: input.name.trim() }
  await users.insertUser(db, {
    ...user,
    email_normalized: normalizeEmail(user.email),
    password_hash: await hashPassword(input.password),
    created_at: nowTimestamp(),
  })
  await users.upsertMembership(db, orgId, user.id, input.role as MembershipRole, nowTimestamp())
  return { user, created: true }
}

/** The user whose email and password these are, or null; both failures take the same time. */
export async function authenticateUser(
  db: Kysely<Database>,
  email: string,
  password: string,
): Promise<User | null> {
  const row = await users.findUserByEmail(db, normalizeEmail(email))
  const valid = await verifyPassword(password, row?.password_hash ?? (await decoyPasswordHash()))
  return row && valid ? { id: row.id, email: row.email, name: row.name } : null
}

export async function grantRole(db: Kysely<Database>, orgId: string, userId: string, role: MembershipRole) {
  await users.upsertMembership(db, orgId, userId, role, nowTimestamp())
}

export const countUsers = users.countUsers
export const membershipsOf = users.listMembershipsOfUser
export const membersOf = users.listMembersOfOrganization

export async function roleIn(
  db: Kysely<Database>,
  orgId: string,
  userId: string,
): Promise<MembershipRole | null> {
  return (await users.findMembership(db, orgId, userId))?.role ?? null
}
