import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { revokeApiKey } from '../src/api-keys/api-keys.service.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

const SOME_UUID = '0190a5e4-0000-7000-8000-000000000abc'

/** Every write route of the contract, with a body that would succeed for a full_access key. */
const writeRoutes = (contactId: string, customFieldId: string) =>
  [
    { method: 'POST', url: '/api/v1/contact', payload: { first_name: 'W' } },
    { method: 'PUT', url: `/api/v1/contact/${contactId}`, payload: { first_name: 'W' } },
    { method: 'DELETE', url: `/api/v1/contact/${contactId}` },
    { method: 'DELETE', url: '/api/v1/contact/multiple', payload: { contact_ids: [contactId] } },
    { method: 'POST', url: '/api/v1/contact/upsert?email=w@example.com' },
    {
      method: 'POST',
      url: '/api/v1/contact_custom_field',
      payload: { custom_field_name: 'w', custom_field_type: 'string' },
    },
    { method: 'DELETE', url: `/api/v1/contact_custom_field/${customFieldId}` },
  ] as const

const readRoutes = (contactId: string) =>
  [
    { method: 'GET', url: '/api/v1/contact' },
    { method: 'GET', url: '/api/v1/contact/list' },
    { method: 'GET', url: `/api/v1/contact/${contactId}` },
    { method: 'GET', url: '/api/v1/contact_custom_field/list' },
  ] as const

for (const backend of BACKENDS) {
  describe(`authentication, roles and tenancy on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    let contactId: string
    let customFieldId: string

    before(async () => {
      t = await startTestApp(backend)
      org = await t.createOrg()
      const contact = await t.call(org.key, {
        method: 'POST',
        url: '/api/v1/contact',
        payload: { first_name: 'Owned', email: 'owned@example.com' },
      })
      contactId = contact.json().data.id
      const field = await t.call(org.key, {
        method: 'POST',
        url: '/api/v1/contact_custom_field',
        payload: { custom_field_name: 'level', custom_field_type: 'number' },
      })
      customFieldId = field.json().data.id
    })
    after(() => t?.close())

    const snapshot = async (key = org.key) => ({
      contacts: (await t.call(key, { method: 'GET', url: '/api/v1/contact?size=100' })).json().data,
      fields: (await t.call(key, { method: 'GET', url: '/api/v1/contact_custom_field/list?size=100' })).json()
        .data,
    })

    test('every route answers 401 "Not authenticated" without a key', async () => {
      for (const route of [...readRoutes(contactId), ...writeRoutes(contactId, customFieldId)]) {
        const response = await t.call(null, route)
        assert.equal(response.statusCode, 401, `${route.method} ${route.url}`)
        assert.equal(response.json().detail, 'Not authenticated')
      }
    })

    test('an unknown key, a malformed key and a revoked key get the same 401', async () => {
      const victim = await t.createOrg()
      await revokeApiKey(t.database.db, victim.keyId)
      const answers = []
      for (const key of [`in-${'A'.repeat(43)}`, 'not-a-key', victim.key]) {
        const response = await t.call(key, { method: 'GET', url: '/api/v1/contact' })
        assert.equal(response.statusCode, 401, key)
        answers.push(response.json())
      }
      assert.deepEqual(answers[0], { detail: 'Invalid API key', code: 'invalid_api_key' })
      assert.deepEqual(answers[1], answers[0])
      assert.deepEqual(answers[2], answers[0])
    })

    test('the X-API-Key header is accepted as well as the api_key query parameter', async () => {
      const response = await t.app.inject({
        method: 'GET',
        url: '/api/v1/contact',
        headers: { 'x-api-key': org.key },
      })
      assert.equal(response.statusCode, 200)
      assert.equal(response.json().data.total, 1)
    })

    test('a read_only key reads every read route', async () => {
      for (const route of readRoutes(contactId)) {
        assert.equal((await t.call(org.readOnlyKey, route)).statusCode, 200, `${route.method} ${route.url}`)
      }
    })

    test('a read_only key gets 403 on every write route and changes nothing', async () => {
      const before = await snapshot()
      for (const route of writeRoutes(contactId, customFieldId)) {
        const response = await t.call(org.readOnlyKey, route)
        assert.equal(response.statusCode, 403, `${route.method} ${route.url}`)
        assert.equal(typeof response.json().detail, 'string')
      }
      assert.deepEqual(await snapshot(), before)
    })

    test('a read_only key is refused before its body is even validated', async () => {
      const response = await t.call(org.readOnlyKey, {
        method: 'PUT',
        url: `/api/v1/contact/${contactId}`,
        payload: { first_name: 42 },
      })
      assert.equal(response.statusCode, 403)
    })

    test('another organization’s contact is 404 for GET, PUT and DELETE, and stays untouched', async () => {
      const intruder = await t.createOrg()
      const before = await snapshot()
      const attempts = [
        { method: 'GET', url: `/api/v1/contact/${contactId}` },
        { method: 'PUT', url: `/api/v1/contact/${contactId}`, payload: { first_name: 'Hijacked' } },
        { method: 'DELETE', url: `/api/v1/contact/${contactId}` },
      ] as const
      for (const attempt of attempts) {
        const response = await t.call(intruder.key, attempt)
        assert.equal(response.statusCode, 404, attempt.method)
        assert.deepEqual(response.json(), { detail: 'Contact not found', code: 'contact_not_found' })
      }
      const missing = await t.call(intruder.key, { method: 'GET', url: `/api/v1/contact/${SOME_UUID}` })
      assert.deepEqual(missing.json(), { detail: 'Contact not found', code: 'contact_not_found' })
      assert.deepEqual(await snapshot(), before)
    })

    test('another organization sees none of these contacts in lists, bulk deletes or upserts', async () => {
      const intruder = await t.createOrg()
      const before = await snapshot()
      const list = (await t.call(intruder.key, { method: 'GET', url: '/api/v1/contact' })).json().data
      assert.equal(list.total, 0)
      const bulk = await t.call(intruder.key, {
        method: 'DELETE',
        url: '/api/v1/contact/multiple',
        payload: { contact_ids: [contactId] },
      })
      assert.deepEqual(bulk.json().data, { deleted: 0, not_found: [contactId] })
      const upsert = await t.call(intruder.key, {
        method: 'POST',
        url: '/api/v1/contact/upsert?email=owned@example.com&first_name=Intruder',
      })
      assert.equal(upsert.statusCode, 201, 'the same email in another organization is another contact')
      assert.notEqual(upsert.json().data.id, contactId)
      const fields = await t.call(intruder.key, {
        method: 'DELETE',
        url: `/api/v1/contact_custom_field/${customFieldId}`,
      })
      assert.equal(fields.statusCode, 404)
      assert.deepEqual(await snapshot(), before)
    })
  })
}
