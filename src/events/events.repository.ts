import type { Insertable, Kysely } from 'kysely'
import { recordsetJson, recordsetSelect } from '../db/bulk.js'
import { dialectOf } from '../db/database.js'
import { preparedQuery } from '../db/prepared.js'
import type { ContactEventRow, ContactEventTable, Database } from '../db/schema.js'
import { deliveriesQueued, eventsAppended } from '../webhooks/wakeup.js'
import {
  deliveryIdOfEvent,
  QUEUED_DELIVERY_COLUMNS,
  queuedDelivery,
  webhookTakesEvent,
} from '../webhooks/webhooks.repository.js'

export type NewContactEvent = Insertable<ContactEventTable>

const CHUNK = 500

/**
 * Appends events. On PostgreSQL the same statement queues one delivery of each to every enabled
 * webhook of the organization that takes its type; it goes out with the transaction's next
 * statement (its COMMIT, on the hot path: one round trip less), and this process's dispatcher is
 * woken when its answer says deliveries were queued. On SQLite the dispatcher queues them from the
 * log after the commit (one write for many events, off the request), and is told that there are
 * events. Queuing is only rows: the HTTP requests are the dispatcher's.
 */
export async function appendEvents(trx: Kysely<Database>, events: readonly NewContactEvent[]): Promise<void> {
  if (dialectOf(trx) === 'postgres') {
    await appendAndFanOutOnPostgres(trx, recordsetJson(events))
    return
  }
  for (let i = 0; i < events.length; i += CHUNK) await appendOnSqlite(trx, events.slice(i, i + CHUNK))
  // The dispatcher looks a moment later, after the commit, and polls anyway.
  eventsAppended()
}

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
const appendAndFanOutOnPostgres = preparedQuery(
  1,
  (db, rowsJson: string) =>
    db
      .with('e', (db) =>
        db
          .insertInto('contact_events')
          .columns(EVENT_COLUMNS)
          .expression(recordsetSelect('contact_events', EVENT_COLUMNS, rowsJson))
          .returning(['seq', 'org_id', 'id', 'contact_id', 'type', 'created_at', 'data']),
      )
      .insertInto('webhook_deliveries')
      .columns(QUEUED_DELIVERY_COLUMNS)
      .expression((eb) =>
        eb
          .selectFrom('e')
          .innerJoin('webhooks as w', (join) => join.onRef('w.org_id', '=', 'e.org_id'))
          .select(queuedDelivery(deliveryIdOfEvent('postgres')))
          .where('w.enabled', '=', 1)
          .where(webhookTakesEvent('postgres')),
      ),
  { answeredLater: (answer) => answer.ok && answer.rowCount > 0 && deliveriesQueued() },
)

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

/** Events only: on SQLite the dispatcher queues their deliveries from the log (queueFromLog). */
async function appendOnSqlite(trx: Kysely<Database>, events: readonly NewContactEvent[]) {
  const [only] = events
  if (events.length === 1 && only) {
    // The write path's common case (one contact changed), with its statement compiled once.
    const { org_id, id, contact_id, type, actor_type, actor_id, created_at, data } = only
    await appendOneOnSqlite(trx, org_id, id, contact_id, type, actor_type, actor_id ?? null, created_at, data)
    return
  }
  await trx
    .insertInto('contact_events')
    .values([...events])
    .execute()
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
