import type { Insertable, Kysely, QueryResult, RawBuilder, Updateable } from 'kysely'
import { sql } from 'kysely'
import { recordsetJson, recordsetSelect } from '../db/bulk.js'
import { dialectOf } from '../db/database.js'
import { preparedQuery } from '../db/prepared.js'
import type {
  ContactEventRow,
  Database,
  WebhookDeliveryAttemptTable,
  WebhookDeliveryRow,
  WebhookTable,
} from '../db/schema.js'

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
 * The id of a new delivery of event `e`: a version 7 UUID whose time and in-millisecond counter
 * are the event's (whose id is one too), the rest random. Deliveries so follow their events in
 * their keys and log index (a batch of them fills a few pages at the end instead of one random
 * page each), and the delivery log lists deliveries of one millisecond in their events' order.
 */
export const deliveryIdOfEvent = (dialect: 'sqlite' | 'postgres') =>
  dialect === 'postgres'
    ? // gen_random_uuid()'s last 17 characters are a version 4 UUID's variant and random bits.
      sql<string>`(substr(e.id::text, 1, 19) || substr(gen_random_uuid()::text, 20))::uuid`
    : sql<string>`(substr(e.id, 1, 19) || lower(
        substr('89ab', 1 + (abs(random()) % 4), 1) || substr(hex(randomblob(2)), 2) || '-' || hex(randomblob(6))
      ))`

const SQLITE_DELIVERY_UUID = deliveryIdOfEvent('sqlite')

/**
 * Whether webhook `w` takes event `e`: an event of a type it takes, and, where it names fields, an
 * update only if it changes one of them (the event's `changes` has that key). The one rule of
 * both backends' queueing: PostgreSQL's as the event is written, SQLite's from the log.
 */
export function webhookTakesEvent(dialect: 'sqlite' | 'postgres'): RawBuilder<boolean> {
  return dialect === 'postgres'
    ? sql<boolean>`w.events::jsonb @> jsonb_build_array(e.type) and (w.fields is null or e.type <> 'contact.updated' or (e.data::jsonb -> 'changes') ?| array(select jsonb_array_elements_text(w.fields::jsonb)))`
    : sql<boolean>`exists (select 1 from json_each(w.events) where json_each.value = e.type) and (w.fields is null or e.type <> 'contact.updated' or exists (select 1 from json_each(w.fields) as f where json_type(e.data, '$.changes.' || f.value) is not null))`
}

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
    .where(webhookTakesEvent('sqlite'))
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
    // The dispatcher's call, made at every claim: its statements are compiled once.
    if ((await anyWebhookEnabled(trx)).rows.length === 0) return false
    await queueAllFromLog(trx)
    await advanceEveryPosition(trx)
    return true
  }
  await trx
    .insertInto('webhook_deliveries')
    .columns(QUEUED_DELIVERY_COLUMNS)
    .expression(unqueued(trx, only).select(queuedDelivery(SQLITE_DELIVERY_UUID)))
    .execute()
  await advancePositions(trx, only).execute()
  return true
}

const anyWebhookEnabled = preparedQuery(0, (db) =>
  db.selectFrom('webhooks').select('id').where('enabled', '=', 1).limit(1),
)

const queueAllFromLog = preparedQuery(0, (db) =>
  db
    .insertInto('webhook_deliveries')
    .columns(QUEUED_DELIVERY_COLUMNS)
    .expression(unqueued(db, null).select(queuedDelivery(SQLITE_DELIVERY_UUID))),
)

/** Moves enabled webhooks' positions (every one, or the one given) to the end of the log. */
const advancePositions = (db: Kysely<Database>, only: { orgId: string; webhookId: string } | null) =>
  db
    .updateTable('webhooks')
    .set({ queued_through_seq: END_OF_LOG })
    .where('enabled', '=', 1)
    .where('queued_through_seq', '<', END_OF_LOG)
    .$if(only !== null, (query) =>
      query
        .where('org_id', '=', (only as { orgId: string }).orgId)
        .where('id', '=', (only as { webhookId: string }).webhookId),
    )

const advanceEveryPosition = preparedQuery(0, (db) => advancePositions(db, null))

