import { type Static, Type } from '@sinclair/typebox'
import { DateTime, JsonObject, MAX_NAME_LENGTH, Nullable, StringEnum, Uuid } from '../shared/schemas.js'

const SEED_UUID = '3c90c3cc-0d44-4b50-8888-8dd25736052a'

/** The body of `PUT /contact/{id}` exactly as the original documents it (the seed page). */
export const SEED_UPDATE_EXAMPLE = {
  first_name: '<string>',
  last_name: '<string>',
  email: '<string>',
  channels: {},
  user_attributes: {},
  last_seen: '2023-11-07T05:31:56Z',
  last_sent: '2023-11-07T05:31:56Z',
  org_id: SEED_UUID,
  first_assistant_id: SEED_UUID,
  last_assistant_id: SEED_UUID,
  first_widget_id: SEED_UUID,
  last_widget_id: SEED_UUID,
  custom_fields: {},
}

const NameField = (description: string) =>
  Type.Optional(Nullable(Type.String({ maxLength: MAX_NAME_LENGTH }), { description }))
const ObjectField = (description: string) => Type.Optional(Nullable(JsonObject(), { description }))
const UuidField = (description: string) => Type.Optional(Nullable(Uuid(), { description }))
const DateTimeField = (description: string) => Type.Optional(Nullable(DateTime(), { description }))

/** Fields a client may write, in the original's order. Every one is optional and nullable. */
export const contactWritableFields = {
  first_name: NameField('Given name.'),
  last_name: NameField('Family name.'),
  email: NameField('Email address; any string up to 320 characters, matched case-insensitively.'),
  channels: ObjectField(
    'Channel identities, for example {"telephone": "+15551234567", "whatsapp": "+15551234567"}. Replaces the stored object; null stores {}.',
  ),
  user_attributes: ObjectField(
    'Attributes captured in conversations. Replaces the stored object; null stores {}.',
  ),
  last_seen: DateTimeField('When the contact was last seen (RFC 3339).'),
  last_sent: DateTimeField('When a message was last sent to the contact (RFC 3339).'),
  org_id: UuidField("Organization; defaults to, and must equal, the API key's organization."),
  first_assistant_id: UuidField('The assistant that met the contact first.'),
  last_assistant_id: UuidField('The assistant that met the contact last.'),
  first_widget_id: UuidField('The widget through which the contact came first.'),
  last_widget_id: UuidField('The widget through which the contact came last.'),
  custom_fields: ObjectField(
    'Values keyed by custom field name; a name with a definition must match its type (string or number). Replaces the stored object; null stores {}.',
  ),
  external_id: Type.Optional(
    Nullable(Type.String({ maxLength: 255 }), {
      description:
        'Your own id for this person (an extension of the original API); unique in the organization.',
    }),
  ),
}

export const ContactUpdateBody = Type.Object(contactWritableFields, {
  additionalProperties: false,
  title: 'IContactUpdate',
  description: 'Only the fields present are written; unknown fields are ignored.',
  examples: [SEED_UPDATE_EXAMPLE],
})
export type ContactUpdateBody = Static<typeof ContactUpdateBody>

export const Contact = Type.Object(
  {
    first_name: Nullable(Type.String()),
    last_name: Nullable(Type.String()),
    email: Nullable(Type.String()),
    channels: JsonObject(),
    user_attributes: JsonObject(),
    last_seen: Nullable(DateTime()),
    last_sent: Nullable(DateTime()),
    org_id: Uuid(),
    first_assistant_id: Nullable(Uuid()),
    last_assistant_id: Nullable(Uuid()),
    first_widget_id: Nullable(Uuid()),
    last_widget_id: Nullable(Uuid()),
    custom_fields: JsonObject(),
    id: Uuid(),
    created_at: DateTime(),
    updated_at: DateTime(),
    external_id: Nullable(Type.String(), { description: 'Your own id for this person (extension).' }),
  },
  { title: 'Contact' },
)
export type Contact = Static<typeof Contact>

export const TrashedContact = Type.Object(
  { ...Contact.properties, deleted_at: DateTime({ description: 'When the contact went to the trash.' }) },
  { title: 'TrashedContact' },
)
export type TrashedContact = Static<typeof TrashedContact>

