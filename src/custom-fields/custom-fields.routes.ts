import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { Kysely } from 'kysely'
import { principalOf } from '../auth/auth.hook.js'
import type { Database } from '../db/schema.js'
import type { CursorCodec } from '../shared/cursor.js'
import { Envelope, envelope, errorResponses, ListPagingQuery, listAnswer, Uuid } from '../shared/schemas.js'
import { CustomField, CustomFieldCreateBody, CustomFieldIdParams } from './custom-fields.schemas.js'
import * as customFields from './custom-fields.service.js'

const tags = ['Contact custom fields']

export const customFieldRoutes: FastifyPluginAsyncTypebox<{
  db: Kysely<Database>
  cursors: () => Promise<CursorCodec>
}> = async (app, { db, cursors }) => {
  const fieldList = listAnswer(CustomField)
  app.post(
    '/contact_custom_field',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'create_contact_custom_field_api_v1_contact_custom_field_post',
        summary: 'Define a custom field',
        description:
          'Declares a custom field and its type for the organization. Contact values under this name must then have that type. Names are unique per organization.',
        body: CustomFieldCreateBody,
        response: { 201: Envelope(CustomField, 'created'), ...errorResponses(401, 403, 409, 422) },
      },
    },
    async (request, reply) => {
      const field = await customFields.createCustomField(db, principalOf(request), request.body)
      return reply.code(201).send(envelope('created', field))
    },
  )

  for (const [path, operationId] of [
    ['/contact_custom_field/list', 'read_contact_custom_field_list_api_v1_contact_custom_field_list_get'],
    ['/contact_custom_field', 'read_contact_custom_fields_api_v1_contact_custom_field_get'],
  ] as const) {
    app.get(
      path,
      {
        schema: {
          tags,
          operationId,
          summary: 'List custom field definitions',
          description: 'Custom field definitions of the organization, oldest first.',
          querystring: ListPagingQuery,
          response: { 200: fieldList.schema, ...errorResponses(401, 422) },
        },
      },
      async (request, reply) =>
        fieldList.send(
          reply,
          await customFields.listCustomFieldsPaged(db, cursors, principalOf(request).orgId, request.query),
        ),
    )
  }

  app.delete(
    '/contact_custom_field/:id',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'delete_contact_custom_field_api_v1_contact_custom_field__id__delete',
        summary: 'Delete a custom field definition',
        description:
          'Removes the definition; values already stored on contacts are kept and no longer type-checked.',
        params: CustomFieldIdParams,
        response: {
          200: Envelope(Type.Object({ id: Uuid() }), 'deleted'),
          ...errorResponses(401, 403, 404, 422),
        },
      },
    },
    async (request) =>
      envelope(
        'deleted',
        await customFields.deleteCustomField(db, principalOf(request).orgId, request.params.id),
      ),
  )
}
