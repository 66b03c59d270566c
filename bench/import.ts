/**
 * The import benchmark (the last stage of `npm run bench`, or alone: `npm run bench:import
 * [-- --rows N] [-- --sqlite]`): a CSV file of N new contacts (1,000,000 by default) imported
 * through POST /contact/import into the real server, on PostgreSQL unless `--sqlite`, then
 * exported through GET /contact/export. Reports rows per second for each, and the server's peak
 * RSS (VmHWM). The file is written to a temporary folder a line at a time and streamed to the
 * server, so the load generator holds no more of it than the server does.
 */
import { createReadStream, createWriteStream, readFileSync, rmSync, statSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import { type Kysely, sql } from 'kysely'
import { createApiKey } from '../src/api-keys/api-keys.service.js'
import { openDatabase } from '../src/db/database.js'
import { migrateToLatest } from '../src/db/migrations.js'
import type { Database } from '../src/db/schema.js'
import { createOrganization } from '../src/organizations/organizations.service.js'
import { scratchDatabase } from '../test/helpers/scratch-database.js'
import { startServer } from './server-process.js'

async function writeCsv(path: string, rows: number) {
  const out = createWriteStream(path)
  const write = (text: string) =>
    out.write(text) ? Promise.resolve() : new Promise<void>((resolve) => out.once('drain', () => resolve()))
  await write('email,first_name,last_name,phone,custom_fields.plan,user_attributes.city\n')
  let chunk = ''
  for (let n = 0; n < rows; n++) {
    chunk += `person${n}@import.example,First${n},Last${n},+1650${String(n).padStart(7, '0')},${n % 3 === 0 ? 'pro' : 'free'},City ${n % 97}\n`
    if (chunk.length > 1 << 16) {
      await write(chunk)
      chunk = ''
    }
  }
  await write(chunk)
  await new Promise<void>((resolve) => out.end(resolve))
}

const peakRssMb = (pid: number) =>
  Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024

interface Job {
  status: string
  rows_read: number
  created: number
  failed: number
  error: string | null
}

export interface ImportBenchResult {
  backend: 'sqlite' | 'postgres'
  rows: number
  /** People of another organization the tables held before the import. */
  other_org_rows: number
  file_mb: number
  upload_seconds: number
  import_seconds: number
  import_rows_per_second: number
  export_seconds: number
  export_rows_per_second: number
  peak_rss_mb_after_import: number
  peak_rss_mb: number
  /** PostgreSQL alone storing the same kind of rows (see databaseFloor); null on SQLite. */
  database_floor_rows_per_second: number | null
}

async function measure(
  url: string,
  pid: number,
  key: string,
  file: string,
  rows: number,
  backend: 'sqlite' | 'postgres',
) {
  const headers = { 'x-api-key': key }
  const started = performance.now()
  const upload = await fetch(`${url}/api/v1/contact/import`, {
    method: 'POST',
    headers: { ...headers, 'content-type': 'text/csv' },
    body: Readable.toWeb(createReadStream(file)) as ReadableStream,
    duplex: 'half',
  } as RequestInit)
  if (upload.status !== 202) throw new Error(`upload: ${upload.status} ${await upload.text()}`)
  const uploaded = performance.now()
  const id = ((await upload.json()) as { data: { id: string } }).data.id
  let job: Job
  for (;;) {
    await new Promise((resolve) => setTimeout(resolve, 250))
    job = ((await (await fetch(`${url}/api/v1/contact/import/${id}`, { headers })).json()) as { data: Job })
      .data
    if (job.status === 'completed' || job.status === 'failed') break
  }
  const importSeconds = (performance.now() - started) / 1000
  if (job.status !== 'completed' || job.created !== rows) throw new Error(`import: ${JSON.stringify(job)}`)
  const importRss = peakRssMb(pid)

  const exportStarted = performance.now()
  const exported = await fetch(`${url}/api/v1/contact/export?format=csv`, { headers })
  let lines = 0
  for await (const piece of exported.body as unknown as AsyncIterable<Uint8Array>) {
    const bytes = Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength)
    for (let at = bytes.indexOf(10); at !== -1; at = bytes.indexOf(10, at + 1)) lines++
  }
  const exportSeconds = (performance.now() - exportStarted) / 1000
  if (lines !== rows + 1) throw new Error(`export: ${lines - 1} rows of ${rows}`)
  return {
    backend,
    rows,
    file_mb: Math.round(statSync(file).size / 1024 / 1024),
    upload_seconds: Number(((uploaded - started) / 1000).toFixed(1)),
    import_seconds: Number(importSeconds.toFixed(1)),
    import_rows_per_second: Math.round(rows / importSeconds),
    export_seconds: Number(exportSeconds.toFixed(1)),
    export_rows_per_second: Math.round(rows / exportSeconds),
    peak_rss_mb_after_import: Math.round(importRss),
    peak_rss_mb: Math.round(peakRssMb(pid)),
  }
}

/** Rows the database floor is measured with: enough to be steady, few enough to be quick. */
const FLOOR_ROWS = 100_000

/**
 * What PostgreSQL alone takes to store the same kind of rows, with the same indexes, in tables
 * the size the import left them: per person a contact, its email and phone identities and its
 * `contact.created` event, each made by one INSERT … SELECT in one transaction, with no client,
 * no parsing and no round trips. An import can come near this rate but not pass it.
 */
async function databaseFloor(databaseUrl: string, rows: number): Promise<number> {
  const handle = openDatabase(databaseUrl)
  try {
    const org = await createOrganization(handle.db, 'import-bench-floor')
    const started = performance.now()
    await storePeople(handle.db, org.id, 'floor', rows)
    return Math.round(rows / ((performance.now() - started) / 1000))
  } finally {
    await handle.close()
  }
}

