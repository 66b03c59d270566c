import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { after, before, describe, test } from 'node:test'
import fc from 'fast-check'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

/**
 * Property-based fuzzing of the HTTP API: generated paths, query strings, headers, content types
 * and bodies for every route. For each request: never a 5xx, always a JSON error of the contract's
 * shape, and a rejected request leaves every table as it was. The seed is printed, and
 * FUZZ_SEED=<seed> replays a run; FUZZ_RUNS sets the requests per route.
 */
const SEED = Number(process.env.FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 31))
const RUNS = Number(process.env.FUZZ_RUNS ?? 1000)
process.stdout.write(`# fuzz seed ${SEED} (replay with FUZZ_SEED=${SEED}), ${RUNS} requests per route\n`)

// Every table that holds data a request can change. Bookkeeping is left out: an API key's
// last_used_at, and the answers remembered for Idempotency-Key (rejections included, by design).
const TABLES = [
  'contacts',
  'contact_identities',
  'contact_merges',
  'contact_custom_fields',
  'organizations',
] as const

const fieldValue = fc.oneof(
  fc.string({ maxLength: 40 }),
  fc.integer(),
  fc.double(),
  fc.boolean(),
  fc.constant(null),
  fc.constantFrom(
    '2023-11-07T05:31:56Z',
    '2023-02-30T00:00:00Z',
    '3c90c3cc-0d44-4b50-8888-8dd25736052a',
    '',
    '+16501111234',
  ),
  fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 3 }), { maxKeys: 5 }),
  fc.array(fc.jsonValue({ maxDepth: 2 }), { maxLength: 4 }),
)
const CONTACT_FIELDS = [
  'first_name',
  'last_name',
  'email',
  'channels',
  'user_attributes',
  'custom_fields',
  'last_seen',
  'last_sent',
  'org_id',
  'first_assistant_id',
  'last_widget_id',
  'external_id',
  'phone_number',
  'contact_ids',
  'contacts',
  'primary_id',
  'duplicate_ids',
  'custom_field_name',
  'custom_field_type',
  '__proto__',
  'constructor',
]
const contactLike = fc.dictionary(fc.constantFrom(...CONTACT_FIELDS), fieldValue, { maxKeys: 6 })

const filterLike = fc.letrec<{ node: unknown }>((tie) => ({
  node: fc.oneof(
    { depthSize: 'small' },
    fc.record(
      {
        field: fc.constantFrom(
          'first_name',
          'email',
          'phone',
          'id',
          'last_seen',
          'custom_fields.x',
          'user_attributes."',
          'nope',
        ),
        op: fc.constantFrom(
          'eq',
          'neq',
          'in',
          'nin',
          'gt',
          'lte',
          'contains',
          'starts_with',
          'exists',
          'like',
        ),
        value: fc.oneof(fieldValue, fc.array(fieldValue, { maxLength: 3 })),
      },
      { requiredKeys: [] },
    ),
    fc.record({ and: fc.array(tie('node'), { maxLength: 3 }) }),
    fc.record({ or: fc.array(tie('node'), { maxLength: 3 }) }),
    fc.record({ not: tie('node') }),
  ),
})).node
const searchLike = fc.record(
  {
    filter: filterLike,
    q: fc.string({ maxLength: 10 }),
    sort: fc.constantFrom('-created_at', 'first_name,-id', 'nope', '', '-last_seen,email'),
    limit: fc.oneof(fc.integer({ min: -1, max: 1001 }), fc.string({ maxLength: 3 })),
    cursor: fc.string({ maxLength: 30 }),
  },
  { requiredKeys: [] },
)

/** Bodies nested far deeper than any call stack, in each place that holds objects. */
const abyss = fc
  .tuple(
    fc.integer({ min: 50, max: 20_000 }),
    fc.constantFrom('channels', 'user_attributes', 'custom_fields', 'filter', 'contacts', 'not'),
  )
  .map(([levels, key]) => `{"${key}":${'{"not":'.repeat(levels)}1${'}'.repeat(levels)}}`)

const body = fc.oneof(
  contactLike.map((value) => JSON.stringify(value)),
  abyss,
  searchLike.map((value) => JSON.stringify(value)),
  fc.jsonValue({ maxDepth: 4 }).map((value) => JSON.stringify(value)),
  fc.string({ maxLength: 60 }),
  fc.constantFrom('', '{', '{"first_name":', 'null', '[]', '{"a":1}}', '\u0000', '{"__proto__":{"x":1}}'),
)

const contentType = fc.constantFrom(
  'application/json',
  'application/json; charset=utf-8',
  'application/merge-patch+json',
  'text/plain',
  'application/x-www-form-urlencoded',
  'multipart/form-data; boundary=x',
  'application/xml',
  'garbage/;;',
  undefined,
)

