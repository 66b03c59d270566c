import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { FastifyReply } from 'fastify'
import type { Kysely } from 'kysely'
import { principalOf } from '../auth/auth.hook.js'
import type { Database } from '../db/schema.js'
import { HistoryPage, HistoryQuery } from '../events/events.schemas.js'
import { etagOf, parseIfMatch } from '../http/etag.js'
import {
  Envelope,
  envelope,
  errorResponses,
  ListPagingQuery,
  listAnswer,
  pagingOf,
} from '../shared/schemas.js'
import { batchUpsert } from './batch.service.js'
import {
  BatchUpsertBody,
  BatchUpsertResult,
  BulkDeleteBody,
  BulkDeleteResult,
  Contact,
  ContactIdParams,
  ContactPatchBody,
  ContactUpdateBody,
  DeletedContact,
  Duplicate,
  IfMatchHeaders,
  MergeBody,
  TrashedContact,
  UpsertBody,
  UpsertQuery,
} from './contacts.schemas.js'
import type { VersionedContact } from './contacts.service.js'
import * as contacts from './contacts.service.js'
import { findDuplicates, mergeContacts } from './merge.service.js'
import { ContactCursorPage, ListQuery, SearchBody } from './search.schemas.js'
import {
  listContactsPage,
  QUERY_ORIGINS,
  type SearchEngine,
  searchContacts,
  searchFromQuery,
} from './search.service.js'

const tags = ['Contacts']

/** A single-contact answer: the envelope, and the contact's version as its ETag (for If-Match). */
function sendContact(
  reply: FastifyReply,
  status: number,
  message: 'created' | 'retrieved' | 'updated',
  contact: VersionedContact,
) {
  return reply.code(status).header('etag', etagOf(contact.version)).send(envelope(message, contact))
}
const listDescription =
  "Contacts of the API key's organization, newest first. `page` past the end gives empty `items`; `next_page` and `previous_page` are null at the ends."

const SEARCH_DESCRIPTION = `Finds contacts with a filter that a query string cannot express: nested \`and\`, \`or\` and \`not\` over conditions \`{"field", "op", "value"}\` with the operators \`eq neq in nin gt gte lt lte contains starts_with exists\`, on every standard field and on \`custom_fields.<name>\`, \`user_attributes.<name>\` and \`channels.<name>\`. Text compares by code point (case-sensitive) except \`email\` (case-insensitive) and \`q\` (case-insensitive over names, email and channel values); \`phone\` compares in E.164; JSON values compare by their JSON type; a missing value matches only \`neq\`, \`nin\` and \`exists: false\`. Results come a page at a time: pass \`next_cursor\` back as \`cursor\` with the same filter and sort. Filters nest at most 8 levels and hold at most 100 conditions.`

