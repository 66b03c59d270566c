import type { Insertable, Kysely, RawBuilder, Updateable } from 'kysely'
import { sql } from 'kysely'
import { dialectOf } from '../db/database.js'
import type { ContactEventRow, Database, WebhookDeliveryRow, WebhookTable } from '../db/schema.js'

/**
 * The pending-only indexes serve a query only if it names the status as a literal: neither
 * SQLite nor a generic PostgreSQL plan can match a bound parameter to an index's WHERE clause.
 */
const PENDING = sql.lit('pending' as const)

/** The seq of the newest event (SQLite): a webhook created or enabled now is sent what follows it. */
const END_OF_LOG = sql<number>`(select coalesce(max(seq), 0) from contact_events)`

export async function insertWebhook(db: Kysely<Database>, row: Insertable<WebhookTable>) {
  await db
    .insertInto('webhooks')
    .values(dialectOf(db) === 'sqlite' ? { ...row, queued_through_seq: END_OF_LOG } : row)
    .execute()
}

export async function findWebhook(db: Kysely<Database>, orgId: string, id: string) {
  return db
    .selectFrom('webhooks')
    .selectAll()
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .executeTakeFirst()
}

/** Newest first, after the (created_at, id) of the last one seen. */
export async function listWebhooks(
  db: Kysely<Database>,
  orgId: string,
  limit: number,
  after: { time: string; id: string } | null,
) {
  let query = db
    .selectFrom('webhooks')
    .selectAll()
    .where('org_id', '=', orgId)
    .orderBy('created_at', 'desc')
    .orderBy('id', 'desc')
    .limit(limit)
  if (after)
    query = query.where((eb) => eb(eb.refTuple('created_at', 'id'), '<', eb.tuple(after.time, after.id)))
  return query.execute()
}

/**
 * On SQLite, first queues what the webhook is owed from the log under its present settings, so
 * that a change (disabling it, other event types) applies to events written after it only; an
 * enabled or re-enabled webhook is then owed nothing older. Callers run it in a transaction.
 */
export async function updateWebhook(
  db: Kysely<Database>,
  orgId: string,
  id: string,
  changes: Updateable<WebhookTable>,
) {
  const sqlite = dialectOf(db) === 'sqlite'
  if (sqlite) await queueFromLog(db, { orgId, webhookId: id })
  return db
    .updateTable('webhooks')
    .set(sqlite ? { ...changes, queued_through_seq: END_OF_LOG } : changes)
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .returningAll()
    .executeTakeFirst()
}

/** The webhook with its deliveries and their attempts. */
export async function deleteWebhook(trx: Kysely<Database>, orgId: string, id: string): Promise<boolean> {
  await trx
    .deleteFrom('webhook_delivery_attempts')
    .where('org_id', '=', orgId)
    .where('webhook_id', '=', id)
    .execute()
  await trx
    .deleteFrom('webhook_deliveries')
    .where('org_id', '=', orgId)
    .where('webhook_id', '=', id)
    .execute()
  const deleted = await trx
    .deleteFrom('webhooks')
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .executeTakeFirst()
  return Number(deleted.numDeletedRows) > 0
}

const deliveryColumns = [
  'd.org_id',
  'd.id',
  'd.webhook_id',
  'd.event_seq',
  'd.contact_id',
  'd.status',
  'd.attempts',
  'd.next_attempt_at',
  'd.lease_until',
  'd.lease_token',
  'd.last_status_code',
  'd.last_error',
  'd.created_at',
  'd.completed_at',
  'd.redelivery_of',
  'e.id as event_id',
  'e.type as event_type',
] as const

const deliveriesWithEvents = (db: Kysely<Database>) =>
  db
    .selectFrom('webhook_deliveries as d')
    .innerJoin('contact_events as e', (join) =>
      join.onRef('e.org_id', '=', 'd.org_id').onRef('e.seq', '=', 'd.event_seq'),
    )
    .select(deliveryColumns)

export type DeliveryWithEventRow = Awaited<ReturnType<typeof findDelivery>> & {}

/** One webhook's deliveries, newest first (by creation, then id), after the last one seen. */
export async function listDeliveries(
  db: Kysely<Database>,
  orgId: string,
  webhookId: string,
  limit: number,
  after: { time: string; id: string } | null,
  status: WebhookDeliveryRow['status'] | undefined,
) {
  let query = deliveriesWithEvents(db)
    .where('d.org_id', '=', orgId)
    .where('d.webhook_id', '=', webhookId)
    .orderBy('d.created_at', 'desc')
    .orderBy('d.id', 'desc')
    .limit(limit)
  if (status) query = query.where('d.status', '=', status)
  if (after)
    query = query.where((eb) => eb(eb.refTuple('d.created_at', 'd.id'), '<', eb.tuple(after.time, after.id)))
  return query.execute()
}

