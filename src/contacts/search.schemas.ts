import { type Static, Type } from '@sinclair/typebox'
import { CursorPage, CursorPagingQuery, DateTime, OptionalPagination, Uuid } from '../shared/schemas.js'
import { Contact } from './contacts.schemas.js'

export const FILTER_OPERATORS = [
  'eq',
  'neq',
  'in',
  'nin',
  'gt',
  'gte',
  'lt',
  'lte',
  'contains',
  'starts_with',
  'exists',
] as const
export type FilterOperator = (typeof FILTER_OPERATORS)[number]

/** Bounds of one search: how deep `and`/`or`/`not` nest and how many conditions it holds. */
export const MAX_FILTER_DEPTH = 8
export const MAX_FILTER_CONDITIONS = 100
export const MAX_IN_VALUES = 100

const Scalar = Type.Union([Type.String({ maxLength: 1000 }), Type.Number(), Type.Boolean()])

export const FilterCondition = Type.Object(
  {
    field: Type.String({
      minLength: 1,
      maxLength: 200,
      description:
        'A contact field (`first_name`, `last_name`, `email`, `phone`, `external_id`, `id`, `first_assistant_id`, `last_assistant_id`, `first_widget_id`, `last_widget_id`, `created_at`, `updated_at`, `last_seen`, `last_sent`), or `custom_fields.<name>`, `user_attributes.<name>`, `channels.<name>`.',
    }),
    op: Type.Unsafe<FilterOperator>({ type: 'string', enum: [...FILTER_OPERATORS] }),
    value: Type.Optional(
      Type.Union([Scalar, Type.Array(Scalar, { maxItems: MAX_IN_VALUES })], {
        description:
          'A string, number or boolean; a list for `in` and `nin`; absent for `exists` (or `true` / `false`).',
      }),
    ),
  },
  // No additionalProperties: false in a union: the validator would strip the keys of the other
  // branches while trying this one. The compiler refuses unknown keys instead.
  {},
)
export type FilterCondition = Static<typeof FilterCondition>

export type Filter = FilterCondition | { and: Filter[] } | { or: Filter[] } | { not: Filter }

export const ContactFilter = Type.Recursive(
  (Self) =>
    Type.Union([
      FilterCondition,
      Type.Object({ and: Type.Array(Self, { minItems: 1, maxItems: MAX_FILTER_CONDITIONS }) }),
      Type.Object({ or: Type.Array(Self, { minItems: 1, maxItems: MAX_FILTER_CONDITIONS }) }),
      Type.Object({ not: Self }),
    ]),
  { $id: 'ContactFilter', title: 'ContactFilter' },
)

const SORTABLE_DESCRIPTION =
  'Comma-separated fields, `-` for descending: `created_at`, `updated_at`, `last_seen`, `last_sent`, `first_name`, `last_name`, `email`, `external_id`, `id`. Empty values sort last either way; the id breaks ties. Default `-created_at`.'

const Sort = Type.String({
  maxLength: 200,
  pattern: '^-?[a-z_]+(,-?[a-z_]+)*$',
  description: SORTABLE_DESCRIPTION,
})
const Q = Type.String({
  maxLength: 200,
  description:
    'Case-insensitive text that first name, last name, "first last", email or a channel value (phone numbers also in E.164) contains.',
})

export const SearchBody = Type.Object(
  {
    filter: Type.Optional(ContactFilter),
    q: Type.Optional(Q),
    sort: Type.Optional(Sort),
    ...CursorPagingQuery,
  },
  {
    additionalProperties: false,
    examples: [
      {
        filter: {
          and: [
            { field: 'custom_fields.plan', op: 'in', value: ['gold', 'platinum'] },
            {
              or: [
                { field: 'last_seen', op: 'gte', value: '2026-01-01T00:00:00Z' },
                { not: { field: 'email', op: 'exists' } },
              ],
            },
          ],
        },
        q: 'ann',
        sort: '-last_seen,first_name',
        limit: 100,
      },
    ],
  },
)
export type SearchBody = Static<typeof SearchBody>

const uuidFilter = (description: string) => Type.Optional(Uuid({ description }))
const after = (field: string) =>
  Type.Optional(DateTime({ description: `Only contacts whose ${field} is later than this time.` }))
const before = (field: string) =>
  Type.Optional(DateTime({ description: `Only contacts whose ${field} is earlier than this time.` }))

/**
 * The list route's query: the original `page` and `size`, and the filters. Parameters named
 * `custom_fields.<name>`, `custom_fields.<name>[gt|gte|lt|lte|neq]`, `user_attributes.<name>` and
 * `channels.<name>` are accepted too; any other unknown parameter is a 422.
 */
export const ListQuery = Type.Object(
  {
    ...OptionalPagination,
    ...CursorPagingQuery,
    sort: Type.Optional(Sort),
    q: Type.Optional(Q),
    email: Type.Optional(Type.String({ maxLength: 320, description: 'Email, compared case-insensitively.' })),
    phone: Type.Optional(
      Type.String({ maxLength: 64, description: 'A phone number in any common format, compared in E.164.' }),
    ),
    external_id: Type.Optional(Type.String({ maxLength: 255, description: 'Your own id for the contact.' })),
    first_assistant_id: uuidFilter('The assistant that met the contact first.'),
    last_assistant_id: uuidFilter('The assistant that met the contact last.'),
    first_widget_id: uuidFilter('The widget through which the contact came first.'),
    last_widget_id: uuidFilter('The widget through which the contact came last.'),
    created_after: after('created_at'),
    created_before: before('created_at'),
    updated_after: after('updated_at'),
    updated_before: before('updated_at'),
    last_seen_after: after('last_seen'),
    last_seen_before: before('last_seen'),
    last_sent_after: after('last_sent'),
    last_sent_before: before('last_sent'),
  },
  { additionalProperties: Type.Union([Type.String(), Type.Array(Type.String())]) },
)
export type ListQuery = Static<typeof ListQuery>

export const ContactCursorPage = CursorPage(Contact)
