import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { setTimeout as sleep } from 'node:timers/promises'
import fc from 'fast-check'
import { sql } from 'kysely'
import type { Principal } from '../src/api-keys/api-keys.service.js'
import { insertContact } from '../src/contacts/contacts.repository.js'
import {
  createContact,
  deleteContact,
  eraseContact,
  newContactRow,
  updateContact,
} from '../src/contacts/contacts.service.js'
import type { Filter } from '../src/contacts/search.schemas.js'
import { searchContacts } from '../src/contacts/search.service.js'
import { openDatabase } from '../src/db/database.js'
import { migrateTo, migrateToLatest } from '../src/db/migrations.js'
import { createOrganization } from '../src/organizations/organizations.service.js'
import { cursorCodecOnce } from '../src/shared/cursor.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'
import { scratchDatabase } from './helpers/scratch-database.js'
import { type ModelContact, matchesFilter, matchesText, sortContacts } from './helpers/search-model.js'

const ASSISTANT = '0191d7a0-0000-7000-8000-00000000000a'
const OTHER_ASSISTANT = '0191d7a0-0000-7000-8000-00000000000b'

/** The cursor with one character of its signature changed (a character that holds six bits of it). */
const withEditedSignature = (cursor: string) => {
  const [payload, signature = ''] = cursor.split('.')
  return `${payload}.${signature.startsWith('A') ? 'B' : 'A'}${signature.slice(1)}`
}

/** People chosen for the corners of search: Unicode, LIKE wildcards, empty fields, JSON types. */
const PEOPLE = [
  {
    first_name: 'Zoë',
    last_name: 'Ørsted',
    email: 'Zoe.Orsted@Example.com',
    channels: { whatsapp: '+1 650 111 1234' },
    custom_fields: { plan: 'gold', score: 42 },
    user_attributes: { vip: true, age: 31, city: 'Oslo' },
    last_seen: '2026-01-05T10:00:00Z',
    first_assistant_id: ASSISTANT,
    external_id: 'crm-1',
  },
  {
    first_name: 'Ann',
    last_name: 'Lee',
    email: 'ann@example.org',
    channels: { telephone: '+44 20 7946 0958' },
    custom_fields: { plan: 'silver', score: 7.5 },
    user_attributes: { vip: false, age: '31', city: 'London' },
    last_seen: '2026-03-01T08:30:00Z',
    first_assistant_id: OTHER_ASSISTANT,
    external_id: 'crm-2',
  },
  {
    first_name: 'ann_%',
    last_name: 'Wild\\card',
    email: null,
    channels: {},
    custom_fields: { plan: 'gold' },
    user_attributes: {},
    last_seen: null,
    first_assistant_id: null,
    external_id: null,
  },
  {
    first_name: 'ÉLODIE',
    last_name: 'Durand',
    email: 'elodie@exemple.fr',
    channels: { instagram: '@Elodie.D' },
    custom_fields: { score: 100 },
    user_attributes: { city: 'Paris', tags: ['a', 'b'] },
    last_seen: '2026-03-01T08:30:00Z',
    first_assistant_id: ASSISTANT,
    external_id: 'crm-3',
  },
  {
    first_name: '李',
    last_name: '小龙',
    email: 'lee@example.cn',
    channels: { wechat: 'bruce_李' },
    custom_fields: { plan: 'platinum', score: -3 },
    user_attributes: { age: 32 },
    last_seen: '2025-12-31T23:59:59.999Z',
    first_assistant_id: null,
    external_id: 'crm-4',
  },
  {
    first_name: null,
    last_name: null,
    email: 'nobody@example.com',
    channels: { telephone: '16501111235' },
    custom_fields: {},
    user_attributes: { city: 'oslo' },
    last_seen: null,
    first_assistant_id: OTHER_ASSISTANT,
    external_id: null,
  },
  {
    first_name: 'Ann',
    last_name: 'Leeds',
    email: 'ANN.LEEDS@example.org',
    channels: { whatsapp: '+16501111236', email: 'ann.l@work.example' },
    custom_fields: { plan: 'Gold', score: 42 },
    user_attributes: { vip: true },
    last_seen: '2026-02-14T12:00:00Z',
    first_assistant_id: ASSISTANT,
    external_id: 'crm-5',
  },
]