export const contactRoutes: FastifyPluginAsyncTypebox<{
  db: Kysely<Database>
  engine: SearchEngine
}> = async (app, { db, engine }) => {
  const contactList = listAnswer(Contact)
  const trashList = listAnswer(TrashedContact)
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
          querystring: ListQuery,
          response: { 200: contactList.schema, ...errorResponses(401, 422) },
        },
      },
      async (request, reply) => {
        const { orgId } = principalOf(request)
        const query = request.query
        const search = await searchFromQuery(db, orgId, query)
        const paging = pagingOf(query)
        return contactList.send(
          reply,
          paging.mode === 'page'
            ? await listContactsPage(engine, orgId, { ...search, page: paging.page, size: paging.size })
            : await searchContacts(engine, orgId, { ...search, ...paging }, QUERY_ORIGINS),
        )
      },
    )
  }

  app.post(
    '/contact/search',
    {
      schema: {
        tags,
        operationId: 'search_contacts_api_v1_contact_search_post',
        summary: 'Search contacts',
        description: SEARCH_DESCRIPTION,
        body: SearchBody,
        response: { 200: Envelope(ContactCursorPage, 'retrieved'), ...errorResponses(401, 413, 422) },
      },
    },
    async (request) =>
      envelope('retrieved', await searchContacts(engine, principalOf(request).orgId, request.body)),
  )

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
      return sendContact(reply, 201, 'created', contact)
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
        ? sendContact(reply, 201, 'created', result.contact)
        : sendContact(reply, 200, 'updated', result.contact)
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
      envelope('deleted', await contacts.deleteContacts(db, principalOf(request), request.body.contact_ids)),
  )

  app.get(
    '/contact/:contact_id',
    {
      schema: {
        tags,
        operationId: 'read_contact_api_v1_contact__contact_id__get',
        summary: 'Get a contact by id',
        description:
          'The contact, with its version in the `ETag` header (send it back as `If-Match` to update only that version). A contact merged into another answers 404 with `code: contact_merged` and `merged_into`.',
        params: ContactIdParams,
        response: { 200: Envelope(Contact, 'retrieved'), ...errorResponses(401, 404, 422) },
      },
    },
    async (request, reply) =>
      sendContact(
        reply,
        200,
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
        headers: IfMatchHeaders,
        body: ContactUpdateBody,
        response: { 200: Envelope(Contact, 'updated'), ...errorResponses(401, 403, 404, 409, 412, 413, 422) },
      },
    },
    async (request, reply) => {
      const ifMatch = parseIfMatch(request.headers['if-match'])
      const contact = await contacts.updateContact(
        db,
        principalOf(request),
        request.params.contact_id,
        request.body,
        ifMatch,
      )
      return sendContact(reply, 200, 'updated', contact)
    },
  )

  app.patch(
    '/contact/:contact_id',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'patch_contact_api_v1_contact__contact_id__patch',
        summary: 'Change some fields of a contact (JSON merge patch)',
        description:
          'Send `application/merge-patch+json` (RFC 7396; `application/json` is read the same way): fields left out are kept, null clears a field, and channels, user_attributes and custom_fields are merged key by key, null inside them removing a key. Sets one custom field without reading the contact first. Safe against concurrent writers: the patch is applied to the latest version.',
        params: ContactIdParams,
        headers: IfMatchHeaders,
        body: ContactPatchBody,
        response: { 200: Envelope(Contact, 'updated'), ...errorResponses(401, 403, 404, 409, 412, 413, 422) },
      },
    },
    async (request, reply) => {
      const ifMatch = parseIfMatch(request.headers['if-match'])
      const contact = await contacts.patchContact(
        db,
        principalOf(request),
        request.params.contact_id,
        request.body,
        ifMatch,
      )
      return sendContact(reply, 200, 'updated', contact)
    },
  )

  app.post(
    '/contact/batch/upsert',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'batch_upsert_contacts_api_v1_contact_batch_upsert_post',
        summary: 'Create or update up to 1000 contacts',
        description:
          'Each item is an upsert body (matched on external_id, email or phone_number). All items run in one transaction with a savepoint each: an item that fails is rolled back alone and reported with its reason, the others are committed. Answers 200 when every item succeeded and 207 when some failed, with one result per item, in order.',
        body: BatchUpsertBody,
        response: {
          200: Envelope(BatchUpsertResult, 'updated'),
          207: Envelope(BatchUpsertResult, 'updated'),
          ...errorResponses(401, 403, 413, 422),
        },
      },
    },
    async (request, reply) => {
      const result = await batchUpsert(db, principalOf(request), request.body.contacts)
      return reply.code(result.failed > 0 ? 207 : 200).send(envelope('updated', result))
    },
  )

  app.post(
    '/contact/merge',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'merge_contacts_api_v1_contact_merge_post',
        summary: 'Merge duplicate contacts into one',
        description:
          "In one transaction: the primary keeps its non-null fields and takes the duplicates' for its null ones (most recently updated first); channels, user_attributes and custom_fields are merged key by key with the primary's keys winning; first_assistant_id, first_widget_id and created_at come from the earliest contact, last_assistant_id and last_widget_id from the most recently active, last_seen and last_sent are the latest. The primary takes every identity the duplicates held. The duplicates are removed; their ids then answer 404 with `merged_into` naming the primary.",
        body: MergeBody,
        response: { 200: Envelope(Contact, 'updated'), ...errorResponses(401, 403, 404, 409, 422) },
      },
    },
    async (request, reply) =>
      sendContact(reply, 200, 'updated', await mergeContacts(db, principalOf(request), request.body)),
  )

  app.get(
    '/contact/trash',
    {
      schema: {
        tags,
        operationId: 'read_contact_trash_api_v1_contact_trash_get',
        summary: 'List deleted contacts (the trash)',
        description:
          'Contacts deleted within the retention period (30 days unless configured otherwise), most recently deleted first. They can be restored, or erased for good.',
        querystring: ListPagingQuery,
        response: { 200: trashList.schema, ...errorResponses(401, 422) },
      },
    },
    async (request, reply) =>
      trashList.send(
        reply,
        await contacts.listTrashPaged(db, engine.cursors, principalOf(request).orgId, request.query),
      ),
  )

  app.get(
    '/contact/:contact_id/duplicates',
    {
      schema: {
        tags,
        operationId: 'read_contact_duplicates_api_v1_contact__contact_id__duplicates_get',
        summary: 'Find contacts that look like the same person',
        description:
          'Contacts with the same email or phone number anywhere in them (email field or channel values), or the same full name together with an equal channel value. Each says what matched in `matched_on`.',
        params: ContactIdParams,
        response: { 200: Envelope(Type.Array(Duplicate), 'retrieved'), ...errorResponses(401, 404, 422) },
      },
    },
    async (request) =>
      envelope('retrieved', await findDuplicates(db, principalOf(request).orgId, request.params.contact_id)),
  )

  app.get(
    '/contact/:contact_id/history',
    {
      schema: {
        tags,
        operationId: 'read_contact_history_api_v1_contact__contact_id__history_get',
        summary: "A contact's history",
        description:
          "Every recorded change to the contact, newest first, a page at a time (`limit`, then `next_cursor` as `cursor`): created, updated (with each changed field's previous and current value), deleted, restored, merged, erased, with who made it. The events are the ones webhooks deliver, in the same shape. History outlives the contact: an erased contact's events remain without their data.",
        params: ContactIdParams,
        querystring: HistoryQuery,
        response: { 200: Envelope(HistoryPage, 'retrieved'), ...errorResponses(401, 404, 422) },
      },
    },
    async (request) =>
      envelope(
        'retrieved',
        await contacts.contactHistory(
          db,
          engine.cursors,
          principalOf(request).orgId,
          request.params.contact_id,
          request.query,
        ),
      ),
  )

  app.post(
    '/contact/:contact_id/restore',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'restore_contact_api_v1_contact__contact_id__restore_post',
        summary: 'Restore a deleted contact from the trash',
        description:
          'Brings the contact back exactly as it was deleted, with its identities. 409 `identity_conflict` when another contact has taken one of them meanwhile (nothing is restored then).',
        params: ContactIdParams,
        response: { 200: Envelope(Contact, 'updated'), ...errorResponses(401, 403, 404, 409, 422) },
      },
    },
    async (request, reply) =>
      sendContact(
        reply,
        200,
        'updated',
        await contacts.restoreContact(db, principalOf(request), request.params.contact_id),
      ),
  )

  app.post(
    '/contact/:contact_id/erase',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'erase_contact_api_v1_contact__contact_id__erase_post',
        summary: 'Erase a contact and its personal data for good',
        description:
          'For data-protection requests: removes the contact (live or in the trash), its identities and every trace of it. Cannot be undone.',
        params: ContactIdParams,
        response: { 200: Envelope(DeletedContact, 'deleted'), ...errorResponses(401, 403, 404, 422) },
      },
    },
    async (request) =>
      envelope('deleted', await contacts.eraseContact(db, principalOf(request), request.params.contact_id)),
  )

  app.delete(
    '/contact/:contact_id',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'delete_contact_api_v1_contact__contact_id__delete',
        summary: 'Delete a contact by id (to the trash)',
        description:
          'Moves the contact to the trash, where it is kept for 30 days (configurable) and can be restored. Lists and lookups no longer show it, and its email, phone numbers and external id are free for other contacts at once.',
        params: ContactIdParams,
        headers: IfMatchHeaders,
        response: { 200: Envelope(DeletedContact, 'deleted'), ...errorResponses(401, 403, 404, 412, 422) },
      },
    },
    async (request) => {
      const ifMatch = parseIfMatch(request.headers['if-match'])
      return envelope(
        'deleted',
        await contacts.deleteContact(db, principalOf(request), request.params.contact_id, ifMatch),
      )
    },
  )
}
