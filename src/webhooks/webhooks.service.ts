import type { Kysely, Updateable } from 'kysely'
import type { Principal } from '../api-keys/api-keys.service.js'
import { dialectOf } from '../db/database.js'
import type { ContactEventType, Database, WebhookRow, WebhookTable } from '../db/schema.js'
import { AppError, ValidationFailedError } from '../errors.js'
import { EVENT_TYPES, TRACKED_FIELDS, type TrackedField } from '../events/events.schemas.js'
import { type CursorCodec, queryKeyOf, readTimeAndId, timeAndId } from '../shared/cursor.js'
import { uuidv7 } from '../shared/ids.js'
import { cursorPageOf } from '../shared/list-paging.js'
import { assertOwnOrganization } from '../shared/tenancy.js'
import { formatNullableTimestamp, formatTimestamp, nowTimestamp } from '../shared/time.js'
import { newWebhookSecret, secretHint } from './signature.js'
import { type TargetPolicy, targetProblem } from './targets.js'
import { deliveriesQueued } from './wakeup.js'
import * as webhooks from './webhooks.repository.js'
import type {
  Delivery,
  DeliveryLogQuery,
  DeliveryWithAttempts,
  Webhook,
  WebhookCreateBody,
  WebhookListQuery,
  WebhookUpdateBody,
} from './webhooks.schemas.js'

export function toWebhook(row: WebhookRow): Webhook {
  return {
    id: row.id,
    org_id: row.org_id,
    name: row.name,
    endpoint: row.endpoint,
    enabled: row.enabled === 1,
    events: JSON.parse(row.events) as ContactEventType[],
    fields: row.fields === null ? null : (JSON.parse(row.fields) as TrackedField[]),
    secret_hint: secretHint(row.secret),
    created_at: formatTimestamp(row.created_at),
    updated_at: formatTimestamp(row.updated_at),
    failing_since: formatNullableTimestamp(row.failing_since),
    disabled_at: formatNullableTimestamp(row.disabled_at),
    disabled_reason: row.disabled_reason,
  }
}

const webhookNotFound = () => new AppError('webhook_not_found', 'Webhook not found')

/** The endpoint, refused with a 422 naming it when webhooks may not be sent there. */
async function checkedEndpoint(endpoint: string, policy: TargetPolicy, loc: string): Promise<string> {
  const problem = await targetProblem(endpoint, policy)
  if (problem)
    throw new ValidationFailedError([{ loc: [loc, 'endpoint'], msg: problem, type: 'value_error' }])
  return new URL(endpoint).toString()
}

/** Event types in their canonical order, whatever order the client listed them in. */
const canonicalEvents = (events: readonly ContactEventType[] | undefined) =>
  JSON.stringify(EVENT_TYPES.filter((type) => events === undefined || events.includes(type)))

/** Fields in their canonical order; null (every update) for none given. */
const canonicalFields = (fields: readonly TrackedField[] | null | undefined) =>
  fields ? JSON.stringify(TRACKED_FIELDS.filter((field) => fields.includes(field))) : null

export async function createWebhook(
  db: Kysely<Database>,
  policy: TargetPolicy,
  principal: Principal,
  body: WebhookCreateBody,
  loc = 'body',
): Promise<Webhook & { secret: string }> {
  assertOwnOrganization(principal, body.org_id)
  const endpoint = await checkedEndpoint(body.endpoint, policy, loc)
  const now = nowTimestamp()
  const row = {
    org_id: principal.orgId,
    id: uuidv7(),
    name: body.name ?? new URL(endpoint).host,
    endpoint,
    enabled: body.enabled === false ? 0 : 1,
    events: canonicalEvents(body.events),
    fields: canonicalFields(body.fields),
    secret: newWebhookSecret(),
    created_at: now,
    updated_at: now,
    failing_since: null,
    disabled_at: null,
    disabled_reason: null,
    queued_through_seq: null,
  } satisfies WebhookRow
  await webhooks.insertWebhook(db, row)
  deliveriesQueued()
  return { ...toWebhook(row), secret: row.secret }
}

export async function getWebhook(db: Kysely<Database>, orgId: string, id: string): Promise<Webhook> {
  const row = await webhooks.findWebhook(db, orgId, id.toLowerCase())
  if (!row) throw webhookNotFound()
  return toWebhook(row)
}

export async function listWebhooks(
  db: Kysely<Database>,
  cursors: () => Promise<CursorCodec>,
  orgId: string,
  query: WebhookListQuery,
) {
  const codec = await cursors()
  const queryKey = queryKeyOf([orgId, 'webhooks'])
  const after = query.cursor === undefined ? null : readTimeAndId(codec, queryKey, query.cursor)
  const rows = await webhooks.listWebhooks(db, orgId, query.limit + 1, after)
  return cursorPageOf(rows, query.limit, toWebhook, (last) =>
    codec.encode(queryKey, timeAndId(last.created_at, last.id)),
  )
}

