/**
 * npm run bench:search [-- --contacts 1000000] [-- --backend sqlite|postgres]
 *
 * Search at the scale of a large organization: seeds one organization with (by default) a
 * million contacts, starts the real server on it, and measures, one request at a time after a
 * warm-up, the latency of an email lookup, a `q` search, a custom field filter, and cursor page 1
 * against cursor page 10,000. Prints the seeding rate, a Markdown table, and each query's plan;
 * writes them to .bench/ (git-ignored).
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { type CompiledQuery, type Kysely, sql } from 'kysely'
import { createApiKey } from '../src/api-keys/api-keys.service.js'
import { explainableSearch, type Search, searchKey } from '../src/contacts/search.service.js'
import { withSearchColumns } from '../src/contacts/search-document.js'
import { type DatabaseHandle, openDatabase } from '../src/db/database.js'
import { migrateToLatest } from '../src/db/migrations.js'
import type { Database } from '../src/db/schema.js'
import { createOrganization } from '../src/organizations/organizations.service.js'
import { cursorCodec, loadCursorSecret } from '../src/shared/cursor.js'
import { scratchDatabase } from '../test/helpers/scratch-database.js'
import { startServer } from './server-process.js'

const { values } = parseArgs({
  options: {
    contacts: { type: 'string', default: '1000000' },
    backend: { type: 'string', multiple: true },
    samples: { type: 'string', default: '40' },
  },
})
const CONTACTS = Number(values.contacts)
const SAMPLES = Number(values.samples)
const BACKENDS = (values.backend?.length ? values.backend : ['sqlite', 'postgres']) as (
  | 'sqlite'
  | 'postgres'
)[]
const OUT = fileURLToPath(new URL('../../.bench/', import.meta.url))
const PAGE = 50

const idOf = (n: number) => `00000000-0000-7000-8000-${n.toString(16).padStart(12, '0')}`
/** One contact a second, so that the default order (newest first) is the reverse of n. */
const EPOCH = Date.UTC(2024, 0, 1)
const createdAtOf = (n: number) => new Date(EPOCH + n * 1000).toISOString()
const PLANS = ['free', 'pro', 'team']

async function seed(handle: DatabaseHandle) {
  const { db } = handle
  const org = await createOrganization(db, 'search-bench')
  const { key } = await createApiKey(db, { orgId: org.id, name: 'bench', role: 'read_only' })
  // A bulk load builds the text and JSON indexes once at the end rather than row by row, as
  // one would load a large organization in production; their build time counts in the rate.
  const deferred =
    handle.dialect === 'postgres'
      ? (
          await sql<{ name: string; definition: string }>`
          select indexname as name, indexdef as definition from pg_indexes
          where schemaname = current_schema() and tablename = 'contacts' and indexdef like '%USING gin%'`.execute(
            db,
          )
        ).rows
      : []
  for (const index of deferred) await sql`drop index ${sql.id(index.name)}`.execute(db)
  const started = Date.now()
  const perStatement = 400
  const perTransaction = handle.dialect === 'sqlite' ? 20_000 : 4_000
  for (let from = 0; from < CONTACTS; from += perTransaction) {
    await db.transaction().execute(async (trx) => {
      const to = Math.min(from + perTransaction, CONTACTS)
      for (let start = from; start < to; start += perStatement) {
        const numbers = Array.from({ length: Math.min(perStatement, to - start) }, (_, i) => start + i)
        const rows = numbers.map((n) =>
          withSearchColumns({
            org_id: org.id,
            id: idOf(n),
            first_name: `First${n}`,
            last_name: `Last${n}`,
            email: `c${n}@bench.example`,
            email_normalized: `c${n}@bench.example`,
            channels: JSON.stringify({ whatsapp: `+1555${String(n).padStart(7, '0')}` }),
            user_attributes: JSON.stringify({ visits: n % 17 }),
            // One contact in a thousand is on the rare plan the filter looks for.
            custom_fields: JSON.stringify({ plan: n % 1000 === 0 ? 'enterprise' : PLANS[n % 3] }),
            created_at: createdAtOf(n),
            updated_at: createdAtOf(n),
          }),
        )
        await trx.insertInto('contacts').values(rows).execute()
        await trx
          .insertInto('contact_identities')
          .values(
            numbers.flatMap((n) => [
              {
                org_id: org.id,
                kind: 'email' as const,
                value: `c${n}@bench.example`,
                contact_id: idOf(n),
                origin: 'field' as const,
              },
              {
                org_id: org.id,
                kind: 'phone' as const,
                value: `+1555${String(n).padStart(7, '0')}`,
                contact_id: idOf(n),
                origin: 'field' as const,
              },
            ]),
          )
          .execute()
      }
    })
  }
  for (const index of deferred) await sql.raw(index.definition).execute(db)
  const seconds = (Date.now() - started) / 1000
  await sql`analyze`.execute(db)
  return { orgId: org.id, key, rowsPerSecond: Math.round(CONTACTS / seconds), seedSeconds: seconds }
}

async function explain(handle: DatabaseHandle, compiled: CompiledQuery): Promise<string> {
  const db = handle.db as Kysely<Database>
  const prefix =
    handle.dialect === 'postgres'
      ? 'explain (analyze, costs off, timing off, summary off) '
      : 'explain query plan '
  const result = await db.executeQuery<Record<string, unknown>>({
    ...compiled,
    sql: prefix + compiled.sql,
  })
  return result.rows
    .map((row) => (handle.dialect === 'postgres' ? String(row['QUERY PLAN']) : String(row.detail)))
    .join('\n')
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] as number

