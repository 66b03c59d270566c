import { normalizeEmail } from '../../src/contacts/identities.js'
import { normalizePhone, phonesOfChannels } from '../../src/contacts/phone.js'
import type { Filter } from '../../src/contacts/search.schemas.js'
import { channelsSearchText, foldText } from '../../src/contacts/search-document.js'
import { parseDateTime } from '../../src/shared/time.js'

/**
 * The search language's meaning, written as plainly as possible over contacts in memory: the
 * reference the SQL compilers on both backends are checked against.
 */
export interface ModelContact {
  id: string
  first_name: string | null
  last_name: string | null
  email: string | null
  external_id: string | null
  channels: Record<string, unknown>
  user_attributes: Record<string, unknown>
  custom_fields: Record<string, unknown>
  first_assistant_id: string | null
  last_assistant_id: string | null
  first_widget_id: string | null
  last_widget_id: string | null
  last_seen: string | null
  last_sent: string | null
  created_at: string
  updated_at: string
}

type Value = string | number | boolean | null | undefined

/** Strings in code point order, as SQLite's BINARY and PostgreSQL's "C" collation compare them. */
export const byCodePoint = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b))

function compare(a: Value, b: string | number): number | null {
  if (typeof a === 'number' && typeof b === 'number') return a - b
  if (typeof a === 'string' && typeof b === 'string') return byCodePoint(a, b)
  return null
}

function fieldValues(contact: ModelContact, field: string): { values: Value[]; kind: string } {
  if (field === 'email') return { values: [normalizeEmail(contact.email)], kind: 'email' }
  if (field === 'phone') return { values: phonesOfChannels(contact.channels), kind: 'phone' }
  const dot = field.indexOf('.')
  if (dot > 0) {
    const object = contact[field.slice(0, dot) as 'channels'] as Record<string, unknown>
    const value = object[field.slice(dot + 1)]
    const scalar = typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean'
    return { values: [scalar ? value : value === undefined ? undefined : null], kind: 'json' }
  }
  const value = contact[field as keyof ModelContact] as Value
  if (['created_at', 'updated_at', 'last_seen', 'last_sent'].includes(field)) {
    return { values: [typeof value === 'string' ? new Date(value).toISOString() : value], kind: 'timestamp' }
  }
  return { values: [value], kind: 'text' }
}

function normalized(kind: string, op: string, value: string | number | boolean): string | number | boolean {
  if (kind === 'email' && typeof value === 'string') {
    return op === 'contains' || op === 'starts_with' ? value.toLowerCase() : (normalizeEmail(value) ?? '')
  }
  if (kind === 'phone' && typeof value === 'string') return normalizePhone(value) ?? ''
  if (kind === 'timestamp' && typeof value === 'string') return parseDateTime(value)?.toISOString() ?? ''
  if (kind === 'text' && typeof value === 'string' && /^[0-9a-f-]{36}$/i.test(value))
    return value.toLowerCase()
  return value
}

function holds(contact: ModelContact, condition: { field: string; op: string; value?: unknown }): boolean {
  const { values, kind } = fieldValues(contact, condition.field)
  const present = values.filter((v) => v !== null && v !== undefined)
  const equals = (target: string | number | boolean) => {
    const wanted = normalized(kind, 'eq', target)
    return present.some((v) => v === wanted)
  }
  switch (condition.op) {
    case 'exists':
      return condition.value === false ? present.length === 0 : present.length > 0
    case 'eq':
      return equals(condition.value as string)
    case 'neq':
      return !equals(condition.value as string)
    case 'in':
      return (condition.value as string[]).some(equals)
    case 'nin':
      return !(condition.value as string[]).some(equals)
    case 'contains':
    case 'starts_with': {
      const wanted = normalized(kind, condition.op, condition.value as string) as string
      return present.some(
        (v) =>
          typeof v === 'string' && (condition.op === 'contains' ? v.includes(wanted) : v.startsWith(wanted)),
      )
    }
    default: {
      const wanted = normalized(kind, condition.op, condition.value as string | number) as string | number
      return present.some((v) => {
        const order = compare(v, wanted)
        if (order === null) return false
        return (
          { gt: order > 0, gte: order >= 0, lt: order < 0, lte: order <= 0 }[condition.op as 'gt'] ?? false
        )
      })
    }
  }
}

export function matchesFilter(contact: ModelContact, filter: Filter): boolean {
  if ('and' in filter) return filter.and.every((child) => matchesFilter(contact, child))
  if ('or' in filter) return filter.or.some((child) => matchesFilter(contact, child))
  if ('not' in filter) return !matchesFilter(contact, filter.not)
  return holds(contact, filter)
}

export function matchesText(contact: ModelContact, q: string): boolean {
  const folded = foldText(q.trim())
  const document = [
    `${contact.first_name ? foldText(contact.first_name) : ''} ${contact.last_name ? foldText(contact.last_name) : ''}`,
    normalizeEmail(contact.email) ?? '',
    channelsSearchText(contact.channels) ?? '',
  ].join('\n')
  return document.includes(folded)
}

const time = (value: string | null) => (value === null ? null : new Date(value).toISOString())
const SORT_COLUMNS: Record<string, (c: ModelContact) => string | null> = {
  created_at: (c) => time(c.created_at),
  updated_at: (c) => time(c.updated_at),
  last_seen: (c) => time(c.last_seen),
  last_sent: (c) => time(c.last_sent),
  first_name: (c) => c.first_name,
  last_name: (c) => c.last_name,
  email: (c) => normalizeEmail(c.email),
  external_id: (c) => c.external_id,
  id: (c) => c.id,
}

/** The order `sort` names: empty values last in either direction, ties broken by id. */
export function sortContacts(contacts: ModelContact[], sort = '-created_at'): ModelContact[] {
  const keys = sort
    .split(',')
    .map((part) => ({ field: part.replace(/^-/, ''), descending: part.startsWith('-') }))
  if (!keys.some((key) => key.field === 'id'))
    keys.push({ field: 'id', descending: keys.at(-1)?.descending ?? true })
  return [...contacts].sort((a, b) => {
    for (const key of keys) {
      const read = SORT_COLUMNS[key.field] as (c: ModelContact) => string | null
      const [x, y] = [read(a), read(b)]
      if (x === y) continue
      if (x === null) return 1
      if (y === null) return -1
      const order = byCodePoint(x, y)
      if (order !== 0) return key.descending ? -order : order
    }
    return 0
  })
}
