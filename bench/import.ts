/**
 * `npm run bench:import`: a CSV file of ROWS new contacts (1,000,000 by default; `--rows N`)
 * imported through POST /contact/import into the real server on PostgreSQL (or `--sqlite`), then
 * exported through GET /contact/export. Reports rows per second for each, and the server's peak
 * RSS (VmHWM) over both. The file is written to a temporary folder a line at a time and streamed
 * to the server, so the load generator holds no more of it than the server does.
 */
import { createReadStream, createWriteStream, readFileSync, rmSync, statSync } from 'node:fs'
import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { parseArgs } from 'node:util'
import { createApiKey } from '../src/api-keys/api-keys.service.js'
import { openDatabase } from '../src/db/database.js'
import { migrateToLatest } from '../src/db/migrations.js'
import { createOrganization } from '../src/organizations/organizations.service.js'
import { scratchDatabase } from '../test/helpers/scratch-database.js'
import { startServer } from './server-process.js'

const { values } = parseArgs({
  options: { rows: { type: 'string', default: '1000000' }, sqlite: { type: 'boolean', default: false } },
})
const ROWS = Number(values.rows)
const backend = values.sqlite ? 'sqlite' : 'postgres'

async function writeFile(path: string) {
  const out = createWriteStream(path)
  const write = (text: string) =>
    out.write(text) ? Promise.resolve() : new Promise<void>((resolve) => out.once('drain', () => resolve()))
  await write('email,first_name,last_name,phone,custom_fields.plan,user_attributes.city\n')
  let chunk = ''
  for (let n = 0; n < ROWS; n++) {
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

const dir = await mkdtemp(join(tmpdir(), 'contacts-import-bench-'))
const database = await scratchDatabase(backend, 'contacts-import-bench')
try {
  const file = join(dir, 'people.csv')
  process.stdout.write(`${backend}: writing ${ROWS} rows…\n`)
  await writeFile(file)
  const handle = openDatabase(database.url)
  await migrateToLatest(handle)
  const org = await createOrganization(handle.db, 'import-bench')
  const { key } = await createApiKey(handle.db, { orgId: org.id, name: 'bench', role: 'full_access' })
  await handle.close()
  const server = await startServer(database.url)
  try {
    const headers = { 'x-api-key': key }
    const started = performance.now()
    const upload = await fetch(`${server.url}/api/v1/contact/import`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'text/csv' },
      body: Readable.toWeb(createReadStream(file)) as ReadableStream,
      duplex: 'half',
    } as RequestInit)
    if (upload.status !== 202) throw new Error(`upload: ${upload.status} ${await upload.text()}`)
    const uploaded = performance.now()
    const id = ((await upload.json()) as { data: { id: string } }).data.id
    let job: { status: string; rows_read: number; created: number; failed: number; error: string | null }
    for (;;) {
      await new Promise((resolve) => setTimeout(resolve, 250))
      job = (
        (await (await fetch(`${server.url}/api/v1/contact/import/${id}`, { headers })).json()) as {
          data: typeof job
        }
      ).data
      if (job.status === 'completed' || job.status === 'failed') break
    }
    const imported = performance.now()
    if (job.status !== 'completed' || job.created !== ROWS) throw new Error(`import: ${JSON.stringify(job)}`)
    const importSeconds = (imported - started) / 1000
    const importRss = peakRssMb(server.pid)

    const exportStarted = performance.now()
    const exported = await fetch(`${server.url}/api/v1/contact/export?format=csv`, { headers })
    let lines = 0
    for await (const piece of exported.body as unknown as AsyncIterable<Uint8Array>) {
      for (const byte of piece) if (byte === 10) lines++
    }
    const exportSeconds = (performance.now() - exportStarted) / 1000
    if (lines !== ROWS + 1) throw new Error(`export: ${lines - 1} rows of ${ROWS}`)
    const peak = peakRssMb(server.pid)
    const mb = statSync(file).size / 1024 / 1024
    const rows = [
      ['backend', backend],
      ['rows', String(ROWS)],
      ['file', `${mb.toFixed(0)} MB`],
      ['upload (stored in chunks)', `${((uploaded - started) / 1000).toFixed(1)} s`],
      [
        'import, upload included',
        `${importSeconds.toFixed(1)} s = ${Math.round(ROWS / importSeconds)} rows/s`,
      ],
      ['export (CSV)', `${exportSeconds.toFixed(1)} s = ${Math.round(ROWS / exportSeconds)} rows/s`],
      ['peak server RSS after import', `${importRss.toFixed(0)} MB`],
      ['peak server RSS after export', `${peak.toFixed(0)} MB`],
    ]
    process.stdout.write(
      `\n| measure | value |\n| --- | --- |\n${rows.map(([k, v]) => `| ${k} | ${v} |`).join('\n')}\n`,
    )
  } finally {
    await server.stop()
  }
} finally {
  await database.drop()
  rmSync(dir, { recursive: true, force: true })
}
