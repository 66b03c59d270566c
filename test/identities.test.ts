import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { sql } from 'kysely'
import { insertContact } from '../src/contacts/contacts.repository.js'
import { purgeTrash } from '../src/contacts/contacts.service.js'
import { uuidv7 } from '../src/shared/ids.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'
import { startServerProcess } from './helpers/processes.js'

const TABLES = [
  'organizations',
  'api_keys',
  'contacts',
  'contact_custom_fields',
  'contact_identities',
  'contact_merges',
  'users',
  'memberships',
  'sessions',
] as const

for (const backend of BACKENDS) {
  describe(`one person, one contact on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg

    before(async () => {
      t = await startTestApp(backend)
      org = await t.createOrg()
    })
    after(() => t?.close())

    const request = (method: string, url: string, payload?: unknown, headers: Record<string, string> = {}) =>
      t.call(org.key, {
        method: method as 'GET',
        url: `/api/v1${url}`,
        headers,
        ...(payload === undefined ? {} : { payload: payload as object }),
      })
    const create = async (body: object) => {
      const response = await request('POST', '/contact', body)
      assert.equal(response.statusCode, 201, response.body)
      return response.json().data as { id: string } & Record<string, unknown>
    }
    const get = async (id: string) => (await request('GET', `/contact/${id}`)).json()
    /** A row written straight to the table, as contacts made before identities were unique are. */
    const storedBeforeIdentities = (email: string) =>
      insertContact(t.database.db, {
        org_id: org.id,
        id: uuidv7(),
        email,
        email_normalized: email.toLowerCase(),
        channels: '{}',
        user_attributes: '{}',
        custom_fields: '{}',
        created_at: new Date().toISOString(),
        updated_at: new Date().toISOString(),
      })
    /** Every row of every table, as text, to search for what must not be there. */
    const everything = async () => {
      const dump: Record<string, unknown[]> = {}
      for (const table of TABLES) dump[table] = await t.database.db.selectFrom(table).selectAll().execute()
      return JSON.stringify(dump)
    }

    describe('identities are unique within an organization', () => {
      test('Foo@Example.com and foo@example.com are one identity: the second is 409 naming the first', async () => {
        const first = await create({ email: 'Foo@Example.com', first_name: 'Foo' })
        const second = await request('POST', '/contact', { email: 'foo@example.com' })
        assert.equal(second.statusCode, 409)
        assert.equal(second.json().code, 'identity_conflict')
        assert.equal(second.json().existing_id, first.id)
        assert.equal(typeof second.json().detail, 'string')
      })

      test('+1 (650) 111-1234 and 16501111234 are one phone, across the telephone and WhatsApp channels', async () => {
        const first = await create({ channels: { telephone: '+1 (650) 111-1234' } })
        const second = await request('POST', '/contact', { channels: { whatsapp: '16501111234' } })
        assert.equal(second.statusCode, 409)
        assert.equal(second.json().existing_id, first.id)
        const upsert = await request('POST', '/contact/upsert?phone_number=%2B16501111234&last_name=Same')
        assert.equal(upsert.statusCode, 200)
        assert.equal(upsert.json().data.id, first.id)
      })

      test('an external id is unique too, and upsert matches on it', async () => {
        const first = await create({ external_id: 'crm-42' })
        assert.equal(
          (await request('POST', '/contact', { external_id: 'crm-42' })).json().existing_id,
          first.id,
        )
        const upsert = await request('POST', '/contact/upsert', {
          external_id: 'crm-42',
          first_name: 'Matched',
        })
        assert.equal(upsert.statusCode, 200)
        assert.equal(upsert.json().data.id, first.id)
        assert.equal(upsert.json().data.external_id, 'crm-42')
      })

      test('updating a contact onto another’s identity is 409 and changes nothing', async () => {
        const holder = await create({ email: 'holder@example.com' })
        const other = await create({ email: 'other@example.com', first_name: 'Other' })
        const before = await get(other.id)
        const response = await request('PUT', `/contact/${other.id}`, {
          email: 'HOLDER@example.com',
          first_name: 'X',
        })
        assert.equal(response.statusCode, 409)
        assert.equal(response.json().existing_id, holder.id)
        assert.deepEqual(await get(other.id), before)
        const patched = await request('PATCH', `/contact/${other.id}`, {
          channels: { telephone: '+4420 7946 0000' },
        })
        assert.equal(patched.statusCode, 200)
        const clash = await request('PATCH', `/contact/${holder.id}`, {
          channels: { whatsapp: '+442079460000' },
        })
        assert.equal(clash.statusCode, 409)
        assert.equal(clash.json().existing_id, other.id)
      })

      test('changing a contact’s email frees the old one', async () => {
        const contact = await create({ email: 'old@example.com' })
        await request('PUT', `/contact/${contact.id}`, { email: 'new@example.com' })
        assert.equal((await request('POST', '/contact', { email: 'old@example.com' })).statusCode, 201)
      })

      test('identities follow the fields whatever else an update carries, and stay when those fields do', async () => {
        const contact = await create({
          email: 'Follows@Example.com',
          channels: { whatsapp: '+1 650 222 0001' },
        })
        // A new number in the channels, nothing else of the identities: the old number is free.
        await request('PUT', `/contact/${contact.id}`, {
          first_name: 'Moved',
          channels: { whatsapp: '+1 650 222 0002' },
        })
        const takesNew = await request('POST', '/contact', { channels: { telephone: '+16502220002' } })
        assert.equal(takesNew.statusCode, 409)
        assert.equal(takesNew.json().existing_id, contact.id)
        assert.equal(
          (await request('POST', '/contact', { channels: { telephone: '+16502220001' } })).statusCode,
          201,
        )
        // The same email in another case, and the same channels: the identities stay as they were.
        await request('PUT', `/contact/${contact.id}`, {
          email: 'follows@example.com',
          channels: { whatsapp: '+1 650 222 0002' },
          last_name: 'Still',
        })
        const takesEmail = await request('POST', '/contact', { email: 'FOLLOWS@example.com' })
        assert.equal(takesEmail.statusCode, 409)
        assert.equal(takesEmail.json().existing_id, contact.id)
        const held = await t.database.db
          .selectFrom('contact_identities')
          .select(['kind', 'value'])
          .where('org_id', '=', org.id)
          .where('contact_id', '=', contact.id)
          .orderBy('kind')
          .execute()
        assert.deepEqual(held, [
          { kind: 'email', value: 'follows@example.com' },
          { kind: 'phone', value: '+16502220002' },
        ])
        // The number written another way, and a channel that is no identity: still one number.
        await request('PUT', `/contact/${contact.id}`, {
          channels: { whatsapp: '+16502220002', instagram: 'follows' },
        })
        const takesNumber = await request('POST', '/contact', {
          channels: { telephone: '+1 (650) 222-0002' },
        })
        assert.equal(takesNumber.statusCode, 409)
        assert.equal(takesNumber.json().existing_id, contact.id)
        // No phone channel left: the number is free, the email is kept.
        await request('PUT', `/contact/${contact.id}`, { channels: { instagram: 'follows' } })
        const heldAfter = await t.database.db
          .selectFrom('contact_identities')
          .select(['kind', 'value'])
          .where('org_id', '=', org.id)
          .where('contact_id', '=', contact.id)
          .execute()
        assert.deepEqual(heldAfter, [{ kind: 'email', value: 'follows@example.com' }])
        assert.equal(
          (await request('POST', '/contact', { channels: { telephone: '+16502220002' } })).statusCode,
          201,
        )
      })

      test('a contact with two numbers that changes one keeps the other, and may hold one number in both', async () => {
        const contact = await create({
          channels: { telephone: '+1 650 333 0001', whatsapp: '+1 650 333 0002' },
        })
        const phonesHeld = async () =>
          (
            await t.database.db
              .selectFrom('contact_identities')
              .select('value')
              .where('org_id', '=', org.id)
              .where('contact_id', '=', contact.id)
              .where('kind', '=', 'phone')
              .orderBy('value')
              .execute()
          ).map((row) => row.value)
        await request('PUT', `/contact/${contact.id}`, {
          channels: { telephone: '+1 650 333 0001', whatsapp: '+1 650 333 0003' },
        })
        assert.deepEqual(await phonesHeld(), ['+16503330001', '+16503330003'])
        assert.equal(
          (await request('POST', '/contact', { channels: { whatsapp: '+16503330002' } })).statusCode,
          201,
        )
        // Both channels on one number, written two ways: one identity, and the other number freed.
        const same = await request('PUT', `/contact/${contact.id}`, {
          channels: { telephone: '+1 650 333 0003', whatsapp: '16503330003' },
        })
        assert.equal(same.statusCode, 200)
        assert.deepEqual(await phonesHeld(), ['+16503330003'])
        assert.equal(
          (await request('POST', '/contact', { channels: { telephone: '+16503330001' } })).statusCode,
          201,
        )
      })

      test('a contact stored before identities were unique keeps its writes, and gets a shared identity only as a conflict', async () => {
        const holder = await create({ email: 'stored-early@example.com' })
        const legacy = await storedBeforeIdentities('stored-early@example.com')
        // A write that leaves the shared email alone is no conflict, and claims nothing.
        const channels = await request('PUT', `/contact/${legacy.id}`, {
          channels: { whatsapp: '+1 650 444 0001' },
        })
        assert.equal(channels.statusCode, 200)
        const holders = await t.database.db
          .selectFrom('contact_identities')
          .select(['kind', 'contact_id'])
          .where('org_id', '=', org.id)
          .where('contact_id', 'in', [holder.id, legacy.id])
          .orderBy('kind')
          .execute()
        assert.deepEqual(holders, [
          { kind: 'email', contact_id: holder.id },
          { kind: 'phone', contact_id: legacy.id },
        ])
        // Given the email anew, it is the conflict any contact would get.
        await request('PUT', `/contact/${legacy.id}`, { email: 'stored-early-own@example.com' })
        const back = await request('PUT', `/contact/${legacy.id}`, { email: 'stored-early@example.com' })
        assert.equal(back.statusCode, 409)
        assert.equal(back.json().existing_id, holder.id)
      })

      test('the same identity in another organization is another contact', async () => {
        const other = await t.createOrg()
        await create({ email: 'shared@example.com' })
        const response = await t.call(other.key, {
          method: 'POST',
          url: '/api/v1/contact',
          payload: { email: 'shared@example.com' },
        })
        assert.equal(response.statusCode, 201)
      })

      test('upsert with identities of two different contacts is 409, not a silent pick', async () => {
        const a = await create({ email: 'a-only@example.com' })
        await create({ channels: { telephone: '+33612345678' } })
        const response = await request(
          'POST',
          '/contact/upsert?email=a-only%40example.com&phone_number=%2B33612345678',
        )
        assert.equal(response.statusCode, 409)
        assert.equal(response.json().existing_id, a.id)
      })
    })

    describe('PATCH with a JSON merge patch', () => {
      test('omitted keys are kept, null deletes, nested objects merge', async () => {
        const contact = await create({
          first_name: 'Pat',
          last_name: 'Ch',
          custom_fields: { plan: 'free', seats: 2 },
          user_attributes: { prefs: { lang: 'en', tz: 'UTC' }, source: 'web' },
          channels: { instagram: 'pat', slack: 'U1' },
        })
        const response = await request(
          'PATCH',
          `/contact/${contact.id}`,
          {
            last_name: null,
            custom_fields: { plan: 'pro' },
            user_attributes: { prefs: { tz: null } },
            channels: { slack: null },
          },
          { 'content-type': 'application/merge-patch+json' },
        )
        assert.equal(response.statusCode, 200, response.body)
        const data = response.json().data
        assert.equal(data.first_name, 'Pat')
        assert.equal(data.last_name, null)
        assert.deepEqual(data.custom_fields, { plan: 'pro', seats: 2 })
        assert.deepEqual(data.user_attributes, { prefs: { lang: 'en' }, source: 'web' })
        assert.deepEqual(data.channels, { instagram: 'pat' })
      })

      test('null for a whole object empties it; PUT still replaces objects', async () => {
        const contact = await create({ custom_fields: { a: 1, b: 2 } })
        const patched = await request('PATCH', `/contact/${contact.id}`, { custom_fields: null })
        assert.deepEqual(patched.json().data.custom_fields, {})
        await request('PATCH', `/contact/${contact.id}`, { custom_fields: { a: 1, b: 2 } })
        const put = await request('PUT', `/contact/${contact.id}`, { custom_fields: { c: 3 } })
        assert.deepEqual(put.json().data.custom_fields, { c: 3 })
      })

      test('patched custom fields are type-checked on the merged result', async () => {
        await request('POST', '/contact_custom_field', {
          custom_field_name: 'score',
          custom_field_type: 'number',
        })
        const contact = await create({ custom_fields: { score: 1 } })
        const response = await request('PATCH', `/contact/${contact.id}`, {
          custom_fields: { score: 'high' },
        })
        assert.equal(response.statusCode, 422)
        assert.deepEqual(response.json().detail[0].loc, ['body', 'custom_fields', 'score'])
      })

      test('concurrent patches of different keys all survive', async () => {
        const contact = await create({ custom_fields: {} })
        const answers = await Promise.all(
          Array.from({ length: 8 }, (_, i) =>
            request('PATCH', `/contact/${contact.id}`, { custom_fields: { [`k${i}`]: i } }),
          ),
        )
        assert.deepEqual(
          answers.map((a) => a.statusCode),
          Array(8).fill(200),
        )
        assert.deepEqual(Object.keys((await get(contact.id)).data.custom_fields).sort(), [
          'k0',
          'k1',
          'k2',
          'k3',
          'k4',
          'k5',
          'k6',
          'k7',
        ])
      })
    })

    test('simultaneous writes to one contact that add the same phone number all succeed', async () => {
      const contact = await create({ email: 'same-person@example.com' })
      const answers = await Promise.all(
        Array.from({ length: 8 }, (_, i) =>
          request('PUT', `/contact/${contact.id}`, {
            channels: { telephone: '+15550199999' },
            last_name: `W${i}`,
          }),
        ),
      )
      assert.deepEqual(
        answers.map((answer) => answer.statusCode),
        Array(8).fill(200),
        answers.map((answer) => answer.body).join('\n'),
      )
      const found = await request('POST', '/contact/upsert?phone_number=%2B15550199999')
      assert.equal(found.json().data.id, contact.id)
    })

    describe('batch upsert', () => {
      test('gives one outcome per item and commits the good items despite the bad ones', async () => {
        const existing = await create({ email: 'batch-existing@example.com', first_name: 'Before' })
        await create({ channels: { telephone: '+15550100001' } })
        const response = await request('POST', '/contact/batch/upsert', {
          contacts: [
            { email: 'batch-new@example.com', first_name: 'New' },
            { email: 'BATCH-EXISTING@example.com', first_name: 'After' },
            { email: 42 },
            { first_name: 'No identity' },
            { email: 'batch-existing@example.com', phone_number: '+15550100001' },
            { phone_number: '+15550100002', first_name: 'Twice' },
            { phone_number: '15550100002', last_name: 'Again' },
          ],
        })
        assert.equal(response.statusCode, 207, response.body)
        const { results, created, updated, failed } = response.json().data
        assert.deepEqual(
          results.map((r: { status: string }) => r.status),
          ['created', 'updated', 'error', 'error', 'error', 'created', 'updated'],
        )
        assert.deepEqual([created, updated, failed], [2, 2, 3])
        assert.equal(results[1].id, existing.id)
        assert.equal(results[2].error.code, 'validation_failed')
        assert.deepEqual(results[2].error.detail[0].loc, ['body', 'contacts', 2, 'email'])
        assert.equal(results[4].error.code, 'identity_conflict')
        assert.equal(results[6].id, results[5].id, 'the same person twice is one contact')
        assert.equal((await get(existing.id)).data.first_name, 'After')
        const twice = (await get(results[5].id)).data
        assert.deepEqual([twice.first_name, twice.last_name], ['Twice', 'Again'])
      })

      test('a thousand new people are created at once with every identity, as one by one would', async () => {
        const people = Array.from({ length: 1000 }, (_, i) => ({
          email: `Bulk${i}@Example.com`,
          phone_number: `+1650555${String(i).padStart(4, '0')}`,
          external_id: `bulk-${i}`,
          first_name: `Bulk ${i}`,
          ...(i === 7 ? { email: 'not an email but a string' } : {}),
        }))
        people[3] = { ...people[3], bad: true } as never
        const response = await request('POST', '/contact/batch/upsert', { contacts: people })
        assert.equal(response.statusCode, 200, response.body)
        const { results, created } = response.json().data
        assert.equal(created, 1000)
        assert.deepEqual(
          results.map((r: { index: number }) => r.index),
          people.map((_, i) => i),
        )
        // Every identity of every new contact was recorded: each finds its contact again.
        for (const i of [0, 3, 7, 500, 999]) {
          const id = results[i].id
          for (const query of [
            `email=${encodeURIComponent(people[i]?.email ?? '')}`,
            `phone_number=${encodeURIComponent(people[i]?.phone_number ?? '')}`,
            `external_id=bulk-${i}`,
          ]) {
            const again = await request('POST', `/contact/upsert?${query}`)
            assert.equal(again.statusCode, 200, `${i} ${query}: ${again.body}`)
            assert.equal(again.json().data.id, id)
          }
          const phone = (await get(id)).data.channels.telephone
          assert.equal(phone, people[i]?.phone_number)
        }
        // Taking one of them again is a conflict, as for any contact.
        const clash = await request('POST', '/contact', { email: 'bulk500@example.com' })
        assert.equal(clash.statusCode, 409)
        assert.equal(clash.json().existing_id, results[500].id)
      })

      test('a known person late in a large batch is updated, and the rows tried before leave nothing behind', async () => {
        const known = await create({ email: 'late-known@example.com', first_name: 'Before' })
        // On PostgreSQL the first rows are inserted before the known person is reached; the
        // batch then goes item by item, and what was inserted first must be gone.
        const people = Array.from({ length: 600 }, (_, i) =>
          i === 550
            ? { email: 'LATE-KNOWN@example.com', first_name: 'After' }
            : { email: `late${i}@example.com` },
        )
        const response = await request('POST', '/contact/batch/upsert', { contacts: people })
        assert.equal(response.statusCode, 200, response.body)
        const { results, created, updated } = response.json().data
        assert.deepEqual([created, updated], [599, 1])
        assert.deepEqual([results[550].status, results[550].id], ['updated', known.id])
        assert.equal((await get(known.id)).data.first_name, 'After')
        const db = t.database.db
        const contacts = await db
          .selectFrom('contacts')
          .select(['id'])
          .where('org_id', '=', org.id)
          .where('email_normalized', 'like', 'late%')
          .execute()
        assert.equal(contacts.length, 600, 'one contact per person, none left over from the first try')
        const identities = await db
          .selectFrom('contact_identities')
          .select((eb) => eb.fn.countAll().as('n'))
          .where('org_id', '=', org.id)
          .where('value', 'like', 'late%')
          .executeTakeFirstOrThrow()
        assert.equal(Number(identities.n), 600)
        const events = await db
          .selectFrom('contact_events')
          .select(['type'])
          .where('org_id', '=', org.id)
          .where(
            'contact_id',
            'in',
            contacts.map((contact) => contact.id),
          )
          .execute()
        const count = (type: string) => events.filter((event) => event.type === type).length
        assert.deepEqual([count('contact.created'), count('contact.updated')], [600, 1])
      })

      test('a large batch with typed custom fields needs no second connection of the pool', {
        timeout: 60_000,
      }, async () => {
        // One connection: a batch that held it in its transaction while it looked up the custom
        // fields' types with another would wait for itself.
        const narrow = await startTestApp(backend, { config: { databasePoolSize: 1 } })
        try {
          const owner = await narrow.createOrg()
          const defined = await narrow.api(owner.key, 'POST', '/contact_custom_field', {
            custom_field_name: 'score',
            custom_field_type: 'number',
          })
          assert.ok(defined.statusCode < 300, defined.body)
          const people = Array.from({ length: 600 }, (_, i) => ({
            email: `typed${i}@example.com`,
            custom_fields: { score: i === 300 ? 'high' : i },
          }))
          const response = await narrow.api(owner.key, 'POST', '/contact/batch/upsert', { contacts: people })
          assert.equal(response.statusCode, 207, response.body)
          const { results, created, failed } = response.json().data
          assert.deepEqual([created, failed], [599, 1])
          assert.equal(results[300].error.code, 'validation_failed')
          assert.deepEqual(results[300].error.detail[0].loc, [
            'body',
            'contacts',
            300,
            'custom_fields',
            'score',
          ])
        } finally {
          await narrow.close()
        }
      })

      test('answers 200 when every item succeeds, and refuses more than 1000 items', async () => {
        const ok = await request('POST', '/contact/batch/upsert', {
          contacts: [{ email: 'all-good@example.com' }],
        })
        assert.equal(ok.statusCode, 200)
        const tooMany = Array.from({ length: 1001 }, (_, i) => ({ email: `n${i}@example.com` }))
        assert.equal((await request('POST', '/contact/batch/upsert', { contacts: tooMany })).statusCode, 422)
      })
    })

    describe('duplicates and merge', () => {
      test('an email in the email channel is an identity like the email field', async () => {
        const a = await create({ email: 'channel@example.com' })
        const clash = await request('POST', '/contact', { channels: { email: 'Channel@Example.com' } })
        assert.equal(clash.json().existing_id, a.id)
      })

      test('duplicates are found by name with an equal channel, and by email among contacts imported before identities', async () => {
        const a = await create({
          first_name: 'Jo',
          last_name: 'Doe',
          email: 'jo@example.com',
          channels: { instagram: 'jodoe' },
        })
        const byName = await create({
          first_name: 'Jo',
          last_name: 'Doe',
          channels: { instagram: 'JoDoe', telephone: '+15550109999' },
        })
        const legacy = await storedBeforeIdentities('JO@example.com')
        const byEmail = { id: legacy.id }
        await create({ first_name: 'Jo', last_name: 'Doe', channels: { instagram: 'someone-else' } })
        const response = await request('GET', `/contact/${a.id}/duplicates`)
        assert.equal(response.statusCode, 200)
        const found = response
          .json()
          .data.map((d: { id: string; matched_on: string[] }) => [d.id, d.matched_on])
        assert.deepEqual(found, [
          [byName.id, ['name_and_channel']],
          [byEmail.id, ['email']],
        ])
      })

      test('merge follows the survivorship rules, moves every identity, and redirects the merged ids', async () => {
        const early = await create({
          first_name: null,
          email: 'early@example.com',
          channels: { telephone: '+15550200001', slack: 'U-early' },
          custom_fields: { plan: 'free', seats: 3 },
          first_assistant_id: '0190a5e4-0000-7000-8000-00000000e001',
          last_assistant_id: '0190a5e4-0000-7000-8000-00000000e002',
          last_seen: '2024-01-01T00:00:00Z',
          external_id: 'early-1',
        })
        const primary = await create({
          first_name: 'Prim',
          channels: { slack: 'U-primary' },
          custom_fields: { plan: 'pro' },
          first_assistant_id: '0190a5e4-0000-7000-8000-00000000f001',
          last_seen: '2024-02-01T00:00:00Z',
          last_sent: '2024-02-02T00:00:00Z',
        })
        const late = await create({
          first_name: 'Late',
          last_name: 'Comer',
          email: 'late@example.com',
          last_assistant_id: '0190a5e4-0000-7000-8000-00000000a003',
          last_seen: '2024-03-01T00:00:00Z',
        })
        const response = await request('POST', '/contact/merge', {
          primary_id: primary.id,
          duplicate_ids: [early.id, late.id],
        })
        assert.equal(response.statusCode, 200, response.body)
        const merged = response.json().data
        assert.equal(merged.id, primary.id)
        assert.equal(merged.first_name, 'Prim', "the primary's non-null field wins")
        assert.equal(merged.last_name, 'Comer', 'a null field is filled from a duplicate')
        assert.equal(merged.email, 'late@example.com', 'filled from the most recently updated duplicate')
        assert.deepEqual(merged.channels, { telephone: '+15550200001', slack: 'U-primary' })
        assert.deepEqual(merged.custom_fields, { plan: 'pro', seats: 3 })
        assert.equal(merged.first_assistant_id, early.first_assistant_id, 'first_* from the earliest contact')
        assert.equal(merged.created_at, early.created_at)
        assert.equal(merged.last_assistant_id, late.last_assistant_id, 'last_* from the most recently active')
        assert.equal(merged.last_seen, '2024-03-01T00:00:00Z')
        assert.equal(merged.last_sent, '2024-02-02T00:00:00Z')
        assert.equal(merged.external_id, 'early-1')

        for (const id of [early.id, late.id]) {
          const gone = await request('GET', `/contact/${id}`)
          assert.equal(gone.statusCode, 404)
          assert.equal(gone.json().code, 'contact_merged')
          assert.equal(gone.json().merged_into, primary.id)
        }
        for (const query of [
          'email=early%40example.com',
          'email=late%40example.com',
          'phone_number=15550200001',
          'external_id=early-1',
        ]) {
          const upsert = await request('POST', `/contact/upsert?${query}`)
          assert.equal(upsert.statusCode, 200, query)
          assert.equal(upsert.json().data.id, primary.id, `${query} now leads to the survivor`)
        }
        assert.equal(
          (await request('POST', '/contact', { email: 'early@example.com' })).json().existing_id,
          primary.id,
        )
      })

      test('a merge that fails midway leaves nothing half-done', async () => {
        const primary = await create({ first_name: 'Keep', email: 'keep@example.com' })
        const duplicate = await create({
          first_name: 'Dup',
          email: 'dup@example.com',
          channels: { telephone: '+15550300001' },
        })
        const before = await everything()
        const db = t.database.db
        if (backend.name === 'sqlite') {
          await sql`create trigger fail_merge before insert on contact_merges begin select raise(abort, 'injected failure'); end`.execute(
            db,
          )
        } else {
          await sql`create function fail_merge() returns trigger language plpgsql as $$ begin raise exception 'injected failure'; end $$`.execute(
            db,
          )
          await sql`create trigger fail_merge before insert on contact_merges for each row execute function fail_merge()`.execute(
            db,
          )
        }
        try {
          const response = await request('POST', '/contact/merge', {
            primary_id: primary.id,
            duplicate_ids: [duplicate.id],
          })
          assert.equal(response.statusCode, 500)
        } finally {
          await sql`drop trigger fail_merge${sql.raw(backend.name === 'postgres' ? ' on contact_merges' : '')}`.execute(
            db,
          )
          if (backend.name === 'postgres') await sql`drop function fail_merge()`.execute(db)
        }
        assert.equal(await everything(), before, 'every table is as it was')
        assert.equal((await get(duplicate.id)).data.first_name, 'Dup')
      })

      test('merging refuses a primary among the duplicates and unknown ids', async () => {
        const a = await create({})
        const same = await request('POST', '/contact/merge', { primary_id: a.id, duplicate_ids: [a.id] })
        assert.equal(same.statusCode, 422)
        const unknown = await request('POST', '/contact/merge', {
          primary_id: a.id,
          duplicate_ids: ['0190a5e4-0000-7000-8000-0000000000aa'],
        })
        assert.equal(unknown.statusCode, 404)
      })
    })

    describe('trash, restore and erase', () => {
      test('a deleted contact leaves lists and lookups, frees its identities, and is listed in the trash', async () => {
        const contact = await create({ email: 'trashed@example.com', first_name: 'Trash' })
        const response = await request('DELETE', `/contact/${contact.id}`)
        assert.deepEqual(response.json(), {
          message: 'Data deleted successfully',
          meta: {},
          data: { id: contact.id },
        })
        assert.equal((await request('GET', `/contact/${contact.id}`)).statusCode, 404)
        const list = (await request('GET', '/contact?size=100'))
          .json()
          .data.items.map((c: { id: string }) => c.id)
        assert.ok(!list.includes(contact.id))
        const trash = (await request('GET', '/contact/trash')).json().data
        assert.equal(trash.items[0].id, contact.id)
        assert.match(trash.items[0].deleted_at, /Z$/)
        const reuse = await create({ email: 'trashed@example.com' })
        assert.notEqual(reuse.id, contact.id)
        const blocked = await request('POST', `/contact/${contact.id}/restore`)
        assert.equal(blocked.statusCode, 409, 'its email has been taken meanwhile')
        assert.equal(blocked.json().existing_id, reuse.id)
        assert.equal((await request('GET', `/contact/${contact.id}`)).statusCode, 404, 'still in the trash')
      })

      test('a restored contact is identical to the one deleted, identities included', async () => {
        const contact = await create({
          first_name: 'Back',
          email: 'back@example.com',
          channels: { whatsapp: '+15550400001' },
          custom_fields: { a: 1 },
          last_seen: '2024-05-05T05:05:05.500Z',
        })
        const before = await get(contact.id)
        await request('DELETE', `/contact/${contact.id}`)
        const restored = await request('POST', `/contact/${contact.id}/restore`)
        assert.equal(restored.statusCode, 200)
        assert.deepEqual(restored.json().data, before.data)
        assert.deepEqual(await get(contact.id), before)
        assert.equal(
          (await request('POST', '/contact', { email: 'back@example.com' })).json().existing_id,
          contact.id,
        )
        assert.equal(
          (await request('POST', `/contact/${contact.id}/restore`)).json().code,
          'contact_not_in_trash',
        )
      })

      test('an erased contact leaves no personal data in any table', async () => {
        const contact = await create({
          first_name: 'Erasmus',
          last_name: 'Forgotten',
          email: 'erase-me@example.com',
          channels: { telephone: '+15550500001' },
          external_id: 'erase-ext',
        })
        const duplicate = await create({ first_name: 'Erasmus', email: 'erase-dup@example.com' })
        await request('POST', '/contact/merge', { primary_id: contact.id, duplicate_ids: [duplicate.id] })
        const erased = await request('POST', `/contact/${contact.id}/erase`)
        assert.equal(erased.statusCode, 200)
        assert.deepEqual(erased.json().data, { id: contact.id })
        const all = await everything()
        for (const trace of [
          contact.id,
          duplicate.id,
          'Erasmus',
          'Forgotten',
          'erase-me@example.com',
          'erase-dup@example.com',
          '+15550500001',
          'erase-ext',
        ]) {
          assert.ok(!all.includes(trace), `${trace} is gone from every table`)
        }
        assert.equal((await request('GET', `/contact/${contact.id}`)).statusCode, 404)
      })

      test('a contact can be erased from the trash, and the trash empties itself after the retention period', async () => {
        const inTrash = await create({ first_name: 'Binned' })
        await request('DELETE', `/contact/${inTrash.id}`)
        assert.equal((await request('POST', `/contact/${inTrash.id}/erase`)).statusCode, 200)
        assert.equal((await request('POST', `/contact/${inTrash.id}/restore`)).statusCode, 404)

        const old = await create({ first_name: 'Expiring' })
        await request('DELETE', `/contact/${old.id}`)
        assert.equal(await purgeTrash(t.database.db, 30), 0, 'kept within the retention period')
        const purged = await purgeTrash(t.database.db, 30, Date.now() + 31 * 24 * 60 * 60 * 1000)
        assert.ok(purged >= 1)
        assert.equal((await request('POST', `/contact/${old.id}/restore`)).statusCode, 404)
      })
    })

    test('20 simultaneous upserts of one new person over real HTTP create exactly one contact', async () => {
      const server = await startServerProcess({ DATABASE_URL: t.testDatabase.url, DATABASE_POOL_SIZE: '8' })
      try {
        const responses = await Promise.all(
          Array.from({ length: 20 }, (_, i) =>
            fetch(
              `${server.url}/api/v1/contact/upsert?email=Race%40Example.com&phone_number=%2B15550600001&first_name=R${i}`,
              {
                method: 'POST',
                headers: { 'x-api-key': org.key },
              },
            ),
          ),
        )
        const bodies = (await Promise.all(responses.map((r) => r.json()))) as { data: { id: string } }[]
        const statuses = responses.map((r) => r.status)
        assert.ok(
          statuses.every((s) => s === 200 || s === 201),
          `statuses: ${statuses}`,
        )
        assert.equal(statuses.filter((s) => s === 201).length, 1, 'exactly one created')
        assert.equal(new Set(bodies.map((b) => b.data.id)).size, 1, 'all answer the same contact')
        const rows = await t.database.db
          .selectFrom('contacts')
          .select('id')
          .where('org_id', '=', org.id)
          .where('email_normalized', '=', 'race@example.com')
          .execute()
        assert.equal(rows.length, 1)
      } finally {
        await server.stop()
      }
    })
  })
}
