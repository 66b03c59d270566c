/**
 * Soak: mixed traffic at a fixed rate against the real server for a long while, sampling the
 * server's resident memory every 10 seconds, to show whether memory grows under steady load.
 * Not part of CI (it takes minutes by design).
 *
 *   npm run build && npm run soak -- [--minutes 10] [--rate 200] [--database sqlite|postgres]
 */
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { createApiKey } from '../src/api-keys/api-keys.service.js'
import { openDatabase } from '../src/db/database.js'
import { migrateToLatest } from '../src/db/migrations.js'
import { createOrganization } from '../src/organizations/organizations.service.js'
import { startServerProcess } from '../test/helpers/processes.js'
import { scratchDatabase } from '../test/helpers/scratch-database.js'

const { values } = parseArgs({
  options: {
    minutes: { type: 'string', default: '10' },
    rate: { type: 'string', default: '200' },
    database: { type: 'string', default: 'sqlite' },
  },
})
const minutes = Number(values.minutes)
const rate = Number(values.rate)

const scratch = await scratchDatabase(values.database === 'postgres' ? 'postgres' : 'sqlite', 'contacts-soak')
const databaseUrl = scratch.url

const setup = openDatabase(databaseUrl)
await migrateToLatest(setup)
const org = await createOrganization(setup.db, 'soak')
const { key } = await createApiKey(setup.db, { orgId: org.id, name: 'soak', role: 'full_access' })
await setup.close()

const server = await startServerProcess({
  DATABASE_URL: databaseUrl,
  RATE_LIMIT_PER_KEY: '1000000000',
  RATE_LIMIT_PER_ADDRESS: '1000000000',
})
const pid = server.process.pid as number
const rssMb = () => {
  const match = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return match?.[1] ? Number(match[1]) / 1024 : Number.NaN
}

const headers = { 'x-api-key': key, 'content-type': 'application/json' }
const ids: string[] = []
const counts = { sent: 0, ok: 0, failed: 0 }
/** Why requests failed: an HTTP status, or the client-side error code. */
const failures: Record<string, number> = {}
const fail = (reason: string) => {
  counts.failed += 1
  failures[reason] = (failures[reason] ?? 0) + 1
}
async function oneRequest(n: number) {
  const pick = n % 10
  const id = ids.length ? ids[Math.floor(Math.random() * ids.length)] : undefined
  let response: Response
  if (pick < 3 || !id) {
    response = await fetch(`${server.url}/api/v1/contact`, {
      method: 'POST',
      headers,
      body: JSON.stringify({
        first_name: `S${n}`,
        email: `s${n}-${randomBytes(3).toString('hex')}@soak.example`,
      }),
    })
    if (response.ok) ids.push(((await response.json()) as { data: { id: string } }).data.id)
    else await response.arrayBuffer()
  } else if (pick < 6) {
    response = await fetch(`${server.url}/api/v1/contact/${id}`, {
      method: 'PUT',
      headers,
      body: JSON.stringify({ last_name: `L${n}`, custom_fields: { n } }),
    })
    await response.arrayBuffer()
  } else if (pick < 8) {
    response = await fetch(`${server.url}/api/v1/contact/${id}`, { headers })
    await response.arrayBuffer()
  } else {
    response = await fetch(`${server.url}/api/v1/contact?page=${1 + (n % 20)}&size=50`, { headers })
    await response.arrayBuffer()
  }
  if (response.ok) counts.ok += 1
  else fail(`HTTP ${response.status}`)
}

const samples: { second: number; rss: number }[] = [{ second: 0, rss: rssMb() }]
const started = Date.now()
const endAt = started + minutes * 60_000
const inFlight = new Set<Promise<void>>()
let n = 0
const sampler = setInterval(() => {
  const second = Math.round((Date.now() - started) / 1000)
  samples.push({ second, rss: rssMb() })
  process.stdout.write(`t=${second}s rss=${rssMb().toFixed(1)} MB ok=${counts.ok} failed=${counts.failed}\n`)
}, 10_000)
while (Date.now() < endAt) {
  const due = started + (n * 1000) / rate
  const wait = due - Date.now()
  if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait))
  counts.sent += 1
  const request = oneRequest(n++).catch((error: Error & { cause?: { code?: string } }) => {
    fail(error.cause?.code ?? error.message)
  })
  inFlight.add(request)
  void request.finally(() => inFlight.delete(request))
}
await Promise.all(inFlight)
clearInterval(sampler)
await server.stop()
await scratch.drop()

const firstMinute = samples.filter((s) => s.second <= 60).map((s) => s.rss)
const lastMinute = samples.filter((s) => s.second >= minutes * 60 - 60).map((s) => s.rss)
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? Number.NaN
const report = {
  database: values.database,
  minutes,
  target_rate: rate,
  achieved_rate: Math.round(counts.sent / (minutes * 60)),
  requests: counts.sent,
  ok: counts.ok,
  failed: counts.failed,
  failures,
  rss_mb: {
    start: Number(samples[0]?.rss.toFixed(1)),
    peak: Number(Math.max(...samples.map((s) => s.rss)).toFixed(1)),
    first_minute_median: Number(median(firstMinute).toFixed(1)),
    last_minute_median: Number(median(lastMinute).toFixed(1)),
  },
}
process.stdout.write(`${JSON.stringify(report, null, 2)}\n`)
process.stdout.write(
  `growth from the first to the last minute: ${(report.rss_mb.last_minute_median - report.rss_mb.first_minute_median).toFixed(1)} MB\n`,
)
