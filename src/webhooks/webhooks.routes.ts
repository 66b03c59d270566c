import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from '@sinclair/typebox'
import type { Kysely } from 'kysely'
import { principalOf } from '../auth/auth.hook.js'
import type { Database } from '../db/schema.js'
import type { CursorCodec } from '../shared/cursor.js'
import { Envelope, envelope, errorResponses, Uuid } from '../shared/schemas.js'
import type { TargetPolicy } from './targets.js'
import {
  Delivery,
  DeliveryIdParams,
  DeliveryLogPage,
  DeliveryLogQuery,
  DeliveryWithAttempts,
  Webhook,
  WebhookCreateBody,
  WebhookIdParams,
  WebhookListPage,
  WebhookListQuery,
  WebhookUpdateBody,
  WebhookWithSecret,
} from './webhooks.schemas.js'
import * as webhooks from './webhooks.service.js'

const tags = ['Webhooks']

const DELIVERY_DESCRIPTION = `Every change to a contact is recorded as an event and POSTed to each enabled webhook that takes its type, as \`{"id", "object": "event", "event", "created_at", "data"}\` (the shape of \`GET /contact/{contact_id}/history\`). Each delivery carries \`X-Contacts-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>" keyed with the webhook's secret>\`, \`X-Contacts-Event-Id\` (de-duplicate by it: delivery is at least once), \`X-Contacts-Event\` and \`X-Contacts-Delivery-Id\`. A 2xx answer acknowledges; anything else (or no answer within 10 s) is retried with exponential backoff and jitter for 24 hours. Events of one contact arrive in order. A webhook whose every delivery fails for 24 hours is disabled, with the reason in \`disabled_reason\`.`