async function time(url: string, key: string, init: RequestInit = {}) {
  const samples: number[] = []
  let items = 0
  for (let i = 0; i < SAMPLES + 5; i += 1) {
    const started = performance.now()
    const response = await fetch(url, {
      ...init,
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
    })
    const body = (await response.json()) as { data?: { items?: unknown[] } }
    if (response.status !== 200) throw new Error(`${url}: ${response.status} ${JSON.stringify(body)}`)
    if (i >= 5) samples.push(performance.now() - started)
    items = body.data?.items?.length ?? 0
  }
  samples.sort((a, b) => a - b)
  return { median: percentile(samples, 0.5), p95: percentile(samples, 0.95), items }
}

async function benchBackend(backend: 'sqlite' | 'postgres') {
  const scratch = await scratchDatabase(backend, 'contacts-search-bench')
  const handle = openDatabase(scratch.url)
  try {
    await migrateToLatest(handle)
    process.stderr.write(`${backend}: seeding ${CONTACTS.toLocaleString('en')} contacts...\n`)
    const seeded = await seed(handle)
    process.stderr.write(`${backend}: seeded at ${seeded.rowsPerSecond.toLocaleString('en')} contacts/s\n`)
    const n = Math.floor(CONTACTS * 0.777)
    const deepPage = Math.min(10_000, Math.floor(CONTACTS / PAGE) - 1)
    // The cursor a client holds after reading deepPage - 1 pages: the position of the last
    // contact of that page, signed as the server signs it.
    const codec = cursorCodec(await loadCursorSecret(handle.db))
    const lastBefore = CONTACTS - (deepPage - 1) * PAGE
    const deepCursor = codec.encode(searchKey(seeded.orgId, {}), [createdAtOf(lastBefore), idOf(lastBefore)])
    const queries: { name: string; path: string; body?: object; search: Search }[] = [
      {
        name: 'email lookup',
        path: `/api/v1/contact?email=C${n}@bench.example&limit=${PAGE}`,
        search: { filter: { field: 'email', op: 'eq', value: `c${n}@bench.example` } },
      },
      {
        name: 'phone lookup',
        path: `/api/v1/contact?phone=%2B1555${String(n).padStart(7, '0')}&limit=${PAGE}`,
        search: { filter: { field: 'phone', op: 'eq', value: `+1555${String(n).padStart(7, '0')}` } },
      },
      {
        name: 'q search (one match)',
        path: `/api/v1/contact?q=last${n}&limit=${PAGE}`,
        search: { q: `last${n}` },
      },
      {
        name: 'custom field filter (1 in 1000)',
        path: `/api/v1/contact?custom_fields.plan=enterprise&limit=${PAGE}`,
        search: { filter: { field: 'custom_fields.plan', op: 'eq', value: 'enterprise' } },
      },
      { name: 'cursor page 1', path: `/api/v1/contact?limit=${PAGE}`, search: {} },
      {
        name: `cursor page ${deepPage.toLocaleString('en')}`,
        path: `/api/v1/contact?limit=${PAGE}&cursor=${deepCursor}`,
        search: {},
      },
    ]
    const server = await startServer(scratch.url)
    const results = []
    try {
      for (const query of queries) {
        const measured = await time(`${server.url}${query.path}`, seeded.key)
        const plan = await explain(
          handle,
          await explainableSearch(
            { db: handle.db, dialect: handle.dialect, cursors: async () => codec },
            seeded.orgId,
            { ...query.search, limit: PAGE + 1 },
          ),
        )
        results.push({ name: query.name, ...measured, plan })
        process.stderr.write(`${backend}: ${query.name}: median ${measured.median.toFixed(1)} ms\n`)
      }
    } finally {
      await server.stop()
    }
    return {
      backend,
      contacts: CONTACTS,
      seedRowsPerSecond: seeded.rowsPerSecond,
      seedSeconds: seeded.seedSeconds,
      results,
    }
  } finally {
    await handle.close()
    await scratch.drop()
  }
}

const runs = []
for (const backend of BACKENDS) runs.push(await benchBackend(backend))

const lines = [
  `Search at ${CONTACTS.toLocaleString('en')} contacts in one organization; ${SAMPLES} sequential requests each through the real server, after 5 warm-up requests.`,
  '',
  '| backend | seeding (contacts/s) | query | median ms | p95 ms | items |',
  '| --- | --- | --- | --- | --- | --- |',
]
for (const run of runs) {
  for (const result of run.results) {
    lines.push(
      `| ${run.backend} | ${run.seedRowsPerSecond.toLocaleString('en')} | ${result.name} | ${result.median.toFixed(1)} | ${result.p95.toFixed(1)} | ${result.items} |`,
    )
  }
  const [first, deep] = [run.results.at(-2), run.results.at(-1)]
  if (first && deep)
    lines.push(`| ${run.backend} | | deep page / page 1 | ${(deep.median / first.median).toFixed(2)} | | |`)
}
lines.push(
  '',
  'Query plans (the SQL behind each query, without its cursor condition for the first rows):',
  '',
)
for (const run of runs) {
  for (const result of run.results)
    lines.push(`### ${run.backend}: ${result.name}`, '```', result.plan, '```', '')
}
const report = lines.join('\n')
process.stdout.write(`${report}\n`)
mkdirSync(OUT, { recursive: true })
const stamp = new Date().toISOString().replace(/[:.]/g, '-')
writeFileSync(`${OUT}search-${stamp}.md`, `${report}\n`)
writeFileSync(`${OUT}search-${stamp}.json`, `${JSON.stringify(runs, null, 2)}\n`)
