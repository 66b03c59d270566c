import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { SEED_UPDATE_EXAMPLE } from '../src/contacts/contacts.schemas.js'
import { startTestApp, type TestApp } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

const CONTRACT_ROUTES = [
  ['get', '/api/v1/contact'],
  ['get', '/api/v1/contact/list'],
  ['post', '/api/v1/contact'],
  ['get', '/api/v1/contact/{contact_id}'],
  ['put', '/api/v1/contact/{contact_id}'],
  ['delete', '/api/v1/contact/{contact_id}'],
  ['delete', '/api/v1/contact/multiple'],
  ['post', '/api/v1/contact/upsert'],
  ['post', '/api/v1/contact_custom_field'],
  ['get', '/api/v1/contact_custom_field/list'],
  ['delete', '/api/v1/contact_custom_field/{id}'],
] as const

for (const backend of BACKENDS) {
  describe(`health and documentation on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    before(async () => {
      t = await startTestApp(backend)
    })
    after(() => t?.close())

    test('/healthz and /readyz answer without a key', async () => {
      assert.deepEqual((await t.app.inject('/healthz')).json(), { status: 'ok' })
      const ready = await t.app.inject('/readyz')
      assert.equal(ready.statusCode, 200)
      assert.deepEqual(ready.json(), { status: 'ready' })
    })

    test('/openapi.json is OpenAPI 3.1 and documents every route of the contract', async () => {
      const response = await t.app.inject('/openapi.json')
      assert.equal(response.statusCode, 200)
      const document = response.json()
      assert.equal(document.openapi, '3.1.0')
      for (const [method, path] of CONTRACT_ROUTES) {
        const operation = document.paths[path]?.[method]
        assert.ok(operation, `${method.toUpperCase()} ${path} is documented`)
        assert.ok(operation.summary, `${method.toUpperCase()} ${path} has a summary`)
      }
      assert.deepEqual(document.components.securitySchemes.api_key, {
        type: 'apiKey',
        in: 'query',
        name: 'api_key',
        description: 'Your API key, as the original API takes it. Format: starts with in-.',
      })
    })

    test('the PUT operation is generated from the schema that validates it, with the seed as its example', async () => {
      const document = (await t.app.inject('/openapi.json')).json()
      const put = document.paths['/api/v1/contact/{contact_id}'].put
      const body = put.requestBody.content['application/json'].schema
      const seedFields = Object.keys(SEED_UPDATE_EXAMPLE)
      assert.deepEqual(
        Object.keys(body.properties).slice(0, seedFields.length),
        seedFields,
        'the seed’s fields, in its order',
      )
      assert.deepEqual(
        body.examples?.[0] ?? put.requestBody.content['application/json'].example,
        SEED_UPDATE_EXAMPLE,
      )
      assert.deepEqual(body.properties.last_seen.type, ['string', 'null'])
      assert.ok(put.responses['422'], 'documents its validation error')
    })

    test('every operation has a summary, a description, examples of its bodies and the errors it can return', async () => {
      const document = (await t.app.inject('/openapi.json')).json() as {
        paths: Record<string, Record<string, Record<string, unknown>>>
      }
      type Media = { example?: unknown; examples?: unknown }
      let operations = 0
      for (const [path, item] of Object.entries(document.paths)) {
        for (const [method, operation] of Object.entries(item)) {
          operations++
          const name = `${method.toUpperCase()} ${path}`
          assert.ok(operation.summary, `${name} has a summary`)
          assert.ok(operation.description, `${name} has a description`)
          const requestBody = operation.requestBody as { content: Record<string, Media> } | undefined
          for (const media of Object.values(requestBody?.content ?? {})) {
            assert.ok(
              media.example !== undefined || media.examples !== undefined,
              `${name} has a request example`,
            )
          }
          const responses = operation.responses as Record<
            string,
            { description: string; content?: Record<string, Media> }
          >
          const statuses = Object.keys(responses)
          for (const status of ['401', '429', '500', '503'])
            assert.ok(statuses.includes(status), `${name} documents ${status}`)
          if (method !== 'get') assert.ok(statuses.includes('403'), `${name} documents 403 (read_only key)`)
          if (requestBody) assert.ok(statuses.includes('422'), `${name} documents 422`)
          for (const [status, response] of Object.entries(responses)) {
            assert.ok(
              response.description && response.description !== 'Default Response',
              `${name} ${status} is described`,
            )
            for (const media of Object.values(response.content ?? {})) {
              assert.ok(
                media.example !== undefined || media.examples !== undefined,
                `${name} ${status} has an example`,
              )
            }
          }
        }
      }
      assert.ok(operations >= 36)
    })

    test('/docs serves the interactive page from this server alone, with no external host', async () => {
      const page = await t.app.inject('/docs/')
      assert.equal(page.statusCode, 200)
      assert.match(page.headers['content-type'] as string, /text\/html/)
      assert.match(page.headers['content-security-policy'] as string, /default-src 'self'/)
      const scripts = [...page.body.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1] as string)
      assert.ok(scripts.length > 0)
      for (const asset of scripts) assert.ok(!/^(https?:)?\/\//.test(asset), `local asset: ${asset}`)
      const bundle = scripts.find((s) => s.includes('swagger-ui-bundle.js')) as string
      const fetched = await t.app.inject(new URL(bundle, 'http://localhost/docs/').pathname)
      assert.equal(fetched.statusCode, 200)
    })
  })
}
