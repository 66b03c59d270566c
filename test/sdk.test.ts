import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { type ContactsClient, createContactsClient } from '../sdk/src/index.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'
import { type Receiver, startReceiver } from './helpers/receiver.js'

/**
 * The SDK against the real server over HTTP, on each backend: every operation of the served
 * document is called through it at least once (the test checks that none is left out), and its
 * answers and errors come back with the types the compiler gave them.
 */
for (const backend of BACKENDS) {
  describe(`the TypeScript SDK on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    let receiver: Receiver
    let contacts: ContactsClient
    const called = new Set<string>()

    before(async () => {
      t = await startTestApp(backend, {
        dispatcher: true,
        importRunner: true,
        config: { webhookAllowedNetworks: '127.0.0.0/8', webhookPollIntervalMs: 50 },
      })
      org = await t.createOrg()
      receiver = await startReceiver()
      const baseUrl = await t.app.listen({ port: 0, host: '127.0.0.1' })
      contacts = createContactsClient({ baseUrl, apiKey: org.key })
      contacts.use({
        onRequest({ request, schemaPath }) {
          called.add(`${request.method} ${schemaPath}`)
        },
      })
    })
    after(async () => {
      await t?.close()
      await receiver?.close()
    })

    test('every route, through the typed client', async () => {
      const field = await contacts.POST('/api/v1/contact_custom_field', {
        body: { custom_field_name: 'plan', custom_field_type: 'string' },
      })
      assert.equal(field.response.status, 201)
      assert.equal((await contacts.GET('/api/v1/contact_custom_field')).data?.data.items.length, 1)
      assert.equal((await contacts.GET('/api/v1/contact_custom_field/list')).data?.data.items.length, 1)

      const hook = await contacts.POST('/api/v1/outbound_webhook', {
        body: { endpoint: `${receiver.url}/sdk`, events: ['contact.created'] },
      })
      const webhookId = hook.data?.data.id as string
      assert.ok(hook.data?.data.secret.startsWith('whsec_'))
      const webhookPath = { params: { path: { webhook_id: webhookId } } }
      assert.equal((await contacts.GET('/api/v1/outbound_webhook')).data?.data.items.length, 1)
      assert.equal((await contacts.GET('/api/v1/outbound_webhook/list')).data?.data.items.length, 1)
      assert.equal(
        (await contacts.GET('/api/v1/outbound_webhook/{webhook_id}', webhookPath)).data?.data.id,
        webhookId,
      )
      const renamed = await contacts.PUT('/api/v1/outbound_webhook/{webhook_id}', {
        ...webhookPath,
        body: { name: 'CRM' },
      })
      assert.equal(renamed.data?.data.name, 'CRM')
      const rotated = await contacts.POST('/api/v1/outbound_webhook/{webhook_id}/rotate_secret', webhookPath)
      assert.notEqual(rotated.data?.data.secret, hook.data?.data.secret)

      const ada = await contacts.POST('/api/v1/contact', {
        body: { first_name: 'Ada', email: 'ada@example.com', custom_fields: { plan: 'pro' } },
      })
      assert.equal(ada.response.status, 201)
      const adaId = ada.data?.data.id as string
      const adaPath = { params: { path: { contact_id: adaId } } }
      assert.equal((await contacts.GET('/api/v1/contact')).data?.data.items.length, 1)
      assert.equal(
        (await contacts.GET('/api/v1/contact/list', { params: { query: { q: 'ada' } } })).data?.data.items
          .length,
        1,
      )
      const searched = await contacts.POST('/api/v1/contact/search', {
        body: { filter: { field: 'custom_fields.plan', op: 'eq', value: 'pro' } },
      })
      assert.deepEqual(
        searched.data?.data.items.map((item) => item.id),
        [adaId],
      )
      const upserted = await contacts.POST('/api/v1/contact/upsert', {
        params: { query: { email: 'ADA@example.com' } },
        body: { last_name: 'Lovelace' },
      })
      assert.equal(upserted.data?.data.id, adaId)
      assert.equal(
        (await contacts.GET('/api/v1/contact/{contact_id}', adaPath)).data?.data.last_name,
        'Lovelace',
      )
      const put = await contacts.PUT('/api/v1/contact/{contact_id}', {
        ...adaPath,
        body: { first_name: 'Augusta Ada' },
      })
      assert.equal(put.data?.data.first_name, 'Augusta Ada')
      const patched = await contacts.PATCH('/api/v1/contact/{contact_id}', {
        ...adaPath,
        body: { custom_fields: { seats: 3 } },
      })
      assert.deepEqual(patched.data?.data.custom_fields, { plan: 'pro', seats: 3 })

      const batch = await contacts.POST('/api/v1/contact/batch/upsert', {
        body: {
          contacts: [
            { email: 'grace@example.com', first_name: 'Grace' },
            { email: 'ada+twin@example.com', first_name: 'Augusta Ada', last_name: 'Lovelace' },
            { phone_number: '+16505550101', first_name: 'Alan' },
          ],
        },
      })
      assert.equal(batch.data?.data.created, 3)
      const [graceId, twinId, alanId] = (batch.data?.data.results ?? []).map((result) => result.id as string)
      const duplicates = await contacts.GET('/api/v1/contact/{contact_id}/duplicates', adaPath)
      assert.ok(Array.isArray(duplicates.data?.data))
      const merged = await contacts.POST('/api/v1/contact/merge', {
        body: { primary_id: adaId, duplicate_ids: [twinId as string] },
      })
      assert.equal(merged.data?.data.id, adaId)
      const history = await contacts.GET('/api/v1/contact/{contact_id}/history', adaPath)
      assert.equal(history.data?.data.items[0]?.event, 'contact.merged')

      const gracePath = { params: { path: { contact_id: graceId as string } } }
      assert.equal((await contacts.DELETE('/api/v1/contact/{contact_id}', gracePath)).response.status, 200)
      assert.equal((await contacts.GET('/api/v1/contact/trash')).data?.data.items.length, 1)
      assert.equal(
        (await contacts.POST('/api/v1/contact/{contact_id}/restore', gracePath)).response.status,
        200,
      )
      const bulk = await contacts.DELETE('/api/v1/contact/multiple', {
        body: { contact_ids: [graceId as string] },
      })
      assert.equal(bulk.data?.data.deleted, 1)
      const erased = await contacts.POST('/api/v1/contact/{contact_id}/erase', {
        params: { path: { contact_id: alanId as string } },
      })
      assert.equal(erased.data?.data.id, alanId)

      const upload = await contacts.POST('/api/v1/contact/import', {
        params: { query: { delimiter: ';', file_name: 'sdk.csv' } },
        body: 'email;first_name\nlin@example.com;Lin\n;nobody\n' as never,
        bodySerializer: (body: unknown) => body as string,
        headers: { 'content-type': 'text/csv' },
      })
      assert.equal(upload.response.status, 202)
      const jobPath = { params: { path: { job_id: upload.data?.data.id as string } } }
      let job = upload.data?.data
      while (job && job.status !== 'completed' && job.status !== 'failed') {
        await new Promise((resolve) => setTimeout(resolve, 50))
        job = (await contacts.GET('/api/v1/contact/import/{job_id}', jobPath)).data?.data
      }
      assert.deepEqual([job?.created, job?.failed], [1, 1])
      assert.equal((await contacts.GET('/api/v1/contact/import')).data?.data.items.length, 1)
      const failures = await contacts.GET('/api/v1/contact/import/{job_id}/failures', {
        ...jobPath,
        parseAs: 'text',
      })
      assert.match(failures.data ?? '', /^line,reason,email,first_name/)
      const exported = await contacts.GET('/api/v1/contact/export', {
        params: { query: { format: 'ndjson' } },
        parseAs: 'text',
      })
      assert.equal((exported.data ?? '').trim().split('\n').length, 2)

      await receiver.until(() => receiver.received.some((request) => request.status === 200))
      let log = await contacts.GET('/api/v1/outbound_webhook/{webhook_id}/logs', webhookPath)
      for (let i = 0; i < 100 && log.data?.data.items.every((d) => d.status !== 'succeeded'); i++) {
        await new Promise((resolve) => setTimeout(resolve, 50))
        log = await contacts.GET('/api/v1/outbound_webhook/{webhook_id}/logs', webhookPath)
      }
      const delivered = log.data?.data.items.find((delivery) => delivery.status === 'succeeded')
      assert.ok(delivered, 'a delivery succeeded')
      const deliveryPath = { params: { path: { webhook_id: webhookId, delivery_id: delivered.id } } }
      const attempts = await contacts.GET(
        '/api/v1/outbound_webhook/{webhook_id}/logs/{delivery_id}',
        deliveryPath,
      )
      assert.equal(attempts.data?.data.attempts_log[0]?.status_code, 200)
      const again = await contacts.POST(
        '/api/v1/outbound_webhook/{webhook_id}/logs/{delivery_id}/redeliver',
        deliveryPath,
      )
      assert.equal(again.response.status, 201)

      assert.equal(
        (await contacts.DELETE('/api/v1/outbound_webhook/{webhook_id}', webhookPath)).response.status,
        200,
      )
      const fieldId = field.data?.data.id as string
      assert.equal(
        (await contacts.DELETE('/api/v1/contact_custom_field/{id}', { params: { path: { id: fieldId } } }))
          .response.status,
        200,
      )
    })

    test('errors come back typed, in the shapes of the contract', async () => {
      const missing = await contacts.GET('/api/v1/contact/{contact_id}', {
        params: { path: { contact_id: '00000000-0000-4000-8000-000000000000' } },
      })
      assert.equal(missing.response.status, 404)
      assert.equal(missing.data, undefined)
      assert.equal(missing.error?.code, 'contact_not_found')
      const invalid = await contacts.POST('/api/v1/contact', { body: { last_seen: 'last tuesday' } })
      assert.equal(invalid.response.status, 422)
      const issues = invalid.error?.detail
      assert.ok(Array.isArray(issues))
      assert.deepEqual(issues[0]?.loc, ['body', 'last_seen'])
    })

    test('no operation of the served document was left out', () => {
      const document = t.app.swagger() as { paths: Record<string, Record<string, unknown>> }
      const operations = Object.entries(document.paths).flatMap(([path, item]) =>
        Object.keys(item).map((method) => `${method.toUpperCase()} ${path}`),
      )
      assert.equal(operations.length >= 36, true)
      assert.deepEqual(
        operations.filter((operation) => !called.has(operation)),
        [],
      )
    })
  })
}
