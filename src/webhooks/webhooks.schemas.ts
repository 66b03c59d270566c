import { type Static, Type } from '@sinclair/typebox'
import { EVENT_TYPES, EventType, TrackedField } from '../events/events.schemas.js'
import { CursorPage, CursorPagingQuery, DateTime, Nullable, StringEnum, Uuid } from '../shared/schemas.js'

const Endpoint = Type.String({
  minLength: 1,
  maxLength: 2048,
  description:
    'The http(s) URL deliveries are POSTed to. Loopback, private and link-local addresses are refused unless the operator allows them.',
  examples: ['https://example.com/hooks/contacts'],
})
const Name = Type.String({ minLength: 1, maxLength: 200, description: 'A name to recognise the webhook by.' })
const Events = Type.Array(EventType, {
  minItems: 1,
  uniqueItems: true,
  description: `The event types sent to this webhook (default: all of ${EVENT_TYPES.join(', ')}).`,
})

const Fields = Nullable(
  Type.Array(TrackedField, {
    minItems: 1,
    uniqueItems: true,
    description:
      'Only `contact.updated` events that change one of these fields are sent (other event types as `events` says); null or absent: every update.',
    examples: [['email', 'channels']],
  }),
)

export const WebhookCreateBody = Type.Object(
  {
    endpoint: Endpoint,
    name: Type.Optional(Name),
    enabled: Type.Optional(
      Type.Boolean({ default: true, description: 'Whether events are sent (default true).' }),
    ),
    events: Type.Optional(Events),
    fields: Type.Optional(Fields),
    org_id: Type.Optional(Uuid({ description: "Organization; must equal the API key's organization." })),
  },
  {
    additionalProperties: false,
    title: 'WebhookCreate',
    examples: [{ endpoint: 'https://example.com/hooks/contacts', name: 'CRM sync', enabled: true }],
  },
)
export type WebhookCreateBody = Static<typeof WebhookCreateBody>

export const WebhookUpdateBody = Type.Object(
  {
    endpoint: Type.Optional(Endpoint),
    name: Type.Optional(Name),
    enabled: Type.Optional(
      Type.Boolean({ description: 'Enabling a webhook that was disabled for failing clears the reason.' }),
    ),
    events: Type.Optional(Events),
    fields: Type.Optional(Fields),
    org_id: Type.Optional(Uuid()),
  },
  { additionalProperties: false, title: 'WebhookUpdate', examples: [{ enabled: false }] },
)
export type WebhookUpdateBody = Static<typeof WebhookUpdateBody>

export const Webhook = Type.Object(
  {
    id: Uuid(),
    org_id: Uuid(),
    name: Type.String(),
    endpoint: Type.String(),
    enabled: Type.Boolean(),
    events: Type.Array(EventType),
    fields: Fields,
    secret_hint: Type.String({
      description: 'The end of the signing secret; the whole secret is shown only when made.',
    }),
    created_at: DateTime(),
    updated_at: DateTime(),
    failing_since: Nullable(DateTime(), {
      description: 'Since when every delivery has failed; null while deliveries succeed.',
    }),
    disabled_at: Nullable(DateTime(), { description: 'When the service disabled the webhook for failing.' }),
    disabled_reason: Nullable(Type.String(), { description: 'Why the service disabled the webhook.' }),
  },
  { title: 'Webhook' },
)
export type Webhook = Static<typeof Webhook>

export const WebhookWithSecret = Type.Object(
  {
    ...Webhook.properties,
    secret: Type.String({
      description:
        'The signing secret (HMAC-SHA256 key of X-Contacts-Signature). Shown only in this answer: store it.',
    }),
  },
  { title: 'WebhookWithSecret' },
)

export const WebhookIdParams = Type.Object({ webhook_id: Uuid() })
export const DeliveryIdParams = Type.Object({ webhook_id: Uuid(), delivery_id: Uuid() })

export const DELIVERY_STATUSES = ['pending', 'succeeded', 'failed'] as const

export const Delivery = Type.Object(
  {
    id: Uuid(),
    webhook_id: Uuid(),
    event_id: Uuid(),
    event: EventType,
    contact_id: Uuid(),
    status: StringEnum(DELIVERY_STATUSES, {
      description:
        'pending: not yet acknowledged (retried with backoff); succeeded: the endpoint answered 2xx; failed: given up after the retry window.',
    }),
    attempts: Type.Integer(),
    next_attempt_at: Nullable(DateTime()),
    last_status_code: Nullable(Type.Integer(), {
      description: "The endpoint's last HTTP status, if it answered.",
    }),
    last_error: Nullable(Type.String()),
    created_at: DateTime(),
    completed_at: Nullable(DateTime()),
    redelivery_of: Nullable(Uuid(), { description: 'The delivery this one redelivers.' }),
  },
  { title: 'WebhookDelivery' },
)
export type Delivery = Static<typeof Delivery>

export const DeliveryAttempt = Type.Object({
  attempt: Type.Integer(),
  attempted_at: DateTime(),
  status_code: Nullable(Type.Integer()),
  error: Nullable(Type.String()),
  duration_ms: Type.Integer(),
})

export const DeliveryWithAttempts = Type.Object(
  { ...Delivery.properties, attempts_log: Type.Array(DeliveryAttempt) },
  { title: 'WebhookDeliveryWithAttempts' },
)
export type DeliveryWithAttempts = Static<typeof DeliveryWithAttempts>

export const DeliveryLogQuery = Type.Object(
  {
    limit: Type.Integer({ minimum: 1, maximum: 1000, default: 50 }),
    cursor: CursorPagingQuery.cursor,
    status: Type.Optional(StringEnum(DELIVERY_STATUSES)),
  },
  { additionalProperties: false },
)
export type DeliveryLogQuery = Static<typeof DeliveryLogQuery>

export const DeliveryLogPage = CursorPage(Delivery)
export const WebhookListPage = CursorPage(Webhook)

export const WebhookListQuery = Type.Object(
  { limit: Type.Integer({ minimum: 1, maximum: 1000, default: 100 }), cursor: CursorPagingQuery.cursor },
  { additionalProperties: false },
)
export type WebhookListQuery = Static<typeof WebhookListQuery>
