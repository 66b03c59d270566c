import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

/**
 * The tenant isolation matrix: a key of organization A against every kind of organization B
 * object, through every route that can name it (by id, in a list, in a filter, in a merge or
 * bulk body). A sees none of B and changes none of B.
 */
for (const backend of BACKENDS) {
  describe(`tenant isolation matrix on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let a: TestOrg
    let b: TestOrg
    const bObjects = {
      live: '',
      trashed: '',
      field: '',
      mergedAway: '',
      email: 'b-person@example.com',
      phone: '+15557770001',
    }

    before(async () => {
      t = await startTestApp(backend)
      a = await t.createOrg()
      b = await t.createOrg()
      const asB = (method: string, url: string, payload?: object) => t.api(b.key, method, url, payload)
      bObjects.live = (
        await asB('POST', '/contact', {
          email: bObjects.email,
          channels: { telephone: bObjects.phone },
          external_id: 'b-ext',
          first_name: 'Bee',
        })
      ).json().data.id
      bObjects.trashed = (await asB('POST', '/contact', { first_name: 'Binned' })).json().data.id
      await asB('DELETE', `/contact/${bObjects.trashed}`)
      bObjects.mergedAway = (await asB('POST', '/contact', { first_name: 'Merged' })).json().data.id
      const survivor = (await asB('POST', '/contact', { first_name: 'Survivor' })).json().data.id
      await asB('POST', '/contact/merge', { primary_id: survivor, duplicate_ids: [bObjects.mergedAway] })
      bObjects.field = (
        await asB('POST', '/contact_custom_field', { custom_field_name: 'tier', custom_field_type: 'number' })
      ).json().data.id
    })
    after(() => t?.close())

    /** Everything organization B has, row by row. */
    const dumpOfB = async () => {
      const db = t.database.db
      return JSON.stringify({
        contacts: await db
          .selectFrom('contacts')
          .selectAll()
          .where('org_id', '=', b.id)
          .orderBy('id')
          .execute(),
        identities: await db
          .selectFrom('contact_identities')
          .selectAll()
          .where('org_id', '=', b.id)
          .orderBy('value')
          .execute(),
        merges: await db.selectFrom('contact_merges').selectAll().where('org_id', '=', b.id).execute(),
        fields: await db.selectFrom('contact_custom_fields').selectAll().where('org_id', '=', b.id).execute(),
      })
    }

    test('no route lets organization A see or change anything of organization B', async () => {
      const before = await dumpOfB()
      const { live, trashed, field, mergedAway } = bObjects
      const matrix: { method: string; url: string; payload?: unknown; expect: number[] }[] = []
      for (const id of [live, trashed, mergedAway]) {
        matrix.push(
          { method: 'GET', url: `/contact/${id}`, expect: [404] },
          { method: 'PUT', url: `/contact/${id}`, payload: { first_name: 'A was here' }, expect: [404] },
          { method: 'PATCH', url: `/contact/${id}`, payload: { custom_fields: { x: 1 } }, expect: [404] },
          { method: 'DELETE', url: `/contact/${id}`, expect: [404] },
          { method: 'GET', url: `/contact/${id}/duplicates`, expect: [404] },
          { method: 'POST', url: `/contact/${id}/restore`, expect: [404] },
          { method: 'POST', url: `/contact/${id}/erase`, expect: [404] },
        )
      }
      const ownContact = (
        await t.call(a.key, { method: 'POST', url: '/api/v1/contact', payload: { first_name: 'A' } })
      ).json().data.id
      matrix.push(
        {
          method: 'POST',
          url: '/contact/merge',
          payload: { primary_id: ownContact, duplicate_ids: [live] },
          expect: [404],
        },
        {
          method: 'POST',
          url: '/contact/merge',
          payload: { primary_id: live, duplicate_ids: [ownContact] },
          expect: [404],
        },
        {
          method: 'DELETE',
          url: '/contact/multiple',
          payload: { contact_ids: [live, trashed] },
          expect: [200],
        },
        { method: 'DELETE', url: `/contact_custom_field/${field}`, expect: [404] },
        { method: 'PUT', url: `/contact/${ownContact}`, payload: { org_id: b.id }, expect: [403] },
        { method: 'POST', url: '/contact', payload: { org_id: b.id, first_name: 'Planted' }, expect: [403] },
        {
          method: 'POST',
          url: '/contact_custom_field',
          payload: { custom_field_name: 'x', custom_field_type: 'string', org_id: b.id },
          expect: [403],
        },
        // B's identities are B's: the same email, phone or external id in A is another person.
        { method: 'POST', url: `/contact/upsert?email=${encodeURIComponent(bObjects.email)}`, expect: [201] },
        {
          method: 'POST',
          url: '/contact/batch/upsert',
          payload: { contacts: [{ phone_number: bObjects.phone }, { external_id: 'b-ext' }] },
          expect: [200],
        },
      )
      for (const { method, url, payload, expect } of matrix) {
        const response = await t.call(a.key, {
          method: method as 'GET',
          url: `/api/v1${url}`,
          ...(payload ? { payload: payload as object } : {}),
        })
        assert.ok(
          expect.includes(response.statusCode),
          `${method} ${url} answered ${response.statusCode}: ${response.body}`,
        )
        const named = url.includes(live) || JSON.stringify(payload ?? null).includes(live)
        assert.ok(named || !response.body.includes(live), `${method} ${url} revealed a contact of B`)
        const request = decodeURIComponent(url) + JSON.stringify(payload ?? null)
        for (const marker of ['Bee', 'Binned', 'Survivor', 'b-person']) {
          if (!request.includes(marker))
            assert.ok(!response.body.includes(marker), `${method} ${url} revealed data of B`)
        }
        if (response.statusCode === 404)
          assert.equal(response.json().merged_into, undefined, 'no redirect into B')
      }
      const bulk = await t.call(a.key, {
        method: 'DELETE',
        url: '/api/v1/contact/multiple',
        payload: { contact_ids: [live] },
      })
      assert.deepEqual(bulk.json().data, { deleted: 0, not_found: [live] })

      for (const url of [
        '/contact?size=100',
        '/contact/list?size=100',
        '/contact/trash?size=100',
        '/contact_custom_field/list?size=100',
      ]) {
        const body = (await t.call(a.key, { method: 'GET', url: `/api/v1${url}` })).body
        for (const id of [live, trashed, field, mergedAway])
          assert.ok(!body.includes(id), `${url} lists an object of B`)
        assert.ok(!body.includes('Bee') && !body.includes('Binned'), `${url} shows B's data`)
      }
      assert.equal(await dumpOfB(), before, 'organization B is untouched')
    })
  })
}