export const webhookRoutes: FastifyPluginAsyncTypebox<{
  db: Kysely<Database>
  cursors: () => Promise<CursorCodec>
  policy: TargetPolicy
}> = async (app, { db, cursors, policy }) => {
  app.post(
    '/outbound_webhook',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'create_outbound_webhook_api_v1_outbound_webhook_post',
        summary: 'Create a webhook',
        description: `${DELIVERY_DESCRIPTION}\n\nThe answer holds the signing \`secret\`, shown only here (and when rotated).`,
        body: WebhookCreateBody,
        response: { 201: Envelope(WebhookWithSecret, 'created'), ...errorResponses(401, 403, 422) },
      },
    },
    async (request, reply) => {
      const webhook = await webhooks.createWebhook(db, policy, principalOf(request), request.body)
      return reply.code(201).send(envelope('created', webhook))
    },
  )

  for (const [path, operationId] of [
    ['/outbound_webhook/list', 'read_outbound_webhook_list_api_v1_outbound_webhook_list_get'],
    ['/outbound_webhook', 'read_outbound_webhooks_api_v1_outbound_webhook_get'],
  ] as const) {
    app.get(
      path,
      {
        schema: {
          tags,
          operationId,
          summary: 'List webhooks',
          description: 'The organization’s webhooks, newest first, a page at a time (`limit`, `cursor`).',
          querystring: WebhookListQuery,
          response: { 200: Envelope(WebhookListPage, 'retrieved'), ...errorResponses(401, 422) },
        },
      },
      async (request) =>
        envelope(
          'retrieved',
          await webhooks.listWebhooks(db, cursors, principalOf(request).orgId, request.query),
        ),
    )
  }

  app.get(
    '/outbound_webhook/:webhook_id',
    {
      schema: {
        tags,
        operationId: 'read_outbound_webhook_api_v1_outbound_webhook__webhook_id__get',
        summary: 'Get a webhook',
        description: 'Includes whether it is failing (`failing_since`) or was disabled for failing, and why.',
        params: WebhookIdParams,
        response: { 200: Envelope(Webhook, 'retrieved'), ...errorResponses(401, 404, 422) },
      },
    },
    async (request) =>
      envelope(
        'retrieved',
        await webhooks.getWebhook(db, principalOf(request).orgId, request.params.webhook_id),
      ),
  )

  app.put(
    '/outbound_webhook/:webhook_id',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'update_outbound_webhook_api_v1_outbound_webhook__webhook_id__put',
        summary: 'Update a webhook',
        description:
          'Changes the fields given. Setting `enabled: true` on a webhook disabled for failing clears the reason, and its pending deliveries resume.',
        params: WebhookIdParams,
        body: WebhookUpdateBody,
        response: { 200: Envelope(Webhook, 'updated'), ...errorResponses(401, 403, 404, 422) },
      },
    },
    async (request) =>
      envelope(
        'updated',
        await webhooks.updateWebhook(
          db,
          policy,
          principalOf(request),
          request.params.webhook_id,
          request.body,
        ),
      ),
  )

  app.delete(
    '/outbound_webhook/:webhook_id',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'delete_outbound_webhook_api_v1_outbound_webhook__webhook_id__delete',
        summary: 'Delete a webhook',
        description: 'Stops all deliveries to it at once and removes its delivery log.',
        params: WebhookIdParams,
        response: {
          200: Envelope(Type.Object({ id: Uuid() }), 'deleted'),
          ...errorResponses(401, 403, 404, 422),
        },
      },
    },
    async (request) =>
      envelope(
        'deleted',
        await webhooks.deleteWebhook(db, principalOf(request).orgId, request.params.webhook_id),
      ),
  )

  app.post(
    '/outbound_webhook/:webhook_id/rotate_secret',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId: 'rotate_outbound_webhook_secret_api_v1_outbound_webhook__webhook_id__rotate_secret_post',
        summary: 'Replace a webhook’s signing secret',
        description: 'Deliveries from now on are signed with the new secret, shown only in this answer.',
        params: WebhookIdParams,
        response: { 200: Envelope(WebhookWithSecret, 'updated'), ...errorResponses(401, 403, 404, 422) },
      },
    },
    async (request) =>
      envelope(
        'updated',
        await webhooks.rotateWebhookSecret(db, principalOf(request).orgId, request.params.webhook_id),
      ),
  )

  app.get(
    '/outbound_webhook/:webhook_id/logs',
    {
      schema: {
        tags,
        operationId: 'read_outbound_webhook_logs_api_v1_outbound_webhook__webhook_id__logs_get',
        summary: 'A webhook’s delivery log',
        description:
          'Deliveries newest first, with their status, attempts, next attempt and the last status code or error; `status` filters.',
        params: WebhookIdParams,
        querystring: DeliveryLogQuery,
        response: { 200: Envelope(DeliveryLogPage, 'retrieved'), ...errorResponses(401, 404, 422) },
      },
    },
    async (request) =>
      envelope(
        'retrieved',
        await webhooks.listDeliveries(
          db,
          cursors,
          principalOf(request).orgId,
          request.params.webhook_id,
          request.query,
        ),
      ),
  )

  app.get(
    '/outbound_webhook/:webhook_id/logs/:delivery_id',
    {
      schema: {
        tags,
        operationId:
          'read_outbound_webhook_delivery_api_v1_outbound_webhook__webhook_id__logs__delivery_id__get',
        summary: 'One delivery, with every attempt',
        description:
          'A delivery of one event to this webhook: its status, and each attempt with its time, the status code or error it got, and how long it took.',
        params: DeliveryIdParams,
        response: { 200: Envelope(DeliveryWithAttempts, 'retrieved'), ...errorResponses(401, 404, 422) },
      },
    },
    async (request) =>
      envelope(
        'retrieved',
        await webhooks.getDelivery(
          db,
          principalOf(request).orgId,
          request.params.webhook_id,
          request.params.delivery_id,
        ),
      ),
  )

  app.post(
    '/outbound_webhook/:webhook_id/logs/:delivery_id/redeliver',
    {
      config: { writes: true },
      schema: {
        tags,
        operationId:
          'redeliver_outbound_webhook_delivery_api_v1_outbound_webhook__webhook_id__logs__delivery_id__redeliver_post',
        summary: 'Send a delivery’s event again',
        description:
          'Queues a new delivery of the same event (same event id). 409 `delivery_pending` while that event is still being delivered to the webhook.',
        params: DeliveryIdParams,
        response: { 201: Envelope(Delivery, 'created'), ...errorResponses(401, 403, 404, 409, 422) },
      },
    },
    async (request, reply) => {
      const delivery = await webhooks.redeliver(
        db,
        principalOf(request).orgId,
        request.params.webhook_id,
        request.params.delivery_id,
      )
      return reply.code(201).send(envelope('created', delivery))
    },
  )
}