/** How many deliveries the log still owes and the time of the oldest (SQLite), for the metrics. */
export async function unqueuedDeliveries(db: Kysely<Database>) {
  const row = await unqueued(db, null)
    .select((eb) => [eb.fn.countAll<number>().as('count'), eb.fn.min('e.created_at').as('oldest')])
    .executeTakeFirst()
  return { count: Number(row?.count ?? 0), oldest: row?.oldest ?? null }
}

export type OrgRange = 'all' | 'after' | 'upTo'

/** The claim's query: the due deliveries, first of their contact for their webhook, oldest first. */
export function dueDeliveries(
  db: Kysely<Database>,
  now: string,
  limit: number,
  range: OrgRange,
  org: string,
) {
  return (
    db
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
      .$if(range === 'after', (query) => query.where('d.org_id', '>', org))
      .$if(range === 'upTo', (query) => query.where('d.org_id', '<=', org))
      .where('d.next_attempt_at', '<=', now)
      .where((eb) => eb.or([eb('d.lease_until', 'is', null), eb('d.lease_until', '<=', now)]))
      .where('w.enabled', '=', 1)
      // The first pending delivery of its contact to its webhook. As a scalar subquery (not NOT
      // EXISTS, which PostgreSQL may turn into a join that reads every pending delivery for each
      // candidate when its statistics predate a burst), it is one lookup in the order index per
      // candidate whatever the statistics say (see migration 014).
      .whereRef('d.event_seq', '=', (eb) =>
        eb
          .selectFrom('webhook_deliveries as p')
          .select((inner) => inner.fn.min('p.event_seq').as('first'))
          .whereRef('p.org_id', '=', 'd.org_id')
          .whereRef('p.webhook_id', '=', 'd.webhook_id')
          .whereRef('p.contact_id', '=', 'd.contact_id')
          .where('p.status', '=', PENDING),
      )
      .orderBy('d.org_id')
      .orderBy('d.next_attempt_at')
      .limit(limit)
      .$if(dialectOf(db) === 'postgres', (query) => query.forUpdate('d').skipLocked())
  )
}

type DueRow = Awaited<ReturnType<ReturnType<typeof dueDeliveries>['execute']>>[number]

/**
 * The claim's query compiled once per organization range and size of LIMIT, the sizes rounded up
 * to a power of two so that a few statements serve every claim (SQLite keeps the LIMIT in the
 * statement's text: see literal-limits.ts). The rows past the wanted number are not leased; on
 * PostgreSQL they stay locked only until the claim's transaction ends.
 */
const dueQueries = new Map<
  string,
  (db: Kysely<Database>, now: string, org: string) => Promise<QueryResult<DueRow>>
>()

function dueQuery(range: OrgRange, limit: number) {
  const size = 2 ** Math.ceil(Math.log2(Math.max(limit, 1)))
  const key = `${range} ${size}`
  let query = dueQueries.get(key)
  if (!query) {
    if (range === 'all') {
      const everyOrg = preparedQuery(1, (db, now: string) => dueDeliveries(db, now, size, range, ''))
      query = (db, now) => everyOrg(db, now)
    } else {
      query = preparedQuery(2, (db, now: string, org: string) => dueDeliveries(db, now, size, range, org))
    }
    dueQueries.set(key, query)
  }
  return query
}

const claimInIndexOrder = (trx: Kysely<Database>) =>
  sql`select set_config('enable_sort', 'off', true), set_config('enable_incremental_sort', 'off', true)`.execute(
    trx,
  )

/**
 * Leases the given deliveries of one organization to a dispatcher. On PostgreSQL the ids go as
 * an array, which the primary key's index reads in one scan: 1.2 to 2.4 ms a lease of 64
 * against 1.7 to 3.3 for the same ids as a JSON list joined to the table (100 leases each,
 * 20,000 queued). SQLite has no arrays; there they go as a JSON list.
 */
async function leaseDeliveries(
  trx: Kysely<Database>,
  orgId: string,
  ids: readonly string[],
  leaseUntil: string,
  leaseToken: string,
) {
  const lease = sql`update webhook_deliveries set lease_until = ${leaseUntil}, lease_token = ${leaseToken}`
  const claimed =
    dialectOf(trx) === 'postgres'
      ? sql`id = any(${ids}::uuid[])`
      : sql`id in (select value from json_each(${JSON.stringify(ids)}))`
  await sql`${lease} where org_id = ${orgId} and ${claimed}`.execute(trx)
}

