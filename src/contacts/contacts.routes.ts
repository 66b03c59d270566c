import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import type { Kysely } from 'kysely'
import { principalOf } from '../auth/auth.hook.js'
import type { Database } from '../db/schema.js'
import { Envelope, envelope, errorResponses, Page, PaginationQuery } from '../shared/schemas.js'
import {
  BulkDeleteBody,
  BulkDeleteResult,
  Contact,
  ContactIdParams,
  ContactUpdateBody,
  DeletedContact,
  UpsertBody,
  UpsertQuery,
} from './contacts.schemas.js'
import * as contacts from './contacts.service.js'

const tags = ['Contacts']
const listDescription =
  "Contacts of the API key's organization, newest first. `page` past the end gives empty `items`; `next_page` and `previous_page` are null at the ends."

export const contactRoutes: FastifyPluginAsyncTypebox<{ db: Kysely<Database> }> = async (app, { db }) => {
  for (const [path, operationId, summary] of [
    ['/contact', 'read_contacts_api_v1_contact_get', 'List contacts'],
    [
      '/contact/list',
      'read_contact_list_api_v1_contact_list_get',
      'List contacts (older route, same as GET /contact)',
    ],
  ] as const) {
    app.get(
      path,
      {
        schema: {
          tags,
          operationId,
          summary,
          description: listDescription,
          querystring: PaginationQuery,
          response: { 200: Envelope(Page(Contact), 'retrieved'), ...errorResponses(401, 422) },
        },
      },
      async (request) =>
        envelope('retrieved', await contacts.listContacts(db, principalOf(request).orgId, request.query)),
    )
  }

  app.post(
    '/contact',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'create_contact_api_v1_contact_post',
        summary: 'Create a contact',
        description: "Creates a contact in the API key's organization. Every field is optional.",
        body: ContactUpdateBody,
        response: { 201: Envelope(Contact, 'created'), ...errorResponses(401, 403, 409, 413, 422) },
      },
    },
    async (request, reply) => {
      const contact = await contacts.createContact(db, principalOf(request), request.body)
      return reply.code(201).send(envelope('created', contact))
    },
  )

  app.post(
    '/contact/upsert',
    {
      config: { writes: true },
      preValidation: async (request) => {
        // The original takes only query parameters, so most callers send no body at all.
        if (request.body === undefined || request.body === null) request.body = {}
      },
      schema: {
        tags,
        operationId: 'upsert_contact_api_v1_contact_upsert_post',
        summary: 'Create or update a contact by email or phone number',
        description:
          'Finds the contact with this email (case-insensitively) or, failing that, this phone number, and sets the fields given, keeping the others; creates it when none matches. Fields may be query parameters (as the original takes them) or a JSON body. Answers 201 when it created the contact, 200 when it updated one.',
        querystring: UpsertQuery,
        body: UpsertBody,
        response: {
          200: Envelope(Contact, 'updated'),
          201: Envelope(Contact, 'created'),
          ...errorResponses(401, 403, 409, 413, 422),
        },
      },
    },
    async (request, reply) => {
      const result = await contacts.upsertContact(db, principalOf(request), request.query, request.body)
      return result.created
        ? reply.code(201).send(envelope('created', result.contact))
        : reply.code(200).send(envelope('updated', result.contact))
    },
  )

  app.delete(
    '/contact/multiple',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'delete_contacts_api_v1_contact_multiple_delete',
        summary: 'Delete several contacts',
        description:
          "Deletes those of the given contacts that belong to the API key's organization and lists the ids that matched none.",
        body: BulkDeleteBody,
        response: { 200: Envelope(BulkDeleteResult, 'deleted'), ...errorResponses(401, 403, 413, 422) },
      },
    },
    async (request) =>
      envelope(
        'deleted',
        await contacts.deleteContacts(db, principalOf(request).orgId, request.body.contact_ids),
      ),
  )

  app.get(
    '/contact/:contact_id',
    {
      schema: {
        tags,
        operationId: 'read_contact_api_v1_contact__contact_id__get',
        summary: 'Get a contact by id',
        params: ContactIdParams,
        response: { 200: Envelope(Contact, 'retrieved'), ...errorResponses(401, 404, 422) },
      },
    },
    async (request) =>
      envelope(
        'retrieved',
        await contacts.getContact(db, principalOf(request).orgId, request.params.contact_id),
      ),
  )

  app.put(
    '/contact/:contact_id',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'update_contact_api_v1_contact__contact_id__put',
        summary: 'Update a contact by id',
        description:
          'A partial update: only the fields present in the body change; a field sent as null becomes null; channels, user_attributes and custom_fields sent as objects replace the stored object. Unknown fields are ignored. Returns the whole updated contact.',
        params: ContactIdParams,
        body: ContactUpdateBody,
        response: { 200: Envelope(Contact, 'updated'), ...errorResponses(401, 403, 404, 413, 422) },
      },
    },
    async (request) =>
      envelope(
        'updated',
        await contacts.updateContact(db, principalOf(request), request.params.contact_id, request.body),
      ),
  )

  app.delete(
    '/contact/:contact_id',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'delete_contact_api_v1_contact__contact_id__delete',
        summary: 'Delete a contact by id',
        params: ContactIdParams,
        response: { 200: Envelope(DeletedContact, 'deleted'), ...errorResponses(401, 403, 404, 422) },
      },
    },
    async (request) =>
      envelope(
        'deleted',
        await contacts.deleteContact(db, principalOf(request).orgId, request.params.contact_id),
      ),
  )
}
