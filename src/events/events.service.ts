import { isDeepStrictEqual } from 'node:util'
import type { Kysely } from 'kysely'
import type { Contact } from '../contacts/contacts.schemas.js'
import type { ActorType, ContactEventRow, Database } from '../db/schema.js'
import { type CursorCodec, queryKeyOf, readCursor } from '../shared/cursor.js'
import { uuidv7 } from '../shared/ids.js'
import { cursorPageOf } from '../shared/list-paging.js'
import { formatTimestamp, nowTimestamp } from '../shared/time.js'
import * as events from './events.repository.js'
import { type ContactEvent, type HistoryQuery, TRACKED_FIELDS } from './events.schemas.js'

/** Who made a change: an API key, a member through the Settings page, or the service itself. */
export interface Actor {
  orgId: string
  actorType: ActorType
  actorId: string | null
}

export const systemActor = (orgId: string): Actor => ({ orgId, actorType: 'system', actorId: null })

export type FieldChanges = Record<string, { previous: unknown; current: unknown }>

/** Each tracked field whose value differs, with both values (objects compared by content). */
export function changesBetween(before: Contact, after: Contact): FieldChanges {
  const changes: FieldChanges = {}
  for (const field of TRACKED_FIELDS) {
    if (!isDeepStrictEqual(before[field], after[field])) {
      changes[field] = { previous: before[field], current: after[field] }
    }
  }
  return changes
}

/** A contact as an event carries it: the API's shape, without the version kept for ETags. */
const snapshot = (contact: Contact & { version?: number }): Contact => {
  const { version: _version, ...rest } = contact
  return rest
}

export type EventOf =
  | { type: 'contact.created' | 'contact.restored' | 'contact.deleted'; contact: Contact }
  | { type: 'contact.updated'; before: Contact; contact: Contact }
  | { type: 'contact.merged'; before: Contact; contact: Contact; mergedIds: string[] }
  | { type: 'contact.erased'; contactId: string }

function dataOf(event: EventOf): Record<string, unknown> {
  switch (event.type) {
    case 'contact.erased':
      return {}
    case 'contact.updated':
      return { contact: snapshot(event.contact), changes: changesBetween(event.before, event.contact) }
    case 'contact.merged':
      return {
        contact: snapshot(event.contact),
        merged_ids: event.mergedIds,
        changes: changesBetween(event.before, event.contact),
      }
    default:
      return { contact: snapshot(event.contact) }
  }
}

const contactIdOf = (event: EventOf) => (event.type === 'contact.erased' ? event.contactId : event.contact.id)

/**
 * Appends the events of a write, inside the write's own transaction: a change is recorded if and
 * only if it is committed. An update that changes no tracked field records nothing.
 */
export async function recordEvents(trx: Kysely<Database>, actor: Actor, list: readonly EventOf[]) {
  const createdAt = nowTimestamp()
  const rows: events.NewContactEvent[] = []
  for (const event of list) {
    const data = dataOf(event)
    if (event.type === 'contact.updated' && Object.keys(data.changes as FieldChanges).length === 0) continue
    rows.push({
      org_id: actor.orgId,
      id: uuidv7(),
      contact_id: contactIdOf(event),
      type: event.type,
      actor_type: actor.actorType,
      actor_id: actor.actorId,
      created_at: createdAt,
      data: JSON.stringify(data),
    })
  }
  if (rows.length === 0) return
  await events.appendEvents(trx, rows)
}

export const recordEvent = (trx: Kysely<Database>, actor: Actor, event: EventOf) =>
  recordEvents(trx, actor, [event])

/** What an erased contact's earlier events say instead of its data. */
const ERASED_EVENT_DATA = JSON.stringify({ redacted: true })

/** Rewrites what these contacts' events say about them to `{"redacted": true}` (for an erase). */
export const redactHistory = (trx: Kysely<Database>, orgId: string, contactIds: readonly string[]) =>
  events.scrubContactEvents(trx, orgId, contactIds, ERASED_EVENT_DATA)

/** The event as history lists it and a webhook delivers it: the same envelope, byte for byte. */
export function toContactEvent(row: ContactEventRow): ContactEvent {
  return {
    id: row.id,
    object: 'event',
    event: row.type,
    created_at: formatTimestamp(row.created_at),
    data: {
      contact_id: row.contact_id,
      actor: { type: row.actor_type, id: row.actor_id },
      ...(JSON.parse(row.data) as Record<string, unknown>),
    },
  }
}

/**
 * The same event as JSON text, built around the stored data without parsing it: the dispatcher
 * makes one per delivery, on the thread that serves the API.
 */
export function contactEventJson(row: ContactEventRow): string {
  const head = JSON.stringify({
    id: row.id,
    object: 'event',
    event: row.type,
    created_at: formatTimestamp(row.created_at),
    data: { contact_id: row.contact_id, actor: { type: row.actor_type, id: row.actor_id } },
  })
  // head ends with "}}": the data object is reopened to append the stored members.
  const members = row.data.trim().slice(1, -1).trim()
  return members === '' ? head : `${head.slice(0, -2)},${members}}}`
}

/**
 * One contact's history, newest first, a page at a time. It outlives the contact: the events of
 * a contact that was erased or merged away stay readable (an erased one's without its data).
 */
export async function contactHistory(
  db: Kysely<Database>,
  cursors: () => Promise<CursorCodec>,
  orgId: string,
  contactId: string,
  query: HistoryQuery,
  contactExists: () => Promise<boolean>,
): Promise<{ items: ContactEvent[]; limit: number; next_cursor: string | null } | null> {
  const codec = await cursors()
  const queryKey = queryKeyOf([orgId, 'history', contactId])
  let before: number | null = null
  if (query.cursor !== undefined) {
    const [seq, ...rest] = readCursor(codec, queryKey, query.cursor, ['query', 'cursor'])
    if (typeof seq !== 'number' || rest.length > 0) throw new Error('a history cursor holds no position')
    before = seq
  }
  const rows = await events.listContactEvents(db, orgId, contactId, query.limit + 1, before)
  if (rows.length === 0 && before === null && !(await contactExists())) return null
  return cursorPageOf(rows, query.limit, toContactEvent, (last) => codec.encode(queryKey, [Number(last.seq)]))
}