export async function findDelivery(db: Kysely<Database>, orgId: string, webhookId: string, id: string) {
  return deliveriesWithEvents(db)
    .where('d.org_id', '=', orgId)
    .where('d.webhook_id', '=', webhookId)
    .where('d.id', '=', id)
    .executeTakeFirst()
}

export async function listAttempts(db: Kysely<Database>, orgId: string, deliveryId: string) {
  return db
    .selectFrom('webhook_delivery_attempts')
    .selectAll()
    .where('org_id', '=', orgId)
    .where('delivery_id', '=', deliveryId)
    .orderBy('attempt')
    .execute()
}

export async function hasPendingDelivery(
  db: Kysely<Database>,
  orgId: string,
  webhookId: string,
  eventSeq: number | string,
) {
  const row = await db
    .selectFrom('webhook_deliveries')
    .select('id')
    .where('org_id', '=', orgId)
    .where('webhook_id', '=', webhookId)
    .where('event_seq', '=', eventSeq)
    .where('status', '=', PENDING)
    .executeTakeFirst()
  return row !== undefined
}

export async function insertDelivery(db: Kysely<Database>, row: Insertable<Database['webhook_deliveries']>) {
  await db.insertInto('webhook_deliveries').values(row).execute()
}

export const QUEUED_DELIVERY_COLUMNS = [
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
export const queuedDelivery = (id: RawBuilder<string>) =>
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

/**
 * A version 7 UUID made by SQLite for the delivery of event `e`: its time is the event's (whose id
 * is a version 7 UUID too), the rest random. Deliveries so follow each other in their keys and
 * log index, and a batch of them fills a few pages at the end instead of one random page each.
 */
const SQLITE_DELIVERY_UUID = sql<string>`(substr(e.id, 1, 14) || lower(
  '7' || substr(hex(randomblob(2)), 2) || '-' ||
  substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))
))`

/** The (event, webhook) pairs of the log not queued yet (SQLite): events past the webhook's position it takes. */
const unqueued = (db: Kysely<Database>, only: { orgId: string; webhookId: string } | null) =>
  db
    .selectFrom('webhooks as w')
    // For each webhook, the events since its position: a range of contact_events' rowid (seq).
    // SQLite keeps a CROSS JOIN's order (webhooks first), and the unary plus keeps it from taking
    // the (org, contact) index instead, which would walk the organization's whole history.
    .crossJoin('contact_events as e')
    .whereRef('e.seq', '>', 'w.queued_through_seq')
    .where(sql<boolean>`+${sql.ref('e.org_id')} = ${sql.ref('w.org_id')}`)
    .where('w.enabled', '=', 1)
    .where(sql<boolean>`exists (select 1 from json_each(w.events) where json_each.value = e.type)`)
    .$if(only !== null, (query) =>
      query
        .where('w.org_id', '=', (only as { orgId: string }).orgId)
        .where('w.id', '=', (only as { webhookId: string }).webhookId),
    )

/**
 * SQLite: queues a delivery of every event each enabled webhook (or the one given) has not been
 * served yet, and moves the webhooks' positions to the end of the log. The caller holds the write
 * lock (a transaction), so no event can be committed between the two statements; and since
 * SQLite numbers events in the order their transactions commit, no event can later appear
 * behind a position. Returns false when no webhook at all is enabled (for the dispatcher, which
 * then need not look after every write).
 */
export async function queueFromLog(
  trx: Kysely<Database>,
  only: { orgId: string; webhookId: string } | null = null,
): Promise<boolean> {
  if (only === null) {
    const enabled = await trx.selectFrom('webhooks').select('id').where('enabled', '=', 1).limit(1).execute()
    if (enabled.length === 0) return false
  }
  await trx
    .insertInto('webhook_deliveries')
    .columns(QUEUED_DELIVERY_COLUMNS)
    .expression(unqueued(trx, only).select(queuedDelivery(SQLITE_DELIVERY_UUID)))
    .execute()
  await trx
    .updateTable('webhooks')
    .set({ queued_through_seq: END_OF_LOG })
    .where('enabled', '=', 1)
    .where('queued_through_seq', '<', END_OF_LOG)
    .$if(only !== null, (query) =>
      query
        .where('org_id', '=', (only as { orgId: string }).orgId)
        .where('id', '=', (only as { webhookId: string }).webhookId),
    )
    .execute()
  return true
}

/** How many deliveries the log still owes and the time of the oldest (SQLite), for the metrics. */
export async function unqueuedDeliveries(db: Kysely<Database>) {
  const row = await unqueued(db, null)
    .select((eb) => [eb.fn.countAll<number>().as('count'), eb.fn.min('e.created_at').as('oldest')])
    .executeTakeFirst()
  return { count: Number(row?.count ?? 0), oldest: row?.oldest ?? null }
}

function dueDeliveries(
  trx: Kysely<Database>,
  now: string,
  limit: number,
  orgs: { after: string } | { upTo: string } | null,
) {
  return trx
    .selectFrom('webhook_deliveries as d')
    .innerJoin('webhooks as w', (join) =>
      join.onRef('w.org_id', '=', 'd.org_id').onRef('w.id', '=', 'd.webhook_id'),
    )
    .innerJoin('contact_events as e', (join) =>
      join.onRef('e.org_id', '=', 'd.org_id').onRef('e.seq', '=', 'd.event_seq'),
    )
    .select([
      'd.org_id',
      'd.id',
      'd.webhook_id',
      'd.event_seq',
      'd.contact_id',
      'd.attempts',
      'd.created_at',
      'w.endpoint',
      'w.secret',
      'w.failing_since',
      'e.seq',
      'e.id as event_id',
      'e.type',
      'e.actor_type',
      'e.actor_id',
      'e.created_at as event_created_at',
      'e.data',
    ])
    .where('d.status', '=', PENDING)
    .$if(orgs !== null && 'after' in orgs, (query) =>
      query.where('d.org_id', '>', (orgs as { after: string }).after),
    )
    .$if(orgs !== null && 'upTo' in orgs, (query) =>
      query.where('d.org_id', '<=', (orgs as { upTo: string }).upTo),
    )
    .where('d.next_attempt_at', '<=', now)
    .where((eb) => eb.or([eb('d.lease_until', 'is', null), eb('d.lease_until', '<=', now)]))
    .where('w.enabled', '=', 1)
    .where(({ not, exists, selectFrom }) =>
      not(
        exists(
          selectFrom('webhook_deliveries as p')
            .select('p.id')
            .whereRef('p.org_id', '=', 'd.org_id')
            .whereRef('p.webhook_id', '=', 'd.webhook_id')
            .whereRef('p.contact_id', '=', 'd.contact_id')
            .where('p.status', '=', PENDING)
            .whereRef('p.event_seq', '<', 'd.event_seq'),
        ),
      ),
    )
    .orderBy('d.org_id')
    .orderBy('d.next_attempt_at')
    .limit(limit)
    .$if(dialectOf(trx) === 'postgres', (query) => query.forUpdate('d').skipLocked())
    .execute()
}

/** A delivery a dispatcher holds, with what it needs to send it. */
export interface ClaimedDelivery {
  org_id: string
  id: string
  webhook_id: string
  event_seq: number | string
  contact_id: string
  attempts: number
  created_at: Date | string
  lease_token: string
  endpoint: string
  secret: string
  /** Whether the webhook was failing when the delivery was claimed. */
  failing: boolean
  /** The event to deliver. */
  event: ContactEventRow
}

/**
 * Takes up to `limit` deliveries that are due, whose webhook is enabled, and that have no earlier
 * event of the same contact still to deliver to the same webhook (so each contact's events
 * arrive in order), and leases them to this dispatcher until `leaseUntil`. On PostgreSQL the
 * rows are chosen with FOR UPDATE SKIP LOCKED, so concurrent dispatchers in other processes
 * take disjoint sets without waiting for each other; a leased row is not due for anyone else
 * until its lease runs out (when its dispatcher died mid-delivery).
 */
export async function claimDueDeliveries(
  trx: Kysely<Database>,
  now: string,
  leaseUntil: string,
  leaseToken: string,
  limit: number,
  afterOrg: string | null,
): Promise<ClaimedDelivery[]> {
  // Walking the due index in its own order (organization, then due time) lets the scan stop
  // at `limit` instead of sorting every pending delivery; starting after the organization
  // served last, and wrapping round, shares the dispatcher fairly between organizations.
  const due = await dueDeliveries(trx, now, limit, afterOrg === null ? null : { after: afterOrg })
  if (afterOrg !== null && due.length < limit)
    due.push(...(await dueDeliveries(trx, now, limit - due.length, { upTo: afterOrg })))
  if (due.length === 0) return []
  const byOrg = new Map<string, string[]>()
  for (const row of due) byOrg.set(row.org_id, [...(byOrg.get(row.org_id) ?? []), row.id])
  for (const [orgId, ids] of byOrg) {
    await trx
      .updateTable('webhook_deliveries')
      .set({ lease_until: leaseUntil, lease_token: leaseToken })
      .where('org_id', '=', orgId)
      .where('id', 'in', ids)
      .execute()
  }
  return due.map((row) => ({
    org_id: row.org_id,
    id: row.id,
    webhook_id: row.webhook_id,
    event_seq: row.event_seq,
    contact_id: row.contact_id,
    attempts: row.attempts,
    created_at: row.created_at,
    lease_token: leaseToken,
    endpoint: row.endpoint,
    secret: row.secret,
    failing: row.failing_since !== null,
    event: {
      seq: row.seq,
      org_id: row.org_id,
      id: row.event_id,
      contact_id: row.contact_id,
      type: row.type,
      actor_type: row.actor_type,
      actor_id: row.actor_id,
      created_at: row.event_created_at,
      data: row.data,
    },
  }))
}