/** People stored by PostgreSQL alone, in one transaction: see databaseFloor. */
async function storePeople(db: Kysely<Database>, orgId: string, label: string, rows: number) {
  await db.transaction().execute(async (trx) => {
    // Hundreds of thousands of people take longer than the server's statement timeout.
    await sql`set local statement_timeout = 0`.execute(trx)
    await sql`
      insert into contacts (org_id, id, first_name, last_name, email, email_normalized, channels,
        user_attributes, custom_fields, created_at, updated_at, first_name_folded, last_name_folded, channels_folded)
      select ${orgId}::uuid, gen_random_uuid(), 'First' || n, 'Last' || n, ${label} || n || '@import.example',
        ${label} || n || '@import.example', jsonb_build_object('telephone', '+1750' || lpad(n::text, 7, '0')),
        jsonb_build_object('city', 'City ' || n % 97), jsonb_build_object('plan', 'pro'), now(), now(),
        'first' || n, 'last' || n, '+1750' || lpad(n::text, 7, '0')
      from generate_series(1, ${rows}::int) n`.execute(trx)
    for (const [kind, column] of [
      ['email', 'email_normalized'],
      ['phone', 'channels_folded'],
    ] as const) {
      await sql`
        insert into contact_identities (org_id, kind, value, contact_id, origin)
        select org_id, ${kind}, ${sql.ref(column)}, id, 'field' from contacts where org_id = ${orgId}::uuid`.execute(
        trx,
      )
    }
    await sql`
      insert into contact_events (org_id, id, contact_id, type, actor_type, actor_id, created_at, data)
      select org_id, gen_random_uuid(), id, 'contact.created', 'system', null, now(), row_to_json(contacts)::text
      from contacts where org_id = ${orgId}::uuid`.execute(trx)
  })
}

export async function benchImport(
  backend: 'sqlite' | 'postgres',
  rows: number,
  nodeArgs: string[] = [],
  /**
   * People of another organization stored (and the tables analyzed) before the import, on
   * PostgreSQL: the import then loads an organization its planner statistics do not know.
   */
  otherOrgRows = 0,
): Promise<ImportBenchResult> {
  const dir = await mkdtemp(join(tmpdir(), 'contacts-import-bench-'))
  const database = await scratchDatabase(backend, 'contacts-import-bench')
  try {
    const file = join(dir, 'people.csv')
    process.stdout.write(`${backend}: import bench, writing ${rows} rows…\n`)
    await writeCsv(file, rows)
    const handle = openDatabase(database.url)
    await migrateToLatest(handle)
    const org = await createOrganization(handle.db, 'import-bench')
    const { key } = await createApiKey(handle.db, { orgId: org.id, name: 'bench', role: 'full_access' })
    if (backend === 'postgres' && otherOrgRows > 0) {
      process.stdout.write(`${backend}: storing ${otherOrgRows} people of another organization…\n`)
      const other = await createOrganization(handle.db, 'import-bench-other')
      await storePeople(handle.db, other.id, 'other', otherOrgRows)
      await sql`analyze contacts, contact_identities, contact_events`.execute(handle.db)
    }
    await handle.close()
    const server = await startServer(database.url, { nodeArgs })
    let result: Omit<ImportBenchResult, 'database_floor_rows_per_second' | 'other_org_rows'>
    try {
      result = await measure(server.url, server.pid, key, file, rows, backend)
    } finally {
      await server.stop()
    }
    const floor =
      backend === 'postgres' ? await databaseFloor(database.url, Math.min(rows, FLOOR_ROWS)) : null
    return {
      ...result,
      other_org_rows: backend === 'postgres' ? otherOrgRows : 0,
      database_floor_rows_per_second: floor,
    }
  } finally {
    await database.drop()
    rmSync(dir, { recursive: true, force: true })
  }
}

export const importBenchLine = (r: ImportBenchResult) =>
  `${r.backend}: CSV import of ${r.rows} new contacts (${r.file_mb} MB file, upload included${r.other_org_rows > 0 ? `, into tables holding ${r.other_org_rows} people of another organization` : ''}) ${r.import_seconds} s = ${r.import_rows_per_second} rows/s; CSV export ${r.export_seconds} s = ${r.export_rows_per_second} rows/s; peak server RSS ${r.peak_rss_mb_after_import} MB after the import, ${r.peak_rss_mb} MB after the export.${
    r.database_floor_rows_per_second
      ? ` PostgreSQL alone stores the same kind of rows (contact, two identities, event; INSERT … SELECT) at ${r.database_floor_rows_per_second} rows/s: the import reaches ${(r.import_rows_per_second / r.database_floor_rows_per_second).toFixed(2)} of it.`
      : ''
  }`

// Alone (npm run bench:import); run.ts imports benchImport instead.
if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({
    options: {
      rows: { type: 'string', default: '1000000' },
      sqlite: { type: 'boolean', default: false },
      // Node options for the server, for example --cpu-prof --cpu-prof-dir DIR.
      'node-arg': { type: 'string', multiple: true },
      // PostgreSQL: people of another organization stored before the import (see benchImport).
      'other-org-rows': { type: 'string', default: '0' },
    },
  })
  const result = await benchImport(
    values.sqlite ? 'sqlite' : 'postgres',
    Number(values.rows),
    values['node-arg'] ?? [],
    Number(values['other-org-rows']),
  )
  process.stdout.write(`\n${importBenchLine(result)}\n`)
}
