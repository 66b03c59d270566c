import { type Static, Type } from '@sinclair/typebox'
import { Nullable, StringEnum, Uuid } from '../shared/schemas.js'

const CustomFieldTypeSchema = StringEnum(['string', 'number'], {
  description: 'The type every value of this field must have.',
})

export const CustomFieldCreateBody = Type.Object(
  {
    custom_field_name: Type.String({ minLength: 1, maxLength: 255 }),
    custom_field_type: CustomFieldTypeSchema,
    org_id: Type.Optional(
      Nullable(Uuid(), { description: "Defaults to, and must equal, the API key's organization." }),
    ),
  },
  { additionalProperties: false, examples: [{ custom_field_name: 'plan', custom_field_type: 'string' }] },
)
export type CustomFieldCreateBody = Static<typeof CustomFieldCreateBody>

export const CustomField = Type.Object(
  {
    id: Uuid(),
    custom_field_name: Type.String(),
    custom_field_type: CustomFieldTypeSchema,
    org_id: Uuid(),
  },
  { title: 'ContactCustomField' },
)
export type CustomField = Static<typeof CustomField>

export const CustomFieldIdParams = Type.Object({ id: Uuid({ description: 'The custom field id.' }) })
