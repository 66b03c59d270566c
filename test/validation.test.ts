import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

for (const backend of BACKENDS) {
  describe(`input validation on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    let id: string

    before(async () => {
      t = await startTestApp(backend)
      org = await t.createOrg()
      const created = await t.call(org.key, {
        method: 'POST',
        url: '/api/v1/contact',
        payload: { first_name: 'Valid', email: 'valid@example.com', channels: { telephone: '+15550000000' } },
      })
      id = created.json().data.id
    })
    after(() => t?.close())

    /** Every row of every tenant table, so "nothing changed" means nothing at all. */
    const dump = async () => ({
      contacts: await t.database.db.selectFrom('contacts').selectAll().orderBy('id').execute(),
      fields: await t.database.db.selectFrom('contact_custom_fields').selectAll().orderBy('id').execute(),
    })

    const rejects = async (
      request: { method: string; url: string; payload?: unknown; headers?: Record<string, string> },
      status: number,
    ) => {
      const before = await dump()
      const response = await t.call(org.key, request as never)
      assert.equal(response.statusCode, status, response.body)
      assert.deepEqual(await dump(), before, 'a rejected request changes nothing')
      return response.json()
    }

    test('a contact_id that is not a uuid is 422 at ["path", "contact_id"]', async () => {
      for (const method of ['GET', 'PUT', 'DELETE']) {
        const body = await rejects(
          { method, url: '/api/v1/contact/not-a-uuid', payload: { first_name: 'x' } },
          422,
        )
        assert.deepEqual(body.detail, [
          { loc: ['path', 'contact_id'], msg: 'Input should be a valid UUID', type: 'uuid_parsing' },
        ])
      }
    })

    test('a malformed date-time is 422 and names the field', async () => {
      for (const value of [
        'yesterday',
        '2023-13-01T00:00:00Z',
        '2023-02-30T00:00:00Z',
        '2023-11-07T25:00:00Z',
        '',
      ]) {
        const body = await rejects(
          { method: 'PUT', url: `/api/v1/contact/${id}`, payload: { last_seen: value } },
          422,
        )
        assert.deepEqual(body.detail[0].loc, ['body', 'last_seen'], value)
        assert.equal(body.detail[0].type, 'datetime_parsing')
      }
    })

    test('a date-time the calendar cannot hold (a leap second) is 422, not a crash', async () => {
      const body = await rejects(
        { method: 'PUT', url: `/api/v1/contact/${id}`, payload: { last_sent: '2023-12-31T23:59:60Z' } },
        422,
      )
      assert.deepEqual(body.detail[0].loc, ['body', 'last_sent'])
    })

    test('a date-time without a zone is taken as UTC and a bare date as midnight, as pydantic reads them', async () => {
      const put = (last_seen: string) =>
        t.call(org.key, { method: 'PUT', url: `/api/v1/contact/${id}`, payload: { last_seen } })
      assert.equal((await put('2023-11-07T05:31:56')).json().data.last_seen, '2023-11-07T05:31:56Z')
      assert.equal((await put('2023-11-07 05:31')).json().data.last_seen, '2023-11-07T05:31:00Z')
      assert.equal((await put('2024-02-29')).json().data.last_seen, '2024-02-29T00:00:00Z')
    })

    test('a date-time with an offset is stored and returned in UTC with a Z', async () => {
      const response = await t.call(org.key, {
        method: 'PUT',
        url: `/api/v1/contact/${id}`,
        payload: { last_seen: '2024-03-01T12:00:00.250+02:00' },
      })
      assert.equal(response.json().data.last_seen, '2024-03-01T10:00:00.250Z')
    })

    test('a malformed uuid in the body is 422', async () => {
      const body = await rejects(
        { method: 'PUT', url: `/api/v1/contact/${id}`, payload: { first_widget_id: 'widget-1' } },
        422,
      )
      assert.deepEqual(body.detail[0], {
        loc: ['body', 'first_widget_id'],
        msg: 'Input should be a valid UUID',
        type: 'uuid_parsing',
      })
    })

    test('a value of the wrong JSON type is 422, never coerced', async () => {
      const cases: [object, string, string][] = [
        [{ first_name: 5 }, 'first_name', 'string_type'],
        [{ email: true }, 'email', 'string_type'],
        [{ channels: [] }, 'channels', 'dict_type'],
        [{ user_attributes: 'text' }, 'user_attributes', 'dict_type'],
        [{ custom_fields: 3 }, 'custom_fields', 'dict_type'],
      ]
      for (const [payload, field, type] of cases) {
        const body = await rejects({ method: 'PUT', url: `/api/v1/contact/${id}`, payload }, 422)
        assert.deepEqual(body.detail[0].loc, ['body', field])
        assert.equal(body.detail[0].type, type)
      }
    })

    test('several problems are all reported at once', async () => {
      const body = await rejects(
        { method: 'POST', url: '/api/v1/contact', payload: { first_name: 1, last_seen: 'x', org_id: 'y' } },
        422,
      )
      assert.deepEqual(body.detail.map((d: { loc: string[] }) => d.loc[1]).sort(), [
        'first_name',
        'last_seen',
        'org_id',
      ])
    })

    test('a body that is not JSON is 422 with json_invalid', async () => {
      const body = await rejects(
        {
          method: 'PUT',
          url: `/api/v1/contact/${id}`,
          payload: '{"first_name": "unterminated',
          headers: { 'content-type': 'application/json' },
        },
        422,
      )
      assert.deepEqual(body.detail, [{ loc: ['body'], msg: 'JSON decode error', type: 'json_invalid' }])
    })

    test('an empty JSON body is 422', async () => {
      await rejects(
        {
          method: 'POST',
          url: '/api/v1/contact',
          payload: '',
          headers: { 'content-type': 'application/json' },
        },
        422,
      )
    })

    test('a body of another content type is 422, as FastAPI answers it', async () => {
      const body = await rejects(
        {
          method: 'PUT',
          url: `/api/v1/contact/${id}`,
          payload: 'first_name=x',
          headers: { 'content-type': 'application/x-www-form-urlencoded' },
        },
        422,
      )
      assert.deepEqual(body.detail[0].loc, ['body'])
    })

    test('a JSON body without a content type is read as JSON, as FastAPI reads it', async () => {
      const response = await t.app.inject({
        method: 'PUT',
        url: `/api/v1/contact/${id}`,
        headers: { 'x-api-key': org.key },
        payload: Buffer.from(JSON.stringify({ last_name: 'NoHeader' })),
      })
      assert.equal(response.statusCode, 200, response.body)
      assert.equal(response.json().data.last_name, 'NoHeader')
    })

    test('prototype-poisoning keys in JSON are refused', async () => {
      await rejects(
        {
          method: 'PUT',
          url: `/api/v1/contact/${id}`,
          payload: '{"first_name":"x","__proto__":{"admin":true}}',
          headers: { 'content-type': 'application/json' },
        },
        422,
      )
    })

    test('lone surrogates in a JSON body are stored as U+FFFD, in fields, objects and batches alike', async () => {
      const body = (email: string) =>
        `{"email":"${email}","first_name":"A\\ud800B","user_attributes":{"k\\uDC00":"\\udc00x"}}`
      const created = await t.call(org.key, {
        method: 'POST',
        url: '/api/v1/contact',
        payload: body('lone1@example.com'),
        headers: { 'content-type': 'application/json' },
      })
      assert.equal(created.statusCode, 201, created.body)
      const batch = await t.call(org.key, {
        method: 'POST',
        url: '/api/v1/contact/batch/upsert',
        payload: `{"contacts":[${body('lone2@example.com')},${body('lone3@example.com')}]}`,
        headers: { 'content-type': 'application/json' },
      })
      assert.equal(batch.statusCode, 200, batch.body)
      const ids = [created.json().data.id, ...batch.json().data.results.map((r: { id: string }) => r.id)]
      for (const contactId of ids) {
        const { data } = (
          await t.call(org.key, { method: 'GET', url: `/api/v1/contact/${contactId}` })
        ).json()
        assert.equal(data.first_name, 'A\uFFFDB')
        assert.deepEqual(data.user_attributes, { 'k\uFFFD': '\uFFFDx' })
      }
      // A pair is one character, not two lone halves: it is kept.
      const paired = await t.call(org.key, {
        method: 'PUT',
        url: `/api/v1/contact/${ids[0]}`,
        payload: '{"first_name":"\\ud83d\\ude00"}',
        headers: { 'content-type': 'application/json' },
      })
      assert.equal(paired.statusCode, 200, paired.body)
      assert.equal(paired.json().data.first_name, '\u{1F600}')
      // A body too deep for any route is refused for its depth, whatever it holds.
      const deep = await rejects(
        {
          method: 'POST',
          url: '/api/v1/contact',
          payload: `{"email":"deep@example.com","first_name":"\\ud800","user_attributes":{"a":${'['.repeat(5000)}${']'.repeat(5000)}}}`,
          headers: { 'content-type': 'application/json' },
        },
        422,
      )
      assert.equal(deep.detail[0].type, 'too_deep')
    })

    test('a body above 1 MiB is 413 with a detail', async () => {
      const body = await rejects(
        {
          method: 'POST',
          url: '/api/v1/contact',
          payload: { first_name: 'big', user_attributes: { blob: 'x'.repeat(1024 * 1024) } },
        },
        413,
      )
      assert.equal(typeof body.detail, 'string')
    })

    test('names and email longer than 320 characters are 422', async () => {
      for (const field of ['first_name', 'last_name', 'email']) {
        const body = await rejects(
          { method: 'PUT', url: `/api/v1/contact/${id}`, payload: { [field]: 'a'.repeat(321) } },
          422,
        )
        assert.equal(body.detail[0].type, 'string_too_long')
      }
      const ok = await t.call(org.key, {
        method: 'PUT',
        url: `/api/v1/contact/${id}`,
        payload: { email: 'a'.repeat(320) },
      })
      assert.equal(ok.statusCode, 200)
    })

    test('objects nested too deep, too wide or too large are 422', async () => {
      let deep: Record<string, unknown> = { leaf: true }
      for (let i = 0; i < 12; i++) deep = { nested: deep }
      const tooDeep = await rejects(
        { method: 'PUT', url: `/api/v1/contact/${id}`, payload: { channels: deep } },
        422,
      )
      assert.deepEqual(tooDeep.detail[0].loc, ['body', 'channels'])
      const wide = Object.fromEntries(Array.from({ length: 201 }, (_, i) => [`k${i}`, i]))
      await rejects({ method: 'PUT', url: `/api/v1/contact/${id}`, payload: { user_attributes: wide } }, 422)
      const large = { list: Array.from({ length: 3000 }, (_, i) => i) }
      await rejects({ method: 'PUT', url: `/api/v1/contact/${id}`, payload: { custom_fields: large } }, 422)
      // Nested deeper than any call stack, on every route that merges or walks objects.
      const abyss = `{"user_attributes":${'{"a":'.repeat(50_000)}1${'}'.repeat(50_000)},"unknown":${'['.repeat(20_000)}${']'.repeat(20_000)}}`
      for (const [method, url] of [
        ['PATCH', `/api/v1/contact/${id}`],
        ['PUT', `/api/v1/contact/${id}`],
        ['POST', '/api/v1/contact'],
      ] as const) {
        const response = await t.call(org.key, {
          method,
          url,
          payload: abyss,
          // Retries are told apart by a digest of the body, which must not be where it breaks.
          headers: { 'content-type': 'application/json', 'idempotency-key': `deep-${method}` },
        })
        assert.equal(response.statusCode, 422, `${method} ${url}: ${response.body.slice(0, 200)}`)
      }
    })

    test('an unknown route is 404 in the error shape', async () => {
      const response = await t.call(org.key, { method: 'GET', url: '/api/v1/nothing-here' })
      assert.equal(response.statusCode, 404)
      assert.equal(response.json().detail, 'Not Found')
    })
  })
}