const queryString = fc
  .dictionary(
    fc.constantFrom(
      'page',
      'size',
      'email',
      'phone_number',
      'first_name',
      'external_id',
      'q',
      'x',
      'api_key',
      'sort',
      'limit',
      'cursor',
      'phone',
      'created_after',
      'first_widget_id',
      'custom_fields.plan',
      'custom_fields.score[gt]',
      'user_attributes.a"b',
    ),
    fc.oneof(
      fc.string({ maxLength: 20 }),
      fc.integer().map(String),
      fc.constantFrom('-1', '0', '101', '1e3', ''),
    ),
    { maxKeys: 4 },
  )
  .map((query) => new URLSearchParams(query).toString())

for (const backend of BACKENDS) {
  describe(`fuzzing the HTTP API on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    let known: string

    before(async () => {
      t = await startTestApp(backend)
      org = await t.createOrg()
      const created = await t.call(org.key, {
        method: 'POST',
        url: '/api/v1/contact',
        payload: { first_name: 'Known', email: 'known@example.com' },
      })
      known = created.json().data.id
    })
    after(() => t?.close())

    const snapshot = async () => {
      const hash = createHash('sha256')
      for (const table of TABLES)
        hash.update(JSON.stringify(await t.database.db.selectFrom(table).selectAll().execute()))
      return hash.digest('hex')
    }

    const pathId = () =>
      fc.oneof(
        fc.constant(known),
        fc.uuid(),
        fc.string({ maxLength: 30 }).map((s) => encodeURIComponent(s)),
        fc.constantFrom('list', 'multiple', 'trash', '..', '%00', 'x'.repeat(300)),
      )

    const ROUTES: [string, string, fc.Arbitrary<string>][] = [
      ['GET', 'contact list', fc.constant('/api/v1/contact')],
      ['GET', 'older list', fc.constant('/api/v1/contact/list')],
      ['POST', 'create', fc.constant('/api/v1/contact')],
      ['GET', 'get by id', pathId().map((id) => `/api/v1/contact/${id}`)],
      ['PUT', 'update', pathId().map((id) => `/api/v1/contact/${id}`)],
      ['PATCH', 'merge-patch', pathId().map((id) => `/api/v1/contact/${id}`)],
      ['DELETE', 'delete', pathId().map((id) => `/api/v1/contact/${id}`)],
      ['DELETE', 'bulk delete', fc.constant('/api/v1/contact/multiple')],
      ['POST', 'upsert', fc.constant('/api/v1/contact/upsert')],
      ['POST', 'search', fc.constant('/api/v1/contact/search')],
      ['POST', 'batch upsert', fc.constant('/api/v1/contact/batch/upsert')],
      ['POST', 'merge', fc.constant('/api/v1/contact/merge')],
      ['GET', 'duplicates', pathId().map((id) => `/api/v1/contact/${id}/duplicates`)],
      ['POST', 'restore', pathId().map((id) => `/api/v1/contact/${id}/restore`)],
      ['POST', 'erase', pathId().map((id) => `/api/v1/contact/${id}/erase`)],
      ['GET', 'trash', fc.constant('/api/v1/contact/trash')],
      ['POST', 'define custom field', fc.constant('/api/v1/contact_custom_field')],
      ['GET', 'custom fields', fc.constant('/api/v1/contact_custom_field/list')],
      ['DELETE', 'delete custom field', pathId().map((id) => `/api/v1/contact_custom_field/${id}`)],
    ]

    // The state after the last request when it was rejected (unchanged, as asserted), so the next
    // request needs no snapshot of its own before it; unknown after a success.
    let current: string | undefined

    for (const [method, name, path] of ROUTES) {
      test(`${method} ${name}: no 5xx, errors in the contract's shape, rejected requests change nothing`, async () => {
        await fc.assert(
          fc.asyncProperty(
            path,
            queryString,
            contentType,
            body,
            fc.option(fc.constantFrom('"1"', '*', 'W/"1"', 'garbage'), { nil: undefined }),
            fc.option(fc.string({ minLength: 0, maxLength: 300 }), { nil: undefined }),
            async (url, query, type, payload, ifMatch, idempotencyKey) => {
              const headers: Record<string, string> = { 'x-api-key': org.key }
              if (type) headers['content-type'] = type
              if (ifMatch) headers['if-match'] = ifMatch
              if (idempotencyKey !== undefined) headers['idempotency-key'] = idempotencyKey
              const before = current ?? (await snapshot())
              const response = await t.app.inject({
                method: method as 'GET',
                url: query ? `${url}?${query}` : url,
                headers,
                ...(method === 'GET' ? {} : { payload }),
              })
              assert.ok(response.statusCode < 500, `${response.statusCode} ${response.body}`)
              if (response.statusCode >= 400) {
                const error = response.json()
                if (Array.isArray(error.detail)) {
                  for (const issue of error.detail) {
                    assert.ok(
                      Array.isArray(issue.loc) &&
                        typeof issue.msg === 'string' &&
                        typeof issue.type === 'string',
                    )
                  }
                } else assert.equal(typeof error.detail, 'string', response.body)
                current = await snapshot()
                assert.equal(current, before, 'a rejected request changed the database')
              } else {
                current = undefined
              }
            },
          ),
          { numRuns: RUNS, seed: SEED, endOnFailure: true },
        )
      })
    }
  })
}
