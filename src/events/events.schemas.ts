import { type Static, Type } from '@sinclair/typebox'
import type { Contact } from '../contacts/contacts.schemas.js'
import { CursorPage, CursorPagingQuery, DateTime, Nullable, StringEnum, Uuid } from '../shared/schemas.js'

export const EVENT_TYPES = [
  'contact.created',
  'contact.updated',
  'contact.deleted',
  'contact.restored',
  'contact.merged',
  'contact.erased',
] as const

export const EventType = StringEnum(EVENT_TYPES, { description: 'What happened to the contact.' })

/** The fields whose changes an event reports (what a client can write, not bookkeeping). */
export const TRACKED_FIELDS = [
  'first_name',
  'last_name',
  'email',
  'external_id',
  'channels',
  'user_attributes',
  'custom_fields',
  'last_seen',
  'last_sent',
  'first_assistant_id',
  'last_assistant_id',
  'first_widget_id',
  'last_widget_id',
] as const satisfies readonly (keyof Contact)[]

export const TrackedField = StringEnum(TRACKED_FIELDS, {
  description: 'A contact field whose changes events report.',
})
export type TrackedField = Static<typeof TrackedField>

export const EVENT_DATA_DESCRIPTION = `What happened, in the same shape in the history and in webhook deliveries:
- \`contact_id\`, and \`actor\` (\`type\`: \`api_key\`, \`user\` or \`system\`; \`id\`: the key's or member's id, null for the service itself);
- \`contact\`: the contact after the change (for \`contact.deleted\`, as it was when it went to the trash); absent for \`contact.erased\`;
- \`changes\` (\`contact.updated\`, \`contact.merged\`): each changed field with \`previous\` and \`current\` values;
- \`merged_ids\` (\`contact.merged\`): the contacts merged into this one.
Once a contact is erased, its earlier events keep only \`contact_id\`, \`actor\` and \`"redacted": true\`.`

/** The original platform's webhook envelope, used for history as well. */
export const ContactEvent = Type.Object(
  {
    id: Uuid({ description: 'The event id; a receiver de-duplicates deliveries by it.' }),
    object: Type.Literal('event'),
    event: EventType,
    created_at: DateTime(),
    data: Type.Object(
      {
        contact_id: Uuid(),
        actor: Type.Object({
          type: StringEnum(['api_key', 'user', 'system'] as const),
          id: Nullable(Type.String()),
        }),
      },
      { additionalProperties: true, description: EVENT_DATA_DESCRIPTION },
    ),
  },
  {
    title: 'ContactEvent',
    examples: [
      {
        id: '0193a5a2-6c1e-7b7e-9d4a-3f2b1c0d9e8f',
        object: 'event',
        event: 'contact.updated',
        created_at: '2026-11-27T10:15:00.000Z',
        data: {
          contact_id: '0193a5a2-5b0d-7c6f-8e3a-2e1a0b9c8d7e',
          actor: { type: 'api_key', id: '0193a5a1-0000-7000-8000-000000000001' },
          contact: {
            id: '0193a5a2-5b0d-7c6f-8e3a-2e1a0b9c8d7e',
            first_name: 'Ana',
            email: 'ana@example.com',
          },
          changes: { first_name: { previous: 'Anna', current: 'Ana' } },
        },
      },
    ],
  },
)
export type ContactEvent = Static<typeof ContactEvent>

export const HistoryQuery = Type.Object(
  {
    limit: Type.Integer({
      minimum: 1,
      maximum: 1000,
      default: 50,
      description: 'Events per page (1 to 1000, default 50).',
    }),
    cursor: CursorPagingQuery.cursor,
  },
  { additionalProperties: false },
)
export type HistoryQuery = Static<typeof HistoryQuery>

export const HistoryPage = CursorPage(ContactEvent)