for (const backend of BACKENDS) {
  describe(`search on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    let other: TestOrg
    let all: ModelContact[]

    const get = async (query: string, key = org.key) =>
      t.call(key, { method: 'GET', url: `/api/v1/contact?${query}` })
    const search = async (payload: object, key = org.key) =>
      t.call(key, { method: 'POST', url: '/api/v1/contact/search', payload })
    const namesOf = (items: ModelContact[]) => items.map((c) => `${c.first_name} ${c.last_name}`)

    /** Every contact a search finds, following next_cursor to the end. */
    async function everyPage(payload: Record<string, unknown>, key = org.key): Promise<ModelContact[]> {
      const found: ModelContact[] = []
      let cursor: string | undefined
      for (let pages = 0; pages < 1000; pages += 1) {
        const response = await search({ ...payload, ...(cursor ? { cursor } : {}) }, key)
        assert.equal(response.statusCode, 200, response.body)
        const { items, next_cursor } = response.json().data
        found.push(...items)
        if (next_cursor === null) return found
        cursor = next_cursor
      }
      throw new Error('paging did not end')
    }

    /** What the reference model says the search finds, in order. */
    const expected = (filter?: Filter, q?: string, sort?: string) =>
      sortContacts(
        all.filter((c) => (!filter || matchesFilter(c, filter)) && (q === undefined || matchesText(c, q))),
        sort,
      )

    before(async () => {
      t = await startTestApp(backend)
      org = await t.createOrg()
      other = await t.createOrg()
      for (const [name, type] of [
        ['plan', 'string'],
        ['score', 'number'],
      ]) {
        const response = await t.call(org.key, {
          method: 'POST',
          url: '/api/v1/contact_custom_field',
          payload: { custom_field_name: name, custom_field_type: type },
        })
        assert.equal(response.statusCode, 201, response.body)
      }
      for (const person of PEOPLE) {
        const response = await t.call(org.key, { method: 'POST', url: '/api/v1/contact', payload: person })
        assert.equal(response.statusCode, 201, response.body)
      }
      // Another organization with look-alikes, which no search of the first may ever return.
      for (const person of PEOPLE.slice(0, 3)) {
        await t.call(other.key, {
          method: 'POST',
          url: '/api/v1/contact',
          payload: { ...person, email: person.email && `x${person.email}`, external_id: null, channels: {} },
        })
      }
      all = (await get('size=100')).json().data.items
      assert.equal(all.length, PEOPLE.length)
    })
    after(() => t?.close())

    test('q finds case-insensitively in names, "first last", email and channel values', async () => {
      for (const [q, names] of [
        ['zoë', ['Zoë Ørsted']],
        ['ØRST', ['Zoë Ørsted']],
        ['élodie', ['ÉLODIE Durand']],
        ['ann lee', ['Ann Leeds', 'Ann Lee']],
        ['example.org', ['Ann Leeds', 'Ann Lee']],
        ['16501111234', ['Zoë Ørsted']],
        ['650 111 1234', ['Zoë Ørsted']],
        ['bruce_李', ['李 小龙']],
        ['小龙', ['李 小龙']],
        ['work.example', ['Ann Leeds']],
      ] as const) {
        const response = await get(`q=${encodeURIComponent(q)}&size=100`)
        assert.equal(response.statusCode, 200, response.body)
        assert.deepEqual(namesOf(response.json().data.items), names, q)
      }
    })

    test('% and _ in q are plain characters, not wildcards', async () => {
      assert.deepEqual(namesOf((await get('q=_%25')).json().data.items), ['ann_% Wild\\card'])
      assert.deepEqual(namesOf((await get('q=d%5Cc')).json().data.items), ['ann_% Wild\\card'])
      assert.deepEqual((await get('q=a%25n')).json().data.items, [])
      assert.deepEqual((await get('q=a_n')).json().data.items, [])
    })

    test('equality filters: email case-insensitively, phone in any format, external_id, uuid fields', async () => {
      const cases: [string, string[]][] = [
        ['email=zoe.orsted@EXAMPLE.com', ['Zoë Ørsted']],
        ['phone=%2B1%20(650)%20111-1234', ['Zoë Ørsted']],
        ['phone=16501111235', ['null null']],
        ['phone=442079460958', ['Ann Lee']],
        ['external_id=crm-3', ['ÉLODIE Durand']],
        [`first_assistant_id=${ASSISTANT.toUpperCase()}`, ['Ann Leeds', 'ÉLODIE Durand', 'Zoë Ørsted']],
        [`first_assistant_id=${ASSISTANT}&q=ann`, ['Ann Leeds']],
      ]
      for (const [query, names] of cases) {
        const response = await get(`${query}&size=100`)
        assert.equal(response.statusCode, 200, `${query}: ${response.body}`)
        assert.deepEqual(namesOf(response.json().data.items), names, query)
      }
    })

    test('date ranges are strict and combine', async () => {
      const names = async (query: string) =>
        namesOf((await get(`${query}&sort=first_name`)).json().data.items)
      assert.deepEqual(await names('last_seen_after=2026-03-01T08:30:00Z'), [])
      assert.deepEqual(await names('last_seen_after=2026-03-01T08:29:59Z'), ['Ann Lee', 'ÉLODIE Durand'])
      assert.deepEqual(await names('last_seen_before=2026-01-01T00:00:00%2B00:00'), ['李 小龙'])
      assert.deepEqual(
        await names('last_seen_after=2026-01-01T00:00:00Z&last_seen_before=2026-02-28T00:00:00Z'),
        ['Ann Leeds', 'Zoë Ørsted'],
      )
      // Compared as instants: the API writes a whole second without its fraction (`…:00Z`), which
      // sorts after `…:00.500Z` as text.
      const instant = (c: ModelContact) => Date.parse(c.created_at)
      const earliest = all.reduce((a, b) => (instant(b) < instant(a) ? b : a))
      assert.equal(
        (await get(`created_after=${encodeURIComponent(earliest.created_at)}&size=100`)).json().data.total,
        all.filter((c) => instant(c) > instant(earliest)).length,
      )
      assert.equal((await get('updated_before=2000-01-01T00:00:00Z')).json().data.total, 0)
    })

    test('custom fields: equality by the declared type, numeric comparison for number fields', async () => {
      const names = async (query: string) =>
        namesOf((await get(`${query}&sort=first_name`)).json().data.items)
      assert.deepEqual(await names('custom_fields.plan=gold'), ['Zoë Ørsted', 'ann_% Wild\\card'])
      assert.deepEqual(await names('custom_fields.score=42'), ['Ann Leeds', 'Zoë Ørsted'])
      assert.deepEqual(await names('custom_fields.score[gt]=7.5'), [
        'Ann Leeds',
        'Zoë Ørsted',
        'ÉLODIE Durand',
      ])
      assert.deepEqual(await names('custom_fields.score[lte]=7.5'), ['Ann Lee', '李 小龙'])
      assert.deepEqual(await names('custom_fields.score[lt]=1e1&custom_fields.plan[neq]=silver'), ['李 小龙'])
      const wrongType = await get('custom_fields.score=lots')
      assert.equal(wrongType.statusCode, 422)
      assert.deepEqual(wrongType.json().detail[0].loc, ['query', 'custom_fields.score'])
    })

    test('user attributes and channels compare by JSON type', async () => {
      const names = async (payload: object) => namesOf(await everyPage({ ...payload, sort: 'first_name' }))
      assert.deepEqual(await names({ filter: { field: 'user_attributes.age', op: 'eq', value: 31 } }), [
        'Zoë Ørsted',
      ])
      assert.deepEqual(await names({ filter: { field: 'user_attributes.age', op: 'eq', value: '31' } }), [
        'Ann Lee',
      ])
      assert.deepEqual(await names({ filter: { field: 'user_attributes.age', op: 'gte', value: 31.5 } }), [
        '李 小龙',
      ])
      assert.deepEqual(await names({ filter: { field: 'user_attributes.vip', op: 'eq', value: true } }), [
        'Ann Leeds',
        'Zoë Ørsted',
      ])
      assert.deepEqual(await names({ filter: { field: 'user_attributes.tags', op: 'exists' } }), [
        'ÉLODIE Durand',
      ])
      assert.deepEqual(
        await names({ filter: { field: 'channels.instagram', op: 'starts_with', value: '@El' } }),
        ['ÉLODIE Durand'],
      )
      assert.deepEqual(namesOf((await get('user_attributes.city=oslo')).json().data.items), ['null null'])
    })

    test('every operator, and not / or / and nesting, agree with the reference model', async () => {
      const filters: Filter[] = [
        { field: 'first_name', op: 'eq', value: 'Ann' },
        { field: 'first_name', op: 'neq', value: 'Ann' },
        { field: 'first_name', op: 'in', value: ['Ann', '李', 'nobody'] },
        { field: 'first_name', op: 'nin', value: ['Ann', '李'] },
        { field: 'first_name', op: 'gt', value: 'Zo' },
        { field: 'last_name', op: 'lte', value: 'Lee' },
        { field: 'last_name', op: 'contains', value: 'ee' },
        { field: 'last_name', op: 'starts_with', value: 'Ø' },
        { field: 'email', op: 'contains', value: 'EXAMPLE.ORG' },
        { field: 'email', op: 'exists', value: false },
        { field: 'last_seen', op: 'gte', value: '2026-02-14T12:00:00Z' },
        { field: 'last_seen', op: 'in', value: ['2026-03-01T08:30:00Z', '2025-12-31T23:59:59.999Z'] },
        { field: 'phone', op: 'exists' },
        { field: 'phone', op: 'nin', value: ['+16501111234'] },
        { field: 'first_assistant_id', op: 'neq', value: ASSISTANT },
        { field: 'custom_fields.plan', op: 'in', value: ['gold', 'platinum'] },
        { field: 'custom_fields.plan', op: 'nin', value: ['gold'] },
        { field: 'custom_fields.score', op: 'lt', value: 42 },
        {
          not: {
            or: [
              { field: 'custom_fields.plan', op: 'eq', value: 'gold' },
              { field: 'email', op: 'exists' },
            ],
          },
        },
        {
          and: [
            { field: 'first_name', op: 'exists' },
            { not: { field: 'user_attributes.city', op: 'starts_with', value: 'O' } },
            {
              or: [
                { field: 'custom_fields.score', op: 'gt', value: 0 },
                { field: 'last_seen', op: 'exists', value: false },
              ],
            },
          ],
        },
      ]
      for (const filter of filters) {
        for (const sort of ['-created_at', 'first_name', '-last_seen,last_name', 'email,-id']) {
          const found = await everyPage({ filter, sort, limit: 2 })
          assert.deepEqual(
            found.map((c) => c.id),
            expected(filter, undefined, sort).map((c) => c.id),
            `${JSON.stringify(filter)} sorted by ${sort}`,
          )
        }
      }
    })

    test('empty values sort last in both directions, ties broken by id', async () => {
      for (const sort of [
        'last_seen',
        '-last_seen',
        'first_name,-last_seen',
        '-email',
        'external_id,-created_at',
      ]) {
        const response = await get(`sort=${sort}&size=100`)
        assert.equal(response.statusCode, 200, response.body)
        assert.deepEqual(
          response.json().data.items.map((c: ModelContact) => c.id),
          sortContacts(all, sort).map((c) => c.id),
          sort,
        )
      }
      const ascending = (await get('sort=last_seen&size=100')).json().data.items as ModelContact[]
      assert.deepEqual(
        ascending.slice(-2).map((c) => c.last_seen),
        [null, null],
      )
    })

    test('page and size keep their meaning and shape, with a cursor to continue', async () => {
      const page = (await get('page=2&size=3')).json().data
      assert.deepEqual(Object.keys(page).sort(), [
        'items',
        'next_cursor',
        'next_page',
        'page',
        'pages',
        'previous_page',
        'size',
        'total',
      ])
      assert.equal(page.total, PEOPLE.length)
      assert.equal(page.pages, 3)
      assert.deepEqual(
        page.items.map((c: ModelContact) => c.id),
        sortContacts(all)
          .slice(3, 6)
          .map((c) => c.id),
      )
      const next = (await get(`limit=3&cursor=${page.next_cursor}`)).json().data
      assert.deepEqual(
        next.items.map((c: ModelContact) => c.id),
        sortContacts(all)
          .slice(6)
          .map((c) => c.id),
      )
      assert.equal(next.next_cursor, null)
      assert.equal((await get('page=3&size=3')).json().data.next_cursor, null)
    })

    test('cursors are tamper-evident and bound to their query and organization', async () => {
      const first = (await get('limit=2&sort=first_name')).json().data
      assert.equal((await get(`limit=2&sort=first_name&cursor=${first.next_cursor}`)).statusCode, 200)
      const [payload, signature] = first.next_cursor.split('.')
      const forged = Buffer.from(
        Buffer.from(payload, 'base64url')
          .toString()
          .replace(/"[^"]*"\]\]$/, '"zzz"]]'),
      ).toString('base64url')
      for (const [query, why] of [
        [`limit=2&sort=first_name&cursor=${forged}.${signature}`, 'edited values'],
        [`limit=2&sort=first_name&cursor=${withEditedSignature(first.next_cursor)}`, 'edited signature'],
        [`limit=2&sort=last_name&cursor=${first.next_cursor}`, 'another sort'],
        [`limit=2&sort=first_name&q=ann&cursor=${first.next_cursor}`, 'another filter'],
        ['limit=2&cursor=garbage', 'garbage'],
      ]) {
        const response = await get(query as string)
        assert.equal(response.statusCode, 422, why)
        assert.equal(response.json().code, 'invalid_cursor', why)
        assert.deepEqual(response.json().detail[0].loc, ['query', 'cursor'])
      }
      const elsewhere = await get(`limit=2&sort=first_name&cursor=${first.next_cursor}`, other.key)
      assert.equal(elsewhere.json().code, 'invalid_cursor')
    })

    test('unknown or malformed filters are 422, never ignored', async () => {
      for (const [query, loc] of [
        ['nickname=x', ['query', 'nickname']],
        ['email=a&email=b', ['query', 'email']],
        ['created_after=yesterday', ['query', 'created_after']],
        ['first_widget_id=not-a-uuid', ['query', 'first_widget_id']],
        ['phone=call-me', ['query']],
        ['sort=shoe_size', ['query', 'sort']],
        ['sort=first_name,first_name', ['query', 'sort']],
        ['limit=1001', ['query', 'limit']],
        ['limit=0', ['query', 'limit']],
        ['page=1&limit=5', ['query', 'page']],
        ['q=a%00b', ['query', 'q']],
      ] as const) {
        const response = await get(query)
        assert.equal(response.statusCode, 422, `${query}: ${response.body}`)
        assert.deepEqual(response.json().detail[0].loc.slice(0, loc.length), loc, query)
      }
      for (const [filter, loc] of [
        [{ field: 'nickname', op: 'eq', value: 'x' }, ['body', 'filter']],
        [{ field: 'id', op: 'contains', value: 'x' }, ['body', 'filter']],
        [{ field: 'custom_fields.score', op: 'eq', value: 'many' }, ['body', 'filter']],
        [{ field: 'custom_fields.a"b', op: 'eq', value: 'x' }, ['body', 'filter']],
        [{ field: 'first_name', op: 'in', value: [] }, ['body', 'filter']],
        [{ field: 'first_name', op: 'eq', value: ['a'] }, ['body', 'filter']],
        [{ field: 'first_name', op: 'like', value: 'a' }, ['body', 'filter']],
        [{ field: 'user_attributes.vip', op: 'gt', value: true }, ['body', 'filter']],
        [{ and: [{ field: 'first_name', op: 'exists' }], or: [] }, ['body', 'filter']],
        [{ field: 'first_name', op: 'exists', extra: 1 }, ['body', 'filter', 'extra']],
      ] as const) {
        const response = await search({ filter })
        assert.equal(response.statusCode, 422, `${JSON.stringify(filter)}: ${response.body}`)
        assert.deepEqual(response.json().detail[0].loc.slice(0, loc.length), loc, JSON.stringify(filter))
      }
    })

    test('filters are bounded in depth and size', async () => {
      let deep: Filter = { field: 'first_name', op: 'exists' }
      for (let level = 0; level < 8; level += 1) deep = { not: deep }
      assert.equal((await search({ filter: deep })).statusCode, 422)
      const wide: Filter = {
        or: Array.from({ length: 101 }, () => ({ field: 'first_name', op: 'exists' as const })),
      }
      assert.equal((await search({ filter: wide })).statusCode, 422)
      // Nested far deeper than any call stack: still a 422, not a crash.
      for (const levels of [5_000, 50_000]) {
        const body = `{"filter":${'{"not":'.repeat(levels)}{"field":"first_name","op":"exists"}${'}'.repeat(levels)}}`
        const response = await t.call(org.key, {
          method: 'POST',
          url: '/api/v1/contact/search',
          payload: body,
          headers: { 'content-type': 'application/json' },
        })
        assert.equal(response.statusCode, 422, `${levels} levels: ${response.body.slice(0, 200)}`)
      }
      const fine: Filter = {
        or: Array.from({ length: 100 }, () => ({ field: 'first_name', op: 'exists' as const })),
      }
      assert.equal((await search({ filter: fine })).statusCode, 200)
    })

    test('a search sees a write at once, and never another organization', async () => {
      const created = await t.call(org.key, {
        method: 'POST',
        url: '/api/v1/contact',
        payload: { first_name: 'Freshly', email: 'fresh@example.net' },
      })
      const id = created.json().data.id
      assert.deepEqual(namesOf((await get('q=freshly')).json().data.items), ['Freshly null'])
      await t.call(org.key, {
        method: 'PATCH',
        url: `/api/v1/contact/${id}`,
        payload: { first_name: 'Renamed' },
      })
      assert.deepEqual((await get('q=freshly')).json().data.items, [])
      assert.deepEqual(namesOf((await get('q=renamed')).json().data.items), ['Renamed null'])
      await t.call(org.key, { method: 'DELETE', url: `/api/v1/contact/${id}` })
      assert.deepEqual((await get('q=renamed')).json().data.items, [])
      // The other organization holds copies of three of these people; none shows up here.
      const mine = new Set(all.map((c) => c.id))
      for (const c of await everyPage({ limit: 1 })) assert.ok(mine.has(c.id))
      assert.equal((await everyPage({ q: 'zoë' }, other.key)).length, 1)
    })
  })
}

describe('cursor paging on the other lists', () => {
  for (const backend of BACKENDS) {
    test(`the trash and the custom field definitions page by cursor on ${backend.name}`, {
      skip: backend.skip,
    }, async () => {
      const t = await startTestApp(backend)
      try {
        const org = await t.createOrg()
        const other = await t.createOrg()
        for (let i = 0; i < 7; i += 1) {
          const id = (
            await t.call(org.key, {
              method: 'POST',
              url: '/api/v1/contact',
              payload: { first_name: `gone ${i}` },
            })
          ).json().data.id
          await t.call(org.key, { method: 'DELETE', url: `/api/v1/contact/${id}` })
          await t.call(org.key, {
            method: 'POST',
            url: '/api/v1/contact_custom_field',
            payload: { custom_field_name: `field_${i}`, custom_field_type: 'string' },
          })
        }
        for (const [path, key] of [
          ['/api/v1/contact/trash', 'first_name'],
          ['/api/v1/contact_custom_field/list', 'custom_field_name'],
        ] as const) {
          const everything = (await t.call(org.key, { method: 'GET', url: `${path}?size=100` })).json().data
          assert.equal(everything.total, 7)
          assert.equal(everything.next_cursor, null)
          const seen: string[] = []
          let cursor: string | null = null
          do {
            const query: string = `limit=3${cursor ? `&cursor=${cursor}` : ''}`
            const response = await t.call(org.key, { method: 'GET', url: `${path}?${query}` })
            assert.equal(response.statusCode, 200, response.body)
            const data = response.json().data
            assert.deepEqual(Object.keys(data).sort(), ['items', 'limit', 'next_cursor'])
            seen.push(...data.items.map((item: Record<string, string>) => item[key]))
            cursor = data.next_cursor
          } while (cursor)
          assert.deepEqual(
            seen,
            everything.items.map((item: Record<string, string>) => item[key]),
            path,
          )
          // A page answer continues by cursor from its last item.
          const firstPage = (await t.call(org.key, { method: 'GET', url: `${path}?size=2` })).json().data
          const rest = (
            await t.call(org.key, { method: 'GET', url: `${path}?limit=100&cursor=${firstPage.next_cursor}` })
          ).json().data
          assert.equal(rest.items.length, 5, path)
          // Bound to the list and the organization, and tamper-evident.
          const mine = (await t.call(org.key, { method: 'GET', url: `${path}?limit=1` })).json().data
            .next_cursor
          const otherPath = path.includes('trash')
            ? '/api/v1/contact_custom_field/list'
            : '/api/v1/contact/trash'
          for (const [url, caller] of [
            [`${otherPath}?limit=1&cursor=${mine}`, org.key],
            [`${path}?limit=1&cursor=${mine}`, other.key],
            [`${path}?limit=1&cursor=${withEditedSignature(mine)}`, org.key],
            [`${path}?page=1&cursor=${mine}`, org.key],
          ] as const) {
            const response = await t.call(caller, { method: 'GET', url })
            assert.equal(response.statusCode, 422, url)
          }
        }
      } finally {
        await t.close()
      }
    })
  }
})

describe('cursor paging under concurrent writes', () => {
  for (const backend of BACKENDS) {
    test(`visits every contact that exists throughout exactly once on ${backend.name}`, {
      skip: backend.skip,
    }, async () => {
      const t = await startTestApp(backend)
      try {
        const org = await t.createOrg()
        const create = async (first_name: string) =>
          (await t.call(org.key, { method: 'POST', url: '/api/v1/contact', payload: { first_name } })).json()
            .data.id as string
        const stable: string[] = []
        const doomed: string[] = []
        for (let i = 0; i < 60; i += 1) stable.push(await create(`stable ${i}`))
        for (let i = 0; i < 30; i += 1) doomed.push(await create(`doomed ${i}`))
        for (const sort of ['-created_at', 'first_name']) {
          const seen: string[] = []
          let cursor: string | null = null
          let round = 0
          do {
            const query: string = `limit=7&sort=${sort}${cursor ? `&cursor=${cursor}` : ''}`
            const page = (await t.call(org.key, { method: 'GET', url: `/api/v1/contact?${query}` })).json()
              .data
            seen.push(...page.items.map((c: { id: string }) => c.id))
            cursor = page.next_cursor
            // Between pages: new contacts arrive and others are deleted.
            await create(`newcomer ${sort} ${round}`)
            const victim = doomed.pop()
            if (victim) await t.call(org.key, { method: 'DELETE', url: `/api/v1/contact/${victim}` })
            round += 1
          } while (cursor)
          assert.equal(new Set(seen).size, seen.length, 'no contact twice')
          const seenSet = new Set(seen)
          for (const id of stable) assert.ok(seenSet.has(id), `stable contact ${id} missed (sort ${sort})`)
          for (let i = 0; i < 30; i += 1) doomed.push(await create(`doomed again ${i}`))
        }
      } finally {
        await t.close()
      }
    })
  }
})

describe('differential: random filters agree on SQLite, PostgreSQL and the reference model', () => {
  const runs = Number(process.env.FUZZ_RUNS ?? 150)
  const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 2 ** 31)

  test(`${runs} random searches (FUZZ_SEED=${seed})`, async () => {
    const apps = await Promise.all(BACKENDS.filter((b) => !b.skip).map((b) => startTestApp(b)))
    try {
      const orgs = await Promise.all(apps.map((app) => app.createOrg()))
      for (const [index, app] of apps.entries()) {
        const key = (orgs[index] as TestOrg).key
        for (const [name, type] of [
          ['plan', 'string'],
          ['score', 'number'],
        ]) {
          await app.call(key, {
            method: 'POST',
            url: '/api/v1/contact_custom_field',
            payload: { custom_field_name: name, custom_field_type: type },
          })
        }
        for (const person of PEOPLE) {
          await app.call(key, { method: 'POST', url: '/api/v1/contact', payload: person })
          // Distinct creation times, so that the default order is the same on every backend.
          await sleep(2)
        }
      }
      // Contacts differ by id and time between backends; the model runs over each backend's own.
      const stored = await Promise.all(
        apps.map(async (app, index) => {
          const response = await app.call((orgs[index] as TestOrg).key, {
            method: 'GET',
            url: '/api/v1/contact?size=100',
          })
          return response.json().data.items as ModelContact[]
        }),
      )
      const names = ['Zoë', 'Ann', 'ann_%', 'ÉLODIE', '李', 'Lee', 'Ørsted', 'Leeds', 'Durand', '小龙']
      const textField = fc.constantFrom('first_name', 'last_name', 'email', 'external_id')
      const text = fc.oneof(
        fc.constantFrom(...names, 'example', 'crm-', 'ann@example.org', 'e', 'Ø'),
        fc.string({ maxLength: 3 }),
      )
      const condition = fc.oneof(
        fc.record({
          field: textField,
          op: fc.constantFrom('eq', 'neq', 'gt', 'gte', 'lt', 'lte', 'contains', 'starts_with'),
          value: text,
        }),
        fc.record({
          field: textField,
          op: fc.constantFrom('in', 'nin'),
          value: fc.array(text, { minLength: 1, maxLength: 3 }),
        }),
        fc.record({
          field: fc.constantFrom(
            'first_name',
            'email',
            'last_seen',
            'phone',
            'first_assistant_id',
            'custom_fields.plan',
            'user_attributes.vip',
          ),
          op: fc.constant('exists'),
          value: fc.boolean(),
        }),
        fc.record({
          field: fc.constant('custom_fields.score'),
          op: fc.constantFrom('eq', 'neq', 'gt', 'gte', 'lt', 'lte'),
          value: fc.constantFrom(-3, 0, 7.5, 42, 100, 101),
        }),
        fc.record({
          field: fc.constantFrom('custom_fields.plan', 'user_attributes.city'),
          op: fc.constantFrom('eq', 'neq', 'contains', 'starts_with', 'gt', 'lt'),
          value: fc.constantFrom('gold', 'Gold', 'silver', 'O', 'oslo', 'Paris', 'pl'),
        }),
        fc.record({
          field: fc.constant('user_attributes.age'),
          op: fc.constantFrom('eq', 'gt', 'lte'),
          value: fc.oneof(fc.constantFrom(31, 32, 31.5), fc.constant('31')),
        }),
        fc.record({
          field: fc.constant('last_seen'),
          op: fc.constantFrom('eq', 'gt', 'lt', 'gte'),
          value: fc.constantFrom('2026-01-05T10:00:00Z', '2026-03-01T08:30:00Z', '2026-02-01T00:00:00+01:00'),
        }),
        fc.record({
          field: fc.constant('phone'),
          op: fc.constantFrom('eq', 'neq'),
          value: fc.constantFrom('+16501111234', '16501111235', '+44 20 7946 0958'),
        }),
        fc.record({
          field: fc.constant('first_assistant_id'),
          op: fc.constantFrom('eq', 'neq'),
          value: fc.constantFrom(ASSISTANT, OTHER_ASSISTANT),
        }),
      ) as fc.Arbitrary<Filter>
      const filter: fc.Arbitrary<Filter> = fc.letrec<{ node: Filter }>((tie) => ({
        node: fc.oneof(
          { depthSize: 'small', withCrossShrink: true, maxDepth: 6 },
          condition,
          fc.record({ and: fc.array(tie('node'), { minLength: 1, maxLength: 3 }) }),
          fc.record({ or: fc.array(tie('node'), { minLength: 1, maxLength: 3 }) }),
          fc.record({ not: tie('node') }),
        ),
      })).node
      const sort = fc.constantFrom(
        '-created_at',
        'first_name',
        '-last_seen,email',
        'last_name,-first_name',
        'external_id',
      )
      const q = fc.option(fc.constantFrom('ann', 'LEE', 'é', '1650', '_', '%', 'example.'), {
        nil: undefined,
      })
      await fc.assert(
        fc.asyncProperty(
          fc.option(filter, { nil: undefined }),
          q,
          sort,
          fc.integer({ min: 1, max: 4 }),
          async (f, text, order, limit) => {
            const answers = await Promise.all(
              apps.map(async (app, index) => {
                const key = (orgs[index] as TestOrg).key
                const ids: string[] = []
                let cursor: string | undefined
                do {
                  const payload = { filter: f, q: text, sort: order, limit, ...(cursor ? { cursor } : {}) }
                  const response = await app.call(key, {
                    method: 'POST',
                    url: '/api/v1/contact/search',
                    payload,
                  })
                  assert.equal(response.statusCode, 200, response.body)
                  const data = response.json().data
                  ids.push(...data.items.map((c: ModelContact) => c.external_id ?? c.first_name ?? c.email))
                  cursor = data.next_cursor ?? undefined
                } while (cursor)
                const model = sortContacts(
                  (stored[index] as ModelContact[]).filter(
                    (c) => (!f || matchesFilter(c, f)) && (text === undefined || matchesText(c, text)),
                  ),
                  order,
                ).map((c) => c.external_id ?? c.first_name ?? c.email)
                assert.deepEqual(ids, model, `${apps[index]?.database.dialect}: API vs model`)
                return ids
              }),
            )
            // Same people, same order, whatever the backend (ids differ, so compare by who).
            for (const answer of answers.slice(1)) assert.deepEqual(answer, answers[0])
          },
        ),
        { numRuns: runs, seed },
      )
    } finally {
      await Promise.all(apps.map((app) => app.close()))
    }
  })
})

/**
 * A scratch database migrated up to `migration` (inclusive), with one organization and a
 * principal of it, for a test of a later migration on the data it finds.
 */
async function withDatabaseAt(
  kind: 'sqlite' | 'postgres',
  migration: string,
  test: (handle: ReturnType<typeof openDatabase>, orgId: string, principal: Principal) => Promise<void>,
) {
  const scratch = await scratchDatabase(kind)
  const handle = openDatabase(scratch.url)
  try {
    await migrateTo(handle, migration)
    const org = await createOrganization(handle.db, `before-${migration}`)
    await test(handle, org.id, { orgId: org.id, actorType: 'user', actorId: 'tester', role: 'full_access' })
  } finally {
    await handle.close()
    await scratch.drop()
  }
}

/**
 * Four people written through the service on SQLite, for the tests of the text index's
 * migrations: their ids, a `q` search answered as a set, and queries with what each must find.
 */
async function fourIndexedPeople(
  handle: ReturnType<typeof openDatabase>,
  orgId: string,
  principal: Principal,
) {
  const people = [
    { first_name: 'Zoë', last_name: 'Ørsted', email: 'zoe.orsted@example.com' },
    { first_name: 'Ann', last_name: 'Lee', channels: { whatsapp: '+44 20 7946 0958' } },
    { first_name: 'Annabel', last_name: 'Leeds', email: 'annabel@example.org' },
    { first_name: 'Grace', last_name: 'Hopper', email: 'grace"quote@example.net' },
  ]
  const ids: string[] = []
  for (const person of people) ids.push((await createContact(handle.db, principal, person)).id)
  const engine = { db: handle.db, dialect: 'sqlite' as const, cursors: cursorCodecOnce(handle.db) }
  // As sets: what each query finds, whatever the order.
  const found = async (q: string) =>
    (await searchContacts(engine, orgId, { q })).items.map((c) => c.id).sort()
  const idsOf = (...people: number[]) => people.map((person) => ids[person] as string).sort()
  const queries = ['ann', 'Lee', 'zoë ør', '7946 09', 'example.', 'ace"quo', 'nobody']
  const expected = [idsOf(1, 2), idsOf(1, 2), idsOf(0), idsOf(1), idsOf(0, 2, 3), idsOf(3), []]
  return { ids, found, idsOf, queries, expected }
}

/** How SQLite's trigram index is declared. */
async function textIndexDefinition(handle: ReturnType<typeof openDatabase>): Promise<string> {
  const { rows } = await sql<{
    sql: string
  }>`select sql from sqlite_master where name = 'contact_search_fts'`.execute(handle.db)
  return rows[0]?.sql ?? ''
}

describe('the SQLite text index without positions (migration 013)', () => {
  test('a database indexed before it finds the same contacts by q after it, and keeps up with writes', async () => {
    await withDatabaseAt(
      'sqlite',
      '2026-11-28-012-delivery-queue-position',
      async (handle, orgId, principal) => {
        const { ids, found, idsOf, queries, expected } = await fourIndexedPeople(handle, orgId, principal)
        const before = await Promise.all(queries.map(found))
        assert.deepEqual(before, expected)

        await migrateToLatest(handle)
        assert.deepEqual(await Promise.all(queries.map(found)), before)
        assert.match(await textIndexDefinition(handle), /detail = 'none'/)

        // The rebuilt index follows later writes: a new contact, and a renamed one under its new name only.
        const later = await createContact(handle.db, principal, {
          first_name: 'Annika',
          email: 'annika@example.com',
        })
        await updateContact(handle.db, principal, ids[1] as string, { first_name: 'Bob', last_name: 'Stone' })
        assert.deepEqual(await found('ann'), [ids[2], later.id].sort())
        assert.deepEqual(await found('b ston'), idsOf(1))
      },
    )
  })
})

describe('the SQLite text index without a copy of the text (migration 018)', () => {
  test('a database indexed before it finds the same contacts by q after it, and its index follows every write', async () => {
    await withDatabaseAt('sqlite', '2026-12-03-017-webhook-fields', async (handle, orgId, principal) => {
      const { ids, found, idsOf, queries, expected } = await fourIndexedPeople(handle, orgId, principal)
      // What the index itself proposes, before the exact test of each contact's own text: an entry
      // left behind by a write would show here, though a search would never return it.
      const proposed = async (trigrams: string) =>
        (
          await sql<{ contact_id: string }>`select s.contact_id from contact_search as s
            where s.rowid in (select rowid from contact_search_fts where contact_search_fts match ${trigrams})`.execute(
            handle.db,
          )
        ).rows
          .map((row) => row.contact_id)
          .sort()
      const before = await Promise.all(queries.map(found))
      assert.deepEqual(before, expected)

      await migrateToLatest(handle)
      assert.deepEqual(await Promise.all(queries.map(found)), before)
      assert.deepEqual(await proposed('"ann"'), idsOf(1, 2))
      assert.match(await textIndexDefinition(handle), /content = ''/)
      const columns = await sql<{
        name: string
      }>`select name from pragma_table_info('contact_search')`.execute(handle.db)
      assert.ok(!columns.rows.some((column) => column.name === 'document'))

      // A new contact, a renamed one (under its new name only), a trashed one (still indexed: the
      // search leaves the trash out by its own test) and an erased one (gone from the index).
      const later = await createContact(handle.db, principal, {
        first_name: 'Annika',
        email: 'annika@example.com',
      })
      await updateContact(handle.db, principal, ids[1] as string, { first_name: 'Bob', last_name: 'Stone' })
      assert.deepEqual(await found('ann'), [ids[2] as string, later.id].sort())
      assert.deepEqual(await proposed('"ann"'), [ids[2] as string, later.id].sort())
      assert.deepEqual(await found('b ston'), idsOf(1))
      await deleteContact(handle.db, principal, ids[2] as string)
      assert.deepEqual(await found('ann'), [later.id])
      assert.deepEqual(await proposed('"ann"'), [ids[2] as string, later.id].sort())
      await eraseContact(handle.db, principal, later.id)
      assert.deepEqual(await proposed('"ann"'), [ids[2] as string])
      assert.deepEqual(await found('annika'), [])
    })
  })
})

describe('times written with microseconds by other SQL (migration 015)', {
  skip: BACKENDS.find((b) => b.name === 'postgres')?.skip ?? false,
}, () => {
  test('paging by cursor visits every contact once, and every time column keeps milliseconds', async () => {
    await withDatabaseAt('postgres', '2026-11-28-014-due-index-for-claims-only', async (handle, orgId) => {
      // Written straight to the table, as the service of migration 014 stored them: the service
      // of today may need what later migrations add.
      const ids: string[] = []
      for (let i = 0; i < 6; i++)
        ids.push((await insertContact(handle.db, newContactRow(orgId, { first_name: `M${i}` }))).id)
      // Six times within one millisecond, as now() or an import by hand would write them.
      const micros = ['000', '100', '456', '499', '501', '999']
      for (const [i, id] of ids.entries())
        await sql`update contacts set created_at = ${`2026-01-01T00:00:00.123${micros[i]}Z`}::timestamptz
          where org_id = ${orgId} and id = ${id}`.execute(handle.db)

      await migrateToLatest(handle)
      const engine = { db: handle.db, dialect: 'postgres' as const, cursors: cursorCodecOnce(handle.db) }
      const seen: string[] = []
      let cursor: string | undefined
      do {
        const page = await searchContacts(engine, orgId, { limit: 1, ...(cursor ? { cursor } : {}) })
        seen.push(...page.items.map((c) => c.id))
        cursor = page.next_cursor ?? undefined
      } while (cursor)
      assert.deepEqual([...seen].sort(), [...ids].sort())

      // Stored to the millisecond from now on, rounded: .123501 is .124.
      const { rows } = await sql<{ created_at: string }>`select created_at from contacts
        where org_id = ${orgId} order by created_at, id`.execute(handle.db)
      assert.deepEqual(
        rows.map((r) => r.created_at),
        [...Array(4).fill('2026-01-01T00:00:00.123Z'), ...Array(2).fill('2026-01-01T00:00:00.124Z')],
      )
      const { rows: wider } = await sql<{ column: string }>`
        select table_name || '.' || column_name as column from information_schema.columns
        where table_schema = current_schema() and data_type = 'timestamp with time zone'
          and datetime_precision <> 3`.execute(handle.db)
      assert.deepEqual(wider, [], 'every time column is timestamptz(3); a new one must be declared so')
    })
  })
})