export async function updateWebhook(
  db: Kysely<Database>,
  policy: TargetPolicy,
  principal: Principal,
  id: string,
  body: WebhookUpdateBody,
  loc = 'body',
): Promise<Webhook> {
  assertOwnOrganization(principal, body.org_id)
  const changes: Updateable<WebhookTable> = { updated_at: nowTimestamp() }
  if (body.endpoint !== undefined) changes.endpoint = await checkedEndpoint(body.endpoint, policy, loc)
  if (body.name !== undefined) changes.name = body.name
  if (body.events !== undefined) changes.events = canonicalEvents(body.events)
  if (body.fields !== undefined) changes.fields = canonicalFields(body.fields)
  if (body.enabled !== undefined) {
    changes.enabled = body.enabled ? 1 : 0
    // Enabling again is the owner saying the endpoint is fixed: the failure clock starts afresh.
    if (body.enabled)
      Object.assign(changes, { disabled_at: null, disabled_reason: null, failing_since: null })
  }
  const row = await db
    .transaction()
    .execute((trx) => webhooks.updateWebhook(trx, principal.orgId, id.toLowerCase(), changes))
  if (!row) throw webhookNotFound()
  // Enabled again, its pending deliveries are due.
  deliveriesQueued()
  return toWebhook(row)
}

export async function rotateWebhookSecret(
  db: Kysely<Database>,
  orgId: string,
  id: string,
): Promise<Webhook & { secret: string }> {
  const row = await db.transaction().execute((trx) =>
    webhooks.updateWebhook(trx, orgId, id.toLowerCase(), {
      secret: newWebhookSecret(),
      updated_at: nowTimestamp(),
    }),
  )
  if (!row) throw webhookNotFound()
  return { ...toWebhook(row), secret: row.secret }
}

export async function deleteWebhook(
  db: Kysely<Database>,
  orgId: string,
  id: string,
): Promise<{ id: string }> {
  const webhookId = id.toLowerCase()
  const deleted = await db.transaction().execute((trx) => webhooks.deleteWebhook(trx, orgId, webhookId))
  if (!deleted) throw webhookNotFound()
  return { id: webhookId }
}

const toDelivery = (row: webhooks.DeliveryWithEventRow): Delivery => ({
  id: row.id,
  webhook_id: row.webhook_id,
  event_id: row.event_id,
  event: row.event_type,
  contact_id: row.contact_id,
  status: row.status,
  attempts: row.attempts,
  next_attempt_at: row.status === 'pending' ? formatTimestamp(row.next_attempt_at) : null,
  last_status_code: row.last_status_code,
  last_error: row.last_error,
  created_at: formatTimestamp(row.created_at),
  completed_at: formatNullableTimestamp(row.completed_at),
  redelivery_of: row.redelivery_of,
})

/** A webhook's delivery log, newest first, a page at a time. */
export async function listDeliveries(
  db: Kysely<Database>,
  cursors: () => Promise<CursorCodec>,
  orgId: string,
  webhookId: string,
  query: DeliveryLogQuery,
) {
  const id = webhookId.toLowerCase()
  if (!(await webhooks.findWebhook(db, orgId, id))) throw webhookNotFound()
  // On SQLite the log may owe the webhook deliveries the dispatcher has not queued yet: the
  // page shows them too, as PostgreSQL's would.
  if (dialectOf(db) === 'sqlite')
    await db.transaction().execute((trx) => webhooks.queueFromLog(trx, { orgId, webhookId: id }))
  const codec = await cursors()
  const queryKey = queryKeyOf([orgId, 'deliveries', id, query.status ?? null])
  const after = query.cursor === undefined ? null : readTimeAndId(codec, queryKey, query.cursor)
  const rows = await webhooks.listDeliveries(db, orgId, id, query.limit + 1, after, query.status)
  return cursorPageOf(rows, query.limit, toDelivery, (last) =>
    codec.encode(queryKey, timeAndId(last.created_at, last.id)),
  )
}

const deliveryNotFound = () => new AppError('delivery_not_found', 'Delivery not found')

export async function getDelivery(
  db: Kysely<Database>,
  orgId: string,
  webhookId: string,
  deliveryId: string,
): Promise<DeliveryWithAttempts> {
  const row = await webhooks.findDelivery(db, orgId, webhookId.toLowerCase(), deliveryId.toLowerCase())
  if (!row) throw deliveryNotFound()
  const attempts = await webhooks.listAttempts(db, orgId, row.id)
  return {
    ...toDelivery(row),
    attempts_log: attempts.map((attempt) => ({
      attempt: attempt.attempt,
      attempted_at: formatTimestamp(attempt.attempted_at),
      status_code: attempt.status_code,
      error: attempt.error,
      duration_ms: attempt.duration_ms,
    })),
  }
}

/**
 * Sends a delivery's event again, as a new delivery (same event id, so receivers can still
 * de-duplicate). Refused while a delivery of that event to the webhook is still pending.
 */
export async function redeliver(
  db: Kysely<Database>,
  orgId: string,
  webhookId: string,
  deliveryId: string,
): Promise<Delivery> {
  const original = await webhooks.findDelivery(db, orgId, webhookId.toLowerCase(), deliveryId.toLowerCase())
  if (!original) throw deliveryNotFound()
  const id = uuidv7()
  await db.transaction().execute(async (trx) => {
    if (await webhooks.hasPendingDelivery(trx, orgId, original.webhook_id, original.event_seq)) {
      throw new AppError('delivery_pending', 'This event is still being delivered to the webhook')
    }
    const now = nowTimestamp()
    await webhooks.insertDelivery(trx, {
      org_id: orgId,
      id,
      webhook_id: original.webhook_id,
      event_seq: original.event_seq,
      contact_id: original.contact_id,
      status: 'pending',
      attempts: 0,
      next_attempt_at: now,
      last_status_code: null,
      last_error: null,
      created_at: now,
      completed_at: null,
      redelivery_of: original.id,
    })
  })
  deliveriesQueued()
  const created = await webhooks.findDelivery(db, orgId, original.webhook_id, id)
  if (!created) throw deliveryNotFound()
  return toDelivery(created)
}
