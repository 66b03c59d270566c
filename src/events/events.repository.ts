import { type Insertable, type Kysely, type RawBuilder, sql } from 'kysely'
import { recordsetJson, recordsetSelect } from '../db/bulk.js'
import { dialectOf } from '../db/database.js'
import { preparedQuery } from '../db/prepared.js'
import type { ContactEventRow, ContactEventTable, Database } from '../db/schema.js'

export type NewContactEvent = Insertable<ContactEventTable>

const CHUNK = 500

/**
 * Appends events and, in the same statement on PostgreSQL (the same transaction on SQLite),
 * queues one delivery of each to every enabled webhook of the organization that takes its type.
 * Queuing is only rows: the HTTP requests are the dispatcher's, never the writer's.
 */
export async function appendEvents(
  trx: Kysely<Database>,
  events: readonly NewContactEvent[],
): Promise<number> {
  if (dialectOf(trx) === 'postgres') return appendOnPostgres(trx, events)
  let queued = 0
  for (let i = 0; i < events.length; i += CHUNK)
    queued += await appendOnSqlite(trx, events.slice(i, i + CHUNK))
  return queued
}

const QUEUED_DELIVERY_COLUMNS = [
  'org_id',
  'id',
  'webhook_id',
  'event_seq',
  'contact_id',
  'status',
  'attempts',
  'next_attempt_at',
  'created_at',
] as const

/** A new delivery of event `e` to webhook `w`, due at once, in QUEUED_DELIVERY_COLUMNS' order. */
const queuedDelivery = (id: RawBuilder<string>) =>
  [
    'e.org_id',
    id.as('id'),
    'w.id as webhook_id',
    'e.seq',
    'e.contact_id',
    sql<'pending'>`'pending'`.as('status'),
    sql<number>`0`.as('attempts'),
    'e.created_at as next_attempt_at',
    'e.created_at',
  ] as const

const EVENT_COLUMNS = [
  'org_id',
  'id',
  'contact_id',
  'type',
  'actor_type',
  'actor_id',
  'created_at',
  'data',
] as const satisfies readonly (keyof NewContactEvent)[]

/**
 * One statement for any number of events, the rows in one JSON parameter, compiled once: the
 * events are inserted and each is queued for every enabled webhook that takes its type.
 */
const appendAndFanOutOnPostgres = preparedQuery(1, (db, rowsJson: string) =>
  db
    .with('e', (db) =>
      db
        .insertInto('contact_events')
        .columns(EVENT_COLUMNS)
        .expression(recordsetSelect('contact_events', EVENT_COLUMNS, rowsJson))
        .returning(['seq', 'org_id', 'id', 'contact_id', 'type', 'created_at']),
    )
    .insertInto('webhook_deliveries')
    .columns(QUEUED_DELIVERY_COLUMNS)
    .expression((eb) =>
      eb
        .selectFrom('e')
        .innerJoin('webhooks as w', (join) => join.onRef('w.org_id', '=', 'e.org_id'))
        .select(queuedDelivery(sql<string>`gen_random_uuid()`))
        .where('w.enabled', '=', 1)
        .where(sql<boolean>`w.events::jsonb @> jsonb_build_array(e.type)`),
    ),
)

/** Returns how many deliveries were queued. */
async function appendOnPostgres(trx: Kysely<Database>, events: readonly NewContactEvent[]) {
  const result = await appendAndFanOutOnPostgres(trx, recordsetJson(events))
  return Number(result.numAffectedRows ?? 0)
}

/** A random (version 4) UUID made by SQLite, for rows an INSERT … SELECT creates. */
const SQLITE_RANDOM_UUID = sql<string>`lower(
  hex(randomblob(4)) || '-' || hex(randomblob(2)) || '-4' || substr(hex(randomblob(2)), 2) || '-' ||
  substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))
)`

const appendOneOnSqlite = preparedQuery(
  8,
  (
    db,
    org_id: string,
    id: string,
    contact_id: string,
    type: NewContactEvent['type'],
    actor_type: NewContactEvent['actor_type'],
    actor_id: string | null,
    created_at: string,
    data: string,
  ) =>
    db
      .insertInto('contact_events')
      .values({ org_id, id, contact_id, type, actor_type, actor_id, created_at, data }),
)

/** Queues these events of one organization to each of its enabled webhooks that takes their type. */
const fanOutOnSqlite = (db: Kysely<Database>, orgId: string, eventIds: readonly string[]) =>
  db
    .insertInto('webhook_deliveries')
    .columns(QUEUED_DELIVERY_COLUMNS)
    .expression((eb) =>
      eb
        .selectFrom('contact_events as e')
        .innerJoin('webhooks as w', (join) => join.onRef('w.org_id', '=', 'e.org_id'))
        .select(queuedDelivery(SQLITE_RANDOM_UUID))
        .where('e.org_id', '=', orgId)
        .where('e.id', 'in', eventIds)
        .where('w.enabled', '=', 1)
        .where(sql<boolean>`exists (select 1 from json_each(w.events) where json_each.value = e.type)`),
    )

const fanOutOneOnSqlite = preparedQuery(2, (db, orgId: string, eventId: string) =>
  fanOutOnSqlite(db, orgId, [eventId]),
)

/**
 * Two statements, whether or not the organization has webhooks: SQLite cannot insert from a
 * CTE, but the fan-out is one INSERT … SELECT, so that queuing deliveries costs the write no
 * extra statement over looking for webhooks.
 */
async function appendOnSqlite(trx: Kysely<Database>, events: readonly NewContactEvent[]) {
  const [only] = events
  if (events.length === 1 && only) {
    // The write path's common case (one contact changed), with statements compiled once.
    const { org_id, id, contact_id, type, actor_type, actor_id, created_at, data } = only
    await appendOneOnSqlite(trx, org_id, id, contact_id, type, actor_type, actor_id ?? null, created_at, data)
    const fannedOut = await fanOutOneOnSqlite(trx, org_id, id)
    return Number(fannedOut.numAffectedRows ?? 0)
  }
  await trx
    .insertInto('contact_events')
    .values([...events])
    .execute()
  const [result] = await fanOutOnSqlite(
    trx,
    events[0]?.org_id as string,
    events.map((event) => event.id),
  ).execute()
  return Number(result?.numInsertedOrUpdatedRows ?? 0)
}

/** One contact's events, newest first, from before a position (the seq of the last one seen). */
export async function listContactEvents(
  db: Kysely<Database>,
  orgId: string,
  contactId: string,
  limit: number,
  beforeSeq: number | null,
): Promise<ContactEventRow[]> {
  let query = db
    .selectFrom('contact_events')
    .selectAll()
    .where('org_id', '=', orgId)
    .where('contact_id', '=', contactId)
    .orderBy('seq', 'desc')
    .limit(limit)
  if (beforeSeq !== null) query = query.where('seq', '<', beforeSeq)
  return query.execute()
}

/** Replaces what the events of these contacts say about them with a note that it was erased. */
export async function scrubContactEvents(
  trx: Kysely<Database>,
  orgId: string,
  contactIds: readonly string[],
  replacement: string,
) {
  if (contactIds.length === 0) return
  await trx
    .updateTable('contact_events')
    .set({ data: replacement })
    .where('org_id', '=', orgId)
    .where('contact_id', 'in', [...contactIds])
    .execute()
}
