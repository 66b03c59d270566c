import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { recordEvent, systemActor } from '../src/events/events.service.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

interface Event {
  id: string
  object: string
  event: string
  created_at: string
  data: Record<string, unknown> & {
    contact_id: string
    actor: { type: string; id: string | null }
    changes?: Record<string, { previous: unknown; current: unknown }>
    contact?: Record<string, unknown>
    merged_ids?: string[]
  }
}

for (const backend of BACKENDS) {
  describe(`contact history on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    let other: TestOrg

    before(async () => {
      t = await startTestApp(backend)
      org = await t.createOrg()
      other = await t.createOrg()
    })
    after(() => t?.close())

    const call = (method: string, url: string, payload?: unknown, key = org.key) =>
      t.api(key, method, url, payload)
    const created = async (body: object) => {
      const response = await call('POST', '/contact', body)
      assert.equal(response.statusCode, 201, response.body)
      return response.json().data.id as string
    }
    const history = async (id: string, query = ''): Promise<Event[]> => {
      const response = await call('GET', `/contact/${id}/history${query}`)
      assert.equal(response.statusCode, 200, response.body)
      return response.json().data.items
    }
    const eventCount = async () =>
      Number(
        (
          await t.database.db
            .selectFrom('contact_events')
            .select((eb) => eb.fn.countAll().as('n'))
            .where('org_id', '=', org.id)
            .executeTakeFirstOrThrow()
        ).n,
      )

    test('create, update, patch, delete, restore and erase each record one event, newest first', async () => {
      const id = await created({
        first_name: 'Anna',
        email: 'anna@example.com',
        custom_fields: { plan: 'free' },
      })
      assert.equal(
        (await call('PUT', `/contact/${id}`, { first_name: 'Ana', last_name: 'Li' })).statusCode,
        200,
      )
      assert.equal(
        (await call('PATCH', `/contact/${id}`, { custom_fields: { plan: 'pro', seats: 3 } })).statusCode,
        200,
      )
      assert.equal((await call('DELETE', `/contact/${id}`)).statusCode, 200)
      assert.equal((await call('POST', `/contact/${id}/restore`)).statusCode, 200)

      const events = await history(id)
      assert.deepEqual(
        events.map((e) => e.event),
        ['contact.restored', 'contact.deleted', 'contact.updated', 'contact.updated', 'contact.created'],
      )
      for (const event of events) {
        assert.equal(event.object, 'event')
        assert.equal(event.data.contact_id, id)
        assert.deepEqual(event.data.actor, { type: 'api_key', id: org.keyId })
        assert.match(event.created_at, /Z$/)
      }
      const [restored, deleted, patched, put, create] = events as [Event, Event, Event, Event, Event]
      assert.equal(create.data.contact?.first_name, 'Anna')
      assert.equal(create.data.contact?.email, 'anna@example.com')
      assert.equal(
        create.data.contact?.version,
        undefined,
        'events carry the API shape, without the ETag version',
      )
      assert.deepEqual(put.data.changes, {
        first_name: { previous: 'Anna', current: 'Ana' },
        last_name: { previous: null, current: 'Li' },
      })
      assert.deepEqual(patched.data.changes, {
        custom_fields: { previous: { plan: 'free' }, current: { plan: 'pro', seats: 3 } },
      })
      assert.equal(deleted.data.contact?.first_name, 'Ana')
      assert.equal(restored.data.contact?.id, id)

      assert.equal((await call('POST', `/contact/${id}/erase`)).statusCode, 200)
      const afterErase = await history(id)
      assert.deepEqual(
        afterErase.map((e) => e.event),
        ['contact.erased', ...events.map((e) => e.event)],
      )
      const text = JSON.stringify(afterErase)
      for (const personal of ['Anna', 'anna@example.com', 'Li', 'free', 'pro'])
        assert.ok(!text.includes(personal), `erased history still says ${personal}`)
      for (const event of afterErase.slice(1)) {
        assert.deepEqual(event.data, {
          contact_id: id,
          actor: { type: 'api_key', id: org.keyId },
          redacted: true,
        })
      }
    })

    test('an update that changes nothing records nothing; one that changes an object records both objects', async () => {
      const id = await created({ first_name: 'Same', channels: { whatsapp: '+15550001111' } })
      await call('PUT', `/contact/${id}`, { first_name: 'Same' })
      // Key order differs, content does not.
      await call('PUT', `/contact/${id}`, { channels: { whatsapp: '+15550001111' } })
      assert.deepEqual(
        (await history(id)).map((e) => e.event),
        ['contact.created'],
      )
      await call('PUT', `/contact/${id}`, {
        channels: { whatsapp: '+15550002222' },
        email: 'same@example.com',
      })
      const [update] = await history(id)
      assert.deepEqual(update?.data.changes, {
        email: { previous: null, current: 'same@example.com' },
        channels: { previous: { whatsapp: '+15550001111' }, current: { whatsapp: '+15550002222' } },
      })
    })

    test('upserts, batches, bulk deletes and merges record their events', async () => {
      const upserted = await call('POST', '/contact/upsert?email=up@example.com', { first_name: 'Up' })
      assert.equal(upserted.statusCode, 201)
      const upId = upserted.json().data.id
      assert.equal(
        (await call('POST', '/contact/upsert?email=UP@example.com', { last_name: 'Date' })).statusCode,
        200,
      )
      const upEvents = await history(upId)
      assert.deepEqual(
        upEvents.map((e) => e.event),
        ['contact.updated', 'contact.created'],
      )
      // The upsert writes the email as given: a change of case is a change, and is reported.
      assert.deepEqual(upEvents[0]?.data.changes, {
        email: { previous: 'up@example.com', current: 'UP@example.com' },
        last_name: { previous: null, current: 'Date' },
      })

      // All new: the set-wise path.
      const batch = await call('POST', '/contact/batch/upsert', {
        contacts: [{ email: 'b1@example.com' }, { email: 'b2@example.com' }],
      })
      assert.equal(batch.statusCode, 200, batch.body)
      const [b1, b2] = batch.json().data.results.map((r: { id: string }) => r.id)
      assert.deepEqual(
        (await history(b1)).map((e) => e.event),
        ['contact.created'],
      )
      // Mixed, with a failing item: item by item; the failed item leaves no event.
      const before = await eventCount()
      const mixed = await call('POST', '/contact/batch/upsert', {
        contacts: [
          { email: 'b1@example.com', first_name: 'B1' },
          { email: 'b3@example.com', custom_fields: 'not an object' },
          { email: 'b4@example.com' },
        ],
      })
      assert.equal(mixed.statusCode, 207, mixed.body)
      assert.deepEqual(
        mixed.json().data.results.map((r: { status: string }) => r.status),
        ['updated', 'error', 'created'],
      )
      assert.equal(await eventCount(), before + 2)
      assert.equal((await history(b1))[0]?.event, 'contact.updated')

      const bulk = await call('DELETE', '/contact/multiple', { contact_ids: [b1, b2] })
      assert.equal(bulk.statusCode, 200, bulk.body)
      assert.equal((await history(b2))[0]?.event, 'contact.deleted')

      const primary = await created({ first_name: 'Primary' })
      const duplicate = await created({ first_name: 'Dupe', email: 'dupe@example.com' })
      const merged = await call('POST', '/contact/merge', { primary_id: primary, duplicate_ids: [duplicate] })
      assert.equal(merged.statusCode, 200, merged.body)
      const [merge] = await history(primary)
      assert.equal(merge?.event, 'contact.merged')
      assert.deepEqual(merge?.data.merged_ids, [duplicate])
      assert.deepEqual(merge?.data.changes, { email: { previous: null, current: 'dupe@example.com' } })
      // The merged-away contact's own history stays readable.
      assert.deepEqual(
        (await history(duplicate)).map((e) => e.event),
        ['contact.created'],
      )
    })

    test('a refused write records nothing', async () => {
      const id = await created({ email: 'taken@example.com' })
      const other2 = await created({ first_name: 'Other' })
      const before = await eventCount()
      // 409: the email is another contact's; 412: a stale If-Match; 422: a bad body; 404: no contact.
      assert.equal((await call('POST', '/contact', { email: 'TAKEN@example.com' })).statusCode, 409)
      assert.equal((await call('PUT', `/contact/${other2}`, { email: 'taken@example.com' })).statusCode, 409)
      const stale = await t.call(org.key, {
        method: 'PUT',
        url: `/api/v1/contact/${id}`,
        headers: { 'if-match': '"999"' },
        payload: { first_name: 'Stale' },
      })
      assert.equal(stale.statusCode, 412)
      assert.equal(
        (await call('PUT', `/contact/${id}`, { last_seen: '2024-02-30T00:00:00Z' })).statusCode,
        422,
      )
      assert.equal((await call('POST', `/contact/${id}/restore`)).statusCode, 409)
      assert.equal(await eventCount(), before)
    })

    test('an event is appended in the transaction of its write: rolled back with it', async () => {
      const id = await created({ first_name: 'Rollback' })
      const before = await eventCount()
      await assert.rejects(
        t.database.db.transaction().execute(async (trx) => {
          await recordEvent(trx, systemActor(org.id), { type: 'contact.erased', contactId: id })
          throw new Error('the write failed after its event was appended')
        }),
        /the write failed/,
      )
      assert.equal(await eventCount(), before)
    })

    test('history pages by cursor, newest first, each event once; cursors are bound to the contact', async () => {
      const id = await created({ first_name: 'v0' })
      for (let i = 1; i <= 120; i++) await call('PUT', `/contact/${id}`, { first_name: `v${i}` })
      const seen: Event[] = []
      let cursor: string | null = null
      let pages = 0
      do {
        const query: string = `?limit=50${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`
        const response = await call('GET', `/contact/${id}/history${query}`)
        assert.equal(response.statusCode, 200, response.body)
        const data = response.json().data
        seen.push(...data.items)
        cursor = data.next_cursor
        pages += 1
      } while (cursor)
      assert.equal(pages, 3)
      assert.equal(seen.length, 121)
      assert.equal(new Set(seen.map((e) => e.id)).size, 121)
      assert.deepEqual(
        seen.map((e) =>
          e.event === 'contact.created' ? e.data.contact?.first_name : e.data.changes?.first_name?.current,
        ),
        Array.from({ length: 121 }, (_, i) => `v${120 - i}`),
      )

      const first = (await call('GET', `/contact/${id}/history?limit=1`)).json().data.next_cursor
      const another = await created({ first_name: 'another' })
      const borrowed = await call('GET', `/contact/${another}/history?cursor=${encodeURIComponent(first)}`)
      assert.equal(borrowed.statusCode, 422)
      assert.equal(borrowed.json().code, 'invalid_cursor')
      assert.equal((await call('GET', `/contact/${id}/history?limit=0`)).statusCode, 422)
    })

    test("another organization's contact has no history to show; an unknown id is 404", async () => {
      const id = await created({ first_name: 'Private' })
      const response = await call('GET', `/contact/${id}/history`, undefined, other.key)
      assert.equal(response.statusCode, 404)
      assert.equal(response.json().code, 'contact_not_found')
      assert.equal(
        (await call('GET', '/contact/00000000-0000-4000-8000-000000000000/history')).statusCode,
        404,
      )
    })

    test('the trash purge erases as the service itself, and says so', async () => {
      const id = await created({ first_name: 'Old', email: 'old@example.com' })
      await call('DELETE', `/contact/${id}`)
      const { purgeTrash } = await import('../src/contacts/contacts.service.js')
      assert.ok((await purgeTrash(t.database.db, 0, Date.now() + 1000)) >= 1)
      const [erased, ...earlier] = await history(id)
      assert.equal(erased?.event, 'contact.erased')
      assert.deepEqual(erased?.data.actor, { type: 'system', id: null })
      assert.ok(!JSON.stringify(earlier).includes('old@example.com'))
    })
  })
}
