import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { Contact, SEED_UPDATE_EXAMPLE } from '../src/contacts/contacts.schemas.js'
import { insertOrganization } from '../src/organizations/organizations.repository.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

const SEED_ORG_ID = SEED_UPDATE_EXAMPLE.org_id

for (const backend of BACKENDS) {
  describe(`contacts API on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg

    before(async () => {
      t = await startTestApp(backend)
      org = await t.createOrg()
    })
    after(() => t?.close())

    const create = (body: object, key = org.key) =>
      t.call(key, { method: 'POST', url: '/api/v1/contact', payload: body })
    const get = (id: string, key = org.key) => t.call(key, { method: 'GET', url: `/api/v1/contact/${id}` })
    const put = (id: string, body: object, key = org.key) =>
      t.call(key, { method: 'PUT', url: `/api/v1/contact/${id}`, payload: body })
    const createdId = async (body: object) => {
      const response = await create(body)
      assert.equal(response.statusCode, 201, response.body)
      return response.json().data.id as string
    }

    test('POST /contact creates a contact in the key’s organization and answers 201', async () => {
      const response = await create({ first_name: 'Ada', email: 'ada@example.com' })
      assert.equal(response.statusCode, 201)
      const body = response.json()
      assert.equal(body.message, 'Data created successfully')
      assert.deepEqual(body.meta, {})
      assert.equal(body.data.first_name, 'Ada')
      assert.equal(body.data.last_name, null)
      assert.equal(body.data.org_id, org.id)
      assert.deepEqual(body.data.channels, {})
      assert.deepEqual(body.data.user_attributes, {})
      assert.deepEqual(body.data.custom_fields, {})
      assert.match(body.data.id, /^[0-9a-f-]{36}$/)
      assert.match(body.data.created_at, /Z$/)
      assert.equal(body.data.created_at, body.data.updated_at)
    })

    test('POST /contact with the key’s own org_id is accepted; with another org’s it is 403', async () => {
      assert.equal((await create({ first_name: 'Own', org_id: org.id })).statusCode, 201)
      const other = await t.createOrg()
      const before = (await t.call(org.key, { method: 'GET', url: '/api/v1/contact' })).json().data.total
      const refused = await create({ first_name: 'Elsewhere', org_id: other.id })
      assert.equal(refused.statusCode, 403)
      assert.equal(typeof refused.json().detail, 'string')
      const afterCount = (await t.call(org.key, { method: 'GET', url: '/api/v1/contact' })).json().data.total
      assert.equal(afterCount, before)
      assert.equal((await t.call(other.key, { method: 'GET', url: '/api/v1/contact' })).json().data.total, 0)
    })

    test('GET /contact/{id} returns the contact with the retrieval message', async () => {
      const id = await createdId({ first_name: 'Grace' })
      const response = await get(id)
      assert.equal(response.statusCode, 200)
      assert.equal(response.json().message, 'Data retrieved successfully')
      assert.equal(response.json().data.id, id)
      assert.equal(response.json().data.first_name, 'Grace')
      assert.equal((await get(id.toUpperCase())).json().data.id, id, 'ids are case-insensitive')
    })

    test('GET of an id that does not exist is 404 with a detail', async () => {
      const response = await get('0190a5e4-0000-7000-8000-000000000000')
      assert.equal(response.statusCode, 404)
      assert.deepEqual(response.json(), { detail: 'Contact not found', code: 'contact_not_found' })
    })

    test('PUT changes only the fields present and keeps the others', async () => {
      const id = await createdId({
        first_name: 'Alan',
        last_name: 'Turing',
        email: 'alan@example.com',
        channels: { whatsapp: '+441234567890' },
        user_attributes: { plan: 'pro' },
        last_seen: '2024-01-02T03:04:05Z',
      })
      const original = (await get(id)).json().data
      const response = await put(id, { first_name: 'Alan M.' })
      assert.equal(response.statusCode, 200)
      assert.equal(response.json().message, 'Data updated successfully')
      const updated = response.json().data
      assert.equal(updated.first_name, 'Alan M.')
      for (const field of [
        'last_name',
        'email',
        'channels',
        'user_attributes',
        'last_seen',
        'created_at',
        'id',
      ]) {
        assert.deepEqual(updated[field], original[field], field)
      }
      assert.ok(Date.parse(updated.updated_at) >= Date.parse(original.updated_at))
      assert.deepEqual((await get(id)).json().data, updated)
    })

    test('PUT with null clears a field; null for an object stores {}', async () => {
      const id = await createdId({ first_name: 'N', email: 'n@example.com', channels: { slack: 'U1' } })
      const updated = (await put(id, { email: null, last_seen: null, channels: null })).json().data
      assert.equal(updated.email, null)
      assert.equal(updated.last_seen, null)
      assert.deepEqual(updated.channels, {})
      assert.equal(updated.first_name, 'N')
    })

    test('PUT with an object replaces the stored object rather than merging it', async () => {
      const id = await createdId({
        channels: { telephone: '+15550001111', slack: 'U1' },
        custom_fields: { a: 1 },
      })
      const updated = (await put(id, { channels: { instagram: 'ig' }, custom_fields: {} })).json().data
      assert.deepEqual(updated.channels, { instagram: 'ig' })
      assert.deepEqual(updated.custom_fields, {})
    })

    test('PUT ignores unknown fields, including read-only ones', async () => {
      const id = await createdId({ first_name: 'Before' })
      const original = (await get(id)).json().data
      const response = await put(id, {
        first_name: 'After',
        favourite_colour: 'blue',
        id: '0190a5e4-0000-7000-8000-000000000000',
        created_at: 'not even a date',
      })
      assert.equal(response.statusCode, 200, response.body)
      const updated = response.json().data
      assert.equal(updated.first_name, 'After')
      assert.equal(updated.id, id)
      assert.equal(updated.created_at, original.created_at)
      assert.equal('favourite_colour' in updated, false)
    })

    test('PUT with the key’s org_id or null changes nothing; another org’s is 403 and changes nothing', async () => {
      const id = await createdId({ first_name: 'Stay' })
      assert.equal((await put(id, { org_id: org.id, first_name: 'Stay' })).statusCode, 200)
      assert.equal((await put(id, { org_id: null })).json().data.org_id, org.id)
      const other = await t.createOrg()
      const before = (await get(id)).json().data
      const refused = await put(id, { org_id: other.id, first_name: 'Moved' })
      assert.equal(refused.statusCode, 403)
      assert.deepEqual((await get(id)).json().data, before)
    })

    test('PUT of an unknown contact is 404', async () => {
      const response = await put('0190a5e4-0000-7000-8000-000000000001', { first_name: 'x' })
      assert.equal(response.statusCode, 404)
    })

    test('the seed’s PUT example, replayed, answers with the seed’s response field by field', async () => {
      await insertOrganization(t.database.db, {
        id: SEED_ORG_ID,
        name: `seed-${backend.name}`,
        created_at: new Date().toISOString(),
      })
      const { createApiKey } = await import('../src/api-keys/api-keys.service.js')
      const key = (
        await createApiKey(t.database.db, { orgId: SEED_ORG_ID, name: 'seed', role: 'full_access' })
      ).key
      const id = await (async () => {
        const response = await create({}, key)
        return response.json().data.id as string
      })()
      const response = await put(id, SEED_UPDATE_EXAMPLE, key)
      assert.equal(response.statusCode, 200)
      const body = response.json()
      assert.equal(body.message, 'Data updated successfully')
      assert.deepEqual(body.meta, {})
      for (const [field, value] of Object.entries(SEED_UPDATE_EXAMPLE)) {
        assert.deepEqual(body.data[field], value, `data.${field}`)
      }
    })

    test('DELETE /contact/{id} deletes it and answers with its id; a second DELETE is 404', async () => {
      const id = await createdId({ first_name: 'Gone' })
      const response = await t.call(org.key, { method: 'DELETE', url: `/api/v1/contact/${id}` })
      assert.equal(response.statusCode, 200)
      assert.deepEqual(response.json(), { message: 'Data deleted successfully', meta: {}, data: { id } })
      assert.equal((await get(id)).statusCode, 404)
      assert.equal(
        (await t.call(org.key, { method: 'DELETE', url: `/api/v1/contact/${id}` })).statusCode,
        404,
      )
    })

    test('DELETE /contact/multiple deletes those found and lists the ids that were not', async () => {
      const a = await createdId({ first_name: 'A' })
      const b = await createdId({ first_name: 'B' })
      const keep = await createdId({ first_name: 'Keep' })
      const missing = '0190a5e4-0000-7000-8000-0000000000ff'
      const response = await t.call(org.key, {
        method: 'DELETE',
        url: '/api/v1/contact/multiple',
        payload: { contact_ids: [a, b, missing, a] },
      })
      assert.equal(response.statusCode, 200)
      assert.equal(response.json().message, 'Data deleted successfully')
      assert.deepEqual(response.json().data, { deleted: 2, not_found: [missing] })
      assert.equal((await get(a)).statusCode, 404)
      assert.equal((await get(keep)).statusCode, 200)
    })

    test('DELETE /contact/multiple refuses an empty list, more than 1000 ids and non-uuids', async () => {
      const bulk = (contact_ids: unknown) =>
        t.call(org.key, { method: 'DELETE', url: '/api/v1/contact/multiple', payload: { contact_ids } })
      assert.equal((await bulk([])).statusCode, 422)
      const many = Array.from({ length: 1001 }, () => '0190a5e4-0000-7000-8000-000000000000')
      assert.equal((await bulk(many)).statusCode, 422)
      const notUuid = await bulk(['nope'])
      assert.equal(notUuid.statusCode, 422)
      assert.deepEqual(notUuid.json().detail[0].loc, ['body', 'contact_ids', 0])
    })

    describe('list pagination', () => {
      let listOrg: TestOrg
      const ids: string[] = []
      before(async () => {
        listOrg = await t.createOrg()
        for (let i = 0; i < 7; i++) {
          const response = await create({ first_name: `P${i}` }, listOrg.key)
          ids.push(response.json().data.id)
        }
      })
      const list = (query: string, path = '/api/v1/contact') =>
        t.call(listOrg.key, { method: 'GET', url: `${path}?${query}` })

      test('the first page holds the newest contacts and points to the next page', async () => {
        const response = await list('page=1&size=3')
        assert.equal(response.statusCode, 200)
        assert.equal(response.json().message, 'Data retrieved successfully')
        const data = response.json().data
        assert.deepEqual(
          { total: data.total, page: data.page, size: data.size, pages: data.pages },
          { total: 7, page: 1, size: 3, pages: 3 },
        )
        assert.equal(data.next_page, 2)
        assert.equal(data.previous_page, null)
        assert.deepEqual(
          data.items.map((c: { id: string }) => c.id),
          [...ids].reverse().slice(0, 3),
        )
      })

      test('the last page is partial and has no next page', async () => {
        const data = (await list('page=3&size=3')).json().data
        assert.equal(data.items.length, 1)
        assert.equal(data.items[0].id, ids[0])
        assert.equal(data.next_page, null)
        assert.equal(data.previous_page, 2)
      })

      test('a page past the end is empty and points back to the last page', async () => {
        const data = (await list('page=9&size=3')).json().data
        assert.deepEqual(data.items, [])
        assert.equal(data.total, 7)
        assert.equal(data.next_page, null)
        assert.equal(data.previous_page, 3)
      })

      test('paging visits every contact exactly once', async () => {
        const seen: string[] = []
        for (let page = 1; page <= 3; page++) {
          seen.push(...(await list(`page=${page}&size=3`)).json().data.items.map((c: { id: string }) => c.id))
        }
        assert.deepEqual([...seen].sort(), [...ids].sort())
      })

      test('defaults are page 1 and size 50; /contact/list answers the same', async () => {
        const data = (await list('')).json().data
        assert.equal(data.page, 1)
        assert.equal(data.size, 50)
        assert.equal(data.pages, 1)
        assert.deepEqual((await list('', '/api/v1/contact/list')).json(), (await list('')).json())
      })

      test('either kind of page is JSON in its own shape, its items holding exactly the contact’s fields', async () => {
        const contactFields = Object.keys(Contact.properties).sort()
        const paged = await list('page=1&size=2')
        const cursorPaged = await list('limit=2')
        for (const response of [paged, cursorPaged]) {
          assert.equal(response.statusCode, 200)
          assert.equal(response.headers['content-type'], 'application/json; charset=utf-8')
          assert.deepEqual(Object.keys(response.json()), ['message', 'meta', 'data'])
          for (const item of response.json().data.items)
            assert.deepEqual(Object.keys(item).sort(), contactFields)
        }
        assert.deepEqual(Object.keys(paged.json().data), [
          'items',
          'total',
          'page',
          'size',
          'pages',
          'next_page',
          'previous_page',
          'next_cursor',
        ])
        assert.deepEqual(Object.keys(cursorPaged.json().data), ['items', 'limit', 'next_cursor'])
        const next = await list(`limit=2&cursor=${encodeURIComponent(cursorPaged.json().data.next_cursor)}`)
        assert.deepEqual(
          next.json().data.items.map((c: { id: string }) => c.id),
          [...ids].reverse().slice(2, 4),
        )
      })

      test('size outside 1..100 and page below 1 are 422', async () => {
        for (const query of ['size=0', 'size=101', 'page=0', 'page=-1', 'size=abc']) {
          const response = await list(query)
          assert.equal(response.statusCode, 422, query)
          assert.equal(response.json().detail[0].loc[0], 'query')
        }
      })

      test('an organization without contacts has zero pages', async () => {
        const empty = await t.createOrg()
        const data = (await t.call(empty.key, { method: 'GET', url: '/api/v1/contact' })).json().data
        assert.deepEqual(data, {
          items: [],
          total: 0,
          page: 1,
          size: 50,
          pages: 0,
          next_page: null,
          previous_page: null,
          next_cursor: null,
        })
      })
    })

    describe('custom fields', () => {
      let cfOrg: TestOrg
      before(async () => {
        cfOrg = await t.createOrg()
      })
      const define = (body: object, key = cfOrg.key) =>
        t.call(key, { method: 'POST', url: '/api/v1/contact_custom_field', payload: body })

      test('a definition is created with 201, listed, and unique by name', async () => {
        const response = await define({ custom_field_name: 'score', custom_field_type: 'number' })
        assert.equal(response.statusCode, 201)
        assert.equal(response.json().message, 'Data created successfully')
        const field = response.json().data
        assert.deepEqual(Object.keys(field).sort(), [
          'custom_field_name',
          'custom_field_type',
          'id',
          'org_id',
        ])
        assert.equal(field.org_id, cfOrg.id)
        const duplicate = await define({ custom_field_name: 'score', custom_field_type: 'string' })
        assert.equal(duplicate.statusCode, 409)
        const list = (
          await t.call(cfOrg.key, { method: 'GET', url: '/api/v1/contact_custom_field/list' })
        ).json()
        assert.equal(list.data.total, 1)
        assert.deepEqual(list.data.items[0], field)
      })

      test('a type other than string or number is 422', async () => {
        const response = await define({ custom_field_name: 'when', custom_field_type: 'date' })
        assert.equal(response.statusCode, 422)
        assert.deepEqual(response.json().detail[0].loc, ['body', 'custom_field_type'])
      })

      test('values of a number field must be numbers, of a string field strings; undefined names pass', async () => {
        await define({ custom_field_name: 'tier', custom_field_type: 'string' })
        const wrongNumber = await create({ custom_fields: { score: 'high' } }, cfOrg.key)
        assert.equal(wrongNumber.statusCode, 422)
        assert.deepEqual(wrongNumber.json().detail, [
          {
            loc: ['body', 'custom_fields', 'score'],
            msg: 'Input should be a valid number',
            type: 'float_type',
          },
        ])
        const wrongString = await create({ custom_fields: { tier: 3 } }, cfOrg.key)
        assert.equal(wrongString.statusCode, 422)
        assert.deepEqual(wrongString.json().detail[0].loc, ['body', 'custom_fields', 'tier'])
        const ok = await create({ custom_fields: { score: 4.5, tier: 'gold', free: [1, 'x'] } }, cfOrg.key)
        assert.equal(ok.statusCode, 201)
        assert.deepEqual(ok.json().data.custom_fields, { score: 4.5, tier: 'gold', free: [1, 'x'] })
      })

      test('a PUT with a wrongly typed custom field is 422 and changes nothing', async () => {
        const created = await create({ first_name: 'Typed', custom_fields: { score: 1 } }, cfOrg.key)
        const id = created.json().data.id
        const response = await put(id, { first_name: 'Changed', custom_fields: { score: 'x' } }, cfOrg.key)
        assert.equal(response.statusCode, 422)
        assert.deepEqual((await get(id, cfOrg.key)).json().data, created.json().data)
      })

      test('definitions are per organization and deleting one lifts the check', async () => {
        const other = await t.createOrg()
        assert.equal((await create({ custom_fields: { score: 'fine here' } }, other.key)).statusCode, 201)
        const list = (await t.call(other.key, { method: 'GET', url: '/api/v1/contact_custom_field' })).json()
        assert.equal(list.data.total, 0)
        const fields = (
          await t.call(cfOrg.key, { method: 'GET', url: '/api/v1/contact_custom_field/list' })
        ).json()
        const score = fields.data.items.find(
          (f: { custom_field_name: string }) => f.custom_field_name === 'score',
        )
        const fromOther = await t.call(other.key, {
          method: 'DELETE',
          url: `/api/v1/contact_custom_field/${score.id}`,
        })
        assert.equal(fromOther.statusCode, 404)
        const deleted = await t.call(cfOrg.key, {
          method: 'DELETE',
          url: `/api/v1/contact_custom_field/${score.id}`,
        })
        assert.equal(deleted.statusCode, 200)
        assert.deepEqual(deleted.json().data, { id: score.id })
        assert.equal((await create({ custom_fields: { score: 'now free text' } }, cfOrg.key)).statusCode, 201)
      })

      test('a definition naming another organization is 403', async () => {
        const other = await t.createOrg()
        const response = await define({
          custom_field_name: 'x',
          custom_field_type: 'string',
          org_id: other.id,
        })
        assert.equal(response.statusCode, 403)
      })
    })

    describe('upsert', () => {
      let upOrg: TestOrg
      before(async () => {
        upOrg = await t.createOrg()
      })
      const upsert = (query: string, payload?: object) =>
        t.call(upOrg.key, {
          method: 'POST',
          url: `/api/v1/contact/upsert?${query}`,
          ...(payload ? { payload } : {}),
        })

      test('query parameters create a contact (201), then update it matched on email in any case (200)', async () => {
        const created = await upsert('first_name=Foo&email=Foo@Example.com')
        assert.equal(created.statusCode, 201)
        assert.equal(created.json().message, 'Data created successfully')
        const updated = await upsert('last_name=Bar&email=foo@example.com')
        assert.equal(updated.statusCode, 200)
        assert.equal(updated.json().message, 'Data updated successfully')
        assert.equal(updated.json().data.id, created.json().data.id)
        assert.equal(updated.json().data.first_name, 'Foo', 'fields not given are kept')
        assert.equal(updated.json().data.last_name, 'Bar')
        assert.equal(updated.json().data.email, 'foo@example.com')
      })

      test('phone numbers in different notations match one contact and are kept as the telephone channel', async () => {
        const created = await upsert(`phone_number=${encodeURIComponent('+1 (650) 111-1234')}&first_name=Pat`)
        assert.equal(created.statusCode, 201)
        assert.deepEqual(created.json().data.channels, { telephone: '+16501111234' })
        const updated = await upsert('phone_number=16501111234&last_name=Lee')
        assert.equal(updated.statusCode, 200)
        assert.equal(updated.json().data.id, created.json().data.id)
        assert.equal(updated.json().data.first_name, 'Pat')
      })

      test('a JSON body works as well as query parameters', async () => {
        const created = await upsert('', { email: 'body@example.com', user_attributes: { source: 'web' } })
        assert.equal(created.statusCode, 201)
        const updated = await upsert('', { email: 'BODY@example.com', custom_fields: { a: 1 } })
        assert.equal(updated.statusCode, 200)
        assert.deepEqual(updated.json().data.user_attributes, { source: 'web' })
        assert.deepEqual(updated.json().data.custom_fields, { a: 1 })
      })

      test('without email or phone number it is 422 and creates nothing', async () => {
        const before = (await t.call(upOrg.key, { method: 'GET', url: '/api/v1/contact' })).json().data.total
        const response = await upsert('first_name=Nobody')
        assert.equal(response.statusCode, 422)
        assert.equal(response.json().detail[0].type, 'missing')
        const invalidPhone = await upsert('phone_number=call-me')
        assert.equal(invalidPhone.statusCode, 422)
        assert.deepEqual(invalidPhone.json().detail[0].loc, ['query', 'phone_number'])
        const afterCount = (await t.call(upOrg.key, { method: 'GET', url: '/api/v1/contact' })).json().data
          .total
        assert.equal(afterCount, before)
      })
    })
  })
}