/** PATCH: the writable fields, with the objects read as JSON merge patches (RFC 7396). */
export const ContactPatchBody = Type.Object(contactWritableFields, {
  additionalProperties: false,
  title: 'ContactMergePatch',
  description:
    'A JSON merge patch (RFC 7396): members left out are kept, null clears, and channels, user_attributes and custom_fields are merged key by key (null inside them removes that key).',
  examples: [{ custom_fields: { plan: 'pro' }, channels: { instagram: null } }],
})
export type ContactPatchBody = Static<typeof ContactPatchBody>

export const ContactIdParams = Type.Object({ contact_id: Uuid({ description: 'The contact id.' }) })

const phoneNumber = Type.Optional(
  Nullable(Type.String({ maxLength: 64 }), {
    description: 'Phone number with country code, for example +16501111234 or 16501111234.',
  }),
)

export const UpsertQuery = Type.Object({
  first_name: Type.Optional(Type.String({ maxLength: MAX_NAME_LENGTH })),
  last_name: Type.Optional(Type.String({ maxLength: MAX_NAME_LENGTH })),
  email: Type.Optional(Type.String({ maxLength: MAX_NAME_LENGTH })),
  phone_number: Type.Optional(Type.String({ maxLength: 64 })),
  external_id: Type.Optional(Type.String({ maxLength: 255 })),
})
export type UpsertQuery = Static<typeof UpsertQuery>

export const UpsertBody = Type.Object(
  { ...contactWritableFields, phone_number: phoneNumber },
  {
    additionalProperties: false,
    title: 'ContactUpsert',
    description:
      'Optional; the same fields may be given as query parameters instead, as the original API takes them.',
  },
)
export type UpsertBody = Static<typeof UpsertBody>

export const BulkDeleteBody = Type.Object(
  { contact_ids: Type.Array(Uuid(), { minItems: 1, maxItems: 1000 }) },
  { additionalProperties: false, examples: [{ contact_ids: [SEED_UUID] }] },
)

export const BulkDeleteResult = Type.Object({
  deleted: Type.Integer({ description: 'How many contacts were deleted.' }),
  not_found: Type.Array(Uuid(), { description: 'Ids that matched no contact of your organization.' }),
})

export const DeletedContact = Type.Object({ id: Uuid() })

export const MAX_BATCH_ITEMS = 1000

export const BatchUpsertBody = Type.Object(
  {
    contacts: Type.Array(
      Type.Unknown({ description: 'One upsert body (see ContactUpsert); each is validated on its own.' }),
      {
        minItems: 1,
        maxItems: MAX_BATCH_ITEMS,
      },
    ),
  },
  {
    additionalProperties: false,
    examples: [
      {
        contacts: [
          { email: 'ada@example.com', first_name: 'Ada' },
          { phone_number: '+16501111234', custom_fields: { plan: 'pro' } },
        ],
      },
    ],
  },
)

export const BatchItemResult = Type.Object({
  index: Type.Integer({ description: 'Position of the item in the request.' }),
  status: StringEnum(['created', 'updated', 'error']),
  id: Type.Optional(Uuid()),
  error: Type.Optional(
    Type.Object({
      code: Type.String(),
      detail: Type.Unknown({
        description: 'A message, or a list of validation problems with `loc` inside the item.',
      }),
      existing_id: Type.Optional(Uuid()),
    }),
  ),
})

export const BatchUpsertResult = Type.Object({
  created: Type.Integer(),
  updated: Type.Integer(),
  failed: Type.Integer(),
  results: Type.Array(BatchItemResult),
})

export const MergeBody = Type.Object(
  {
    primary_id: Uuid({ description: 'The contact that survives.' }),
    duplicate_ids: Type.Array(Uuid(), { minItems: 1, maxItems: 20, description: 'Contacts merged into it.' }),
  },
  { additionalProperties: false },
)
export type MergeBody = Static<typeof MergeBody>

export const Duplicate = Type.Object({
  ...Contact.properties,
  matched_on: Type.Array(StringEnum(['email', 'phone', 'name_and_channel']), {
    description: 'Why this contact looks like the same person.',
  }),
})
export type Duplicate = Static<typeof Duplicate>

export const IfMatchHeaders = Type.Object({
  'if-match': Type.Optional(
    Type.String({
      description:
        'Write only if the contact is still at this version: the ETag of an earlier answer (`"3"`), or `*`. Otherwise 412 and nothing changes.',
    }),
  ),
})