export interface CompletedDelivery {
  org_id: string
  id: string
  lease_token: string
  last_status_code: number
}

/**
 * Completes delivered deliveries, each only if its dispatcher still holds it (its lease token),
 * in one statement whatever their number: the rows travel as one JSON parameter, so the
 * statement's text, and SQLite's prepared statement, is the same for every batch.
 */
export async function completeDeliveries(
  trx: Kysely<Database>,
  successes: readonly CompletedDelivery[],
  now: string,
) {
  if (successes.length === 0) return
  const json = JSON.stringify(successes)
  const completed = sql`status = 'succeeded', attempts = d.attempts + 1, last_error = null,
    completed_at = ${now}, lease_until = null, lease_token = null`
  if (dialectOf(trx) === 'postgres') {
    await sql`update webhook_deliveries as d set ${completed}, last_status_code = s.last_status_code
      from json_populate_recordset(null::webhook_deliveries, ${json}::json) as s
      where d.org_id = s.org_id and d.id = s.id and d.lease_token = s.lease_token`.execute(trx)
    return
  }
  await sql`update webhook_deliveries as d set ${completed}, last_status_code = s.value ->> 'last_status_code'
    from json_each(${json}) as s
    where d.org_id = s.value ->> 'org_id' and d.id = s.value ->> 'id'
      and d.lease_token = s.value ->> 'lease_token'`.execute(trx)
}

const ATTEMPT_COLUMNS = [
  'org_id',
  'delivery_id',
  'attempt',
  'webhook_id',
  'attempted_at',
  'status_code',
  'error',
  'duration_ms',
] as const satisfies readonly (keyof WebhookDeliveryAttemptTable)[]

/**
 * Records attempts in one statement (the rows as one JSON parameter, as above). A dispatcher that
 * lost its lease (it was presumed dead) may report an attempt number another one already used;
 * the first report stands.
 */
export async function insertAttempts(
  trx: Kysely<Database>,
  attempts: readonly Insertable<WebhookDeliveryAttemptTable>[],
) {
  if (attempts.length === 0) return
  const json = JSON.stringify(attempts)
  const columns = sql.join(ATTEMPT_COLUMNS.map((column) => sql.ref(column)))
  const rows =
    dialectOf(trx) === 'postgres'
      ? recordsetSelect('webhook_delivery_attempts', ATTEMPT_COLUMNS, recordsetJson(attempts))
      : // The WHERE keeps SQLite from reading ON CONFLICT as a join's constraint.
        sql`select ${sql.join(ATTEMPT_COLUMNS.map((column) => sql`value ->> ${sql.lit(column)}`))} from json_each(${json}) where true`
  await sql`insert into webhook_delivery_attempts (${columns}) ${rows} on conflict do nothing`.execute(trx)
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
  // PostgreSQL plans from statistics that may date from when few deliveries were due (a burst, a
  // backlog, a new deployment): it then read and sorted every due delivery to return the first
  // 64, 22 ms a claim with 8,000 due and seconds in a larger backlog. For this transaction only
  // (the claim's), sorting is made the planner's last resort, which leaves it the index's order.
  if (dialectOf(trx) === 'postgres') await claimInIndexOrder(trx)
  const due = (
    await dueQuery(afterOrg === null ? 'all' : 'after', limit)(trx, now, afterOrg ?? '')
  ).rows.slice(0, limit)
  if (afterOrg !== null && due.length < limit) {
    const rest = await dueQuery('upTo', limit - due.length)(trx, now, afterOrg)
    due.push(...rest.rows.slice(0, limit - due.length))
  }
  if (due.length === 0) return []
  const byOrg = new Map<string, string[]>()
  for (const row of due) byOrg.set(row.org_id, [...(byOrg.get(row.org_id) ?? []), row.id])
  for (const [orgId, ids] of byOrg) await leaseDeliveries(trx, orgId, ids, leaseUntil, leaseToken)
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
