/**
 * npm run bench [-- --quick] [-- --backend sqlite|postgres] [-- --import-rows N] [-- --node-arg=--x ...]
 * npm run bench -- --profile ROUTE | --bare-sweep
 *
 * Starts the real server (bench/server.ts: the production app, logging and key authentication
 * on) in a child process on a fresh database seeded with 100,000 contacts in one organization,
 * drives it with autocannon at 50 connections without pipelining, after a warm-up, in 3
 * interleaved rounds, and reports per route the median req/s, p50, p99 and max latency (of the
 * requests sent once every connection is open: see SETTLE_SECONDS), and its
 * ratio to the ceiling (fixed JSON through the same server) measured in the same round, with the
 * CPU time per request of the server's process (and of PostgreSQL's processes, on PostgreSQL). On
 * PostgreSQL it also runs pgbench with the same UPDATE (prepared) and reports PUT / pgbench, and
 * pgbench with the changing PUT's whole transaction (what PostgreSQL alone allows it). The
 * PUT runs twice per round: with the seed's body (which changes a contact only the first time
 * it is applied) and as put_changing, whose every request changes its contact. In each round
 * put_changing then runs with one enabled webhook (bench/receiver.ts acknowledging in a process
 * of its own), so that every PUT is owed a delivery, then once more without; the ratio of the
 * webhook's run to the mean of the plain runs either side of it is reported with the events per
 * PUT and the delivery backlog. Right after each PUT run, bare_put drives bench/bare-server.ts
 * (node:http alone) spending the CPU that PUT cost the server: the latencies Node itself gives a
 * request of that cost (--bare-sweep drives it alone at 100 to 900 µs a request). A run in which any
 * route's requests failed exits 1. The server and the load generator are pinned to different cores
 * when taskset exists. Writes a Markdown table and a JSON file to .bench/ (git-ignored). Last,
 * bench/import.ts imports a CSV file of 1,000,000 new contacts (10,000 with --quick;
 * --import-rows 0 skips it) and exports them.
 */
import { execFileSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'
import autocannon from 'autocannon'
import { sql } from 'kysely'
import { hashApiKey } from '../src/api-keys/api-key-secret.js'
import { createApiKey } from '../src/api-keys/api-keys.service.js'
import { SEED_UPDATE_EXAMPLE } from '../src/contacts/contacts.schemas.js'
import { withSearchColumns } from '../src/contacts/search-document.js'
import { openDatabase } from '../src/db/database.js'
import { migrateToLatest } from '../src/db/migrations.js'
import { createOrganization } from '../src/organizations/organizations.service.js'
import { POSTGRES_URL, type ScratchDatabase, scratchDatabase } from '../test/helpers/scratch-database.js'
import { benchImport, importBenchLine } from './import.js'
import {
  canPin,
  DATABASE_POOL_SIZE,
  PRODUCTION_NODE_OPTIONS,
  startBareServer,
  startReceiver,
  startServer,
} from './server-process.js'
import { checkTargets, targetsTable } from './targets.js'

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    backend: { type: 'string', multiple: true },
    profile: { type: 'string' },
    'import-rows': { type: 'string' },
    // Node options for the server on top of npm start's, to measure one against them, for
    // example --node-arg=--heap-growing-percent=30 (serve.ts leaves a V8 flag given here alone).
    'node-arg': { type: 'string', multiple: true },
    // The bare node:http server alone at a range of CPU costs a request (no service, no database).
    'bare-sweep': { type: 'boolean', default: false },
  },
})
const SERVER_NODE_ARGS = values['node-arg'] ?? []
const QUICK = values.quick
const BACKENDS = (values.backend?.length ? values.backend : ['sqlite', 'postgres']) as (
  | 'sqlite'
  | 'postgres'
)[]
const CONTACTS = QUICK ? 10_000 : 100_000
const ROUNDS = QUICK ? 1 : 3
const SECONDS = QUICK ? 0.75 : 5
const WARMUP_SECONDS = 3
/** --quick warms each route up with this many requests instead. */
const QUICK_WARMUP_REQUESTS = 300
const CONNECTIONS = 50
const OUT = fileURLToPath(new URL('../../.bench/', import.meta.url))

/** Seeded ids are derived from their number, so pgbench can address the same rows. */
const idOf = (n: number) => `00000000-0000-7000-8000-${n.toString(16).padStart(12, '0')}`
const SEED_UUID = SEED_UPDATE_EXAMPLE.org_id
/** The seed's PUT body; org_id left out, since the seed's organization is not the bench's. */
const { org_id: _seedOrg, ...PUT_BODY } = SEED_UPDATE_EXAMPLE

/** A seeded contact's WhatsApp number, in E.164 as the service stores it. */
const phoneOf = (n: number) => `+1555${String(n).padStart(7, '0')}`

/** Seeds the organization with contacts (each with its email and phone identities) in large multi-row inserts. */
async function seed(databaseUrl: string) {
  const handle = openDatabase(databaseUrl)
  await migrateToLatest(handle)
  const org = await createOrganization(handle.db, 'bench')
  const { key } = await createApiKey(handle.db, { orgId: org.id, name: 'bench', role: 'full_access' })
  const started = Date.now()
  const batch = handle.dialect === 'sqlite' ? 5000 : 2000
  await handle.db.transaction().execute(async (trx) => {
    for (let from = 0; from < CONTACTS; from += batch) {
      const now = new Date().toISOString()
      const rows = Array.from({ length: Math.min(batch, CONTACTS - from) }, (_, i) => {
        const n = from + i
        // With the folded copies the search indexes, as every write of the service makes them.
        return withSearchColumns({
          org_id: org.id,
          id: idOf(n),
          first_name: `First${n}`,
          last_name: `Last${n}`,
          email: `c${n}@bench.example`,
          email_normalized: `c${n}@bench.example`,
          channels: JSON.stringify({ whatsapp: phoneOf(n) }),
          user_attributes: JSON.stringify({ source: 'widget', visits: n % 17 }),
          custom_fields: JSON.stringify({ plan: n % 3 === 0 ? 'pro' : 'free' }),
          created_at: now,
          updated_at: now,
        })
      })
      // Kept under both backends' limits on bound parameters per statement.
      for (let i = 0; i < rows.length; i += 500)
        await trx
          .insertInto('contacts')
          .values(rows.slice(i, i + 500))
          .execute()
      // Every identity its fields give, as the service would have recorded them.
      const identities = rows.flatMap((row, i) => [
        {
          org_id: org.id,
          kind: 'email' as const,
          value: row.email,
          contact_id: row.id,
          origin: 'field' as const,
        },
        {
          org_id: org.id,
          kind: 'phone' as const,
          value: phoneOf(from + i),
          contact_id: row.id,
          origin: 'field' as const,
        },
      ])
      for (let i = 0; i < identities.length; i += 1000) {
        await trx
          .insertInto('contact_identities')
          .values(identities.slice(i, i + 1000))
          .execute()
      }
    }
  })
  if (handle.dialect === 'postgres') await sql`analyze`.execute(handle.db)
  const seconds = (Date.now() - started) / 1000
  await handle.close()
  return { orgId: org.id, key, seedRowsPerSecond: Math.round(CONTACTS / seconds) }
}

const random = (n: number) => Math.floor(Math.random() * n)
/** Numbers the changing PUTs' first names, so that no two requests write the same one. */
let changes = 0

interface Scenario {
  name: string
  request: (key: string) => autocannon.Request
}

/** The seed's PUT to a random seeded contact, with that contact's own email and `extra` fields. */
const putRequest = (key: string, extra: () => object): autocannon.Request => ({
  method: 'PUT',
  headers: { 'content-type': 'application/json' },
  setupRequest: (req) => {
    const n = random(CONTACTS)
    return {
      ...req,
      path: `/api/v1/contact/${idOf(n)}?api_key=${key}`,
      body: JSON.stringify({ ...PUT_BODY, ...extra(), email: `c${n}@bench.example` }),
    }
  },
})

const SCENARIOS: Scenario[] = [
  { name: 'ceiling', request: () => ({ method: 'GET', path: '/bench/ceiling' }) },
  // The seed's body with every field, its email being the target's own: with emails unique per
  // organization, one email written to every contact would be a conflict, not an update.
  { name: 'put', request: (key) => putRequest(key, () => ({})) },
  // The same PUT with a first name of its own each time, so that every request changes its
  // contact: the full write (index, event) that the seed's body, applied to a contact a second
  // time, no longer makes. The webhook comparison uses it, so that every PUT has a delivery.
  {
    name: 'put_changing',
    request: (key) =>
      putRequest(key, () => {
        changes += 1
        return { first_name: `Changed ${changes}` }
      }),
  },
  {
    name: 'get',
    request: (key) => ({
      method: 'GET',
      setupRequest: (req) => ({ ...req, path: `/api/v1/contact/${idOf(random(CONTACTS))}?api_key=${key}` }),
    }),
  },
  {
    name: 'list',
    request: (key) => ({
      method: 'GET',
      setupRequest: (req) => ({
        ...req,
        path: `/api/v1/contact?page=${1 + random(100)}&size=50&api_key=${key}`,
      }),
    }),
  },
  {
    name: 'create',
    request: (key) => ({
      method: 'POST',
      path: `/api/v1/contact?api_key=${key}`,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ first_name: 'New', user_attributes: { source: 'bench' } }),
    }),
  },
  {
    name: 'upsert',
    request: (key) => ({
      method: 'POST',
      setupRequest: (req) => ({
        ...req,
        path: `/api/v1/contact/upsert?email=c${random(CONTACTS)}%40bench.example&last_name=Upserted&api_key=${key}`,
      }),
    }),
  },
]

/** The run that measures the bare server's own share of its CPU at the PUT's cost, before its run. */
const BARE_PROBE_SECONDS = QUICK ? 0.5 : 2
/**
 * The seed's PUT sent to bench/bare-server.ts, which spends `cpuUs` of CPU on it and answers:
 * the same request on node:http alone, costing the server what the service's PUT did.
 */
const barePutRequest = (cpuUs: number): autocannon.Request => ({
  method: 'PUT',
  path: `/contact?cpu_us=${Math.max(0, Math.round(cpuUs))}`,
  headers: { 'content-type': 'application/json' },
  body: JSON.stringify({ ...PUT_BODY, email: 'c1@bench.example' }),
})

/**
 * Drives the bare server at `targetCpuUs` of CPU a request, its own HTTP handling counted: a short
 * probe run measures that share at this cost first (it costs more per request at a lower rate).
 * `httpShareUs` is the share measured before; the one measured by this run is returned.
 */
async function driveBareAt(
  bare: { origin: string; pid: number },
  targetCpuUs: number,
  httpShareUs: number,
): Promise<{ measured: Measure; httpShareUs: number }> {
  const clock = cpuClock(bare.pid, false)
  let spentUs = Math.max(0, targetCpuUs - httpShareUs)
  const probe = await drive(bare.origin, barePutRequest(spentUs), BARE_PROBE_SECONDS, clock)
  const probedShareUs = Math.max(0, (probe.serverCpuUs ?? targetCpuUs) - spentUs)
  spentUs = Math.max(0, targetCpuUs - probedShareUs)
  const measured = await drive(bare.origin, barePutRequest(spentUs), SECONDS, clock)
  return { measured, httpShareUs: Math.max(0, (measured.serverCpuUs ?? targetCpuUs) - spentUs) }
}

/** The bare server warmed up, and its own share of the CPU a request at no cost asked: a first guess. */
async function bareHttpShareAtRest(bare: { origin: string; pid: number }): Promise<number> {
  await warmUp(bare.origin, barePutRequest(0))
  return (await drive(bare.origin, barePutRequest(0), SECONDS, cpuClock(bare.pid, false))).serverCpuUs ?? 0
}

interface Measure {
  rps: number
  p50: number
  p99: number
  max: number
  /** The slowest first answer of a connection: its wait to be accepted, included. */
  firstAnswerMax?: number
  /** Answers of the whole run, the settling included. */
  answeredInRun: number
  errors: number
  requests: number
  /** Answers other than 2xx, by status, so that a failing route says how it fails. */
  failedStatuses: Record<string, number>
  non2xx: number
  /** CPU time the server's process spent per request, in µs. */
  serverCpuUs?: number
  /** The same for every PostgreSQL process of this machine (the server's backends, its writers). */
  databaseCpuUs?: number
}

/**
 * CPU time used so far, in ms, by the server's process and by PostgreSQL's processes when they run
 * on this machine: per request, a cost that the machine's speed varying from run to run moves far
 * less than the rate does.
 */
interface CpuClock {
  server(): number
  /** Per PostgreSQL process, so that one that exits during a run takes no time away from it. */
  database(): Map<string, number> | null
}

const CLOCK_TICKS_PER_SECOND = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
  } catch {
    return 100
  }
})()

/** utime + stime of a process (Linux /proc), in ms; NaN where /proc is not there. */
function processCpuMs(pid: number | string): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS_PER_SECOND
  } catch {
    return Number.NaN
  }
}

function cpuClock(serverPid: number, postgres: boolean): CpuClock {
  return {
    server: () => processCpuMs(serverPid),
    database: () => {
      if (!postgres) return null
      const byProcess = new Map<string, number>()
      for (const pid of readdirSync('/proc').filter((entry) => /^\d+$/.test(entry))) {
        try {
          if (readFileSync(`/proc/${pid}/comm`, 'utf8').trim() !== 'postgres') continue
        } catch {
          continue
        }
        const ms = processCpuMs(pid)
        if (Number.isFinite(ms)) byProcess.set(pid, ms)
      }
      return byProcess.size > 0 ? byProcess : null
    },
  }
}

/** CPU the PostgreSQL processes used between two readings, processes started meanwhile included. */
function databaseCpuBetween(before: Map<string, number>, after: Map<string, number>): number {
  let total = 0
  for (const [pid, ms] of after) total += ms - (before.get(pid) ?? 0)
  return total
}

/**
 * Each run opens its 50 connections at once, and a busy server accepts them over its next event
 * loop turns: the last is taken up to a second later, and its first request waits all that time
 * (Node does this with a bare http server too). So every connection runs for SETTLE_SECONDS
 * first, and what is reported (rate, latencies, CPU per request) is of the requests sent after
 * that, on connections that are all open; the slowest first answer of the run is reported apart.
 */
const SETTLE_SECONDS = QUICK ? 0.25 : 1

async function drive(
  url: string,
  request: autocannon.Request,
  seconds: number,
  clock?: CpuClock,
): Promise<Measure> {
  let serverBefore = Number.NaN
  let databaseBefore: Map<string, number> | null = null
  const measured = await load(url, request, seconds, () => {
    serverBefore = clock?.server() ?? Number.NaN
    databaseBefore = clock?.database() ?? null
  })
  if (!clock || measured.requests === 0) return measured
  const perRequestUs = (ms: number) => Math.round((ms * 1000) / measured.requests)
  const serverUs = perRequestUs(clock.server() - serverBefore)
  const databaseAfter = clock.database()
  return {
    ...measured,
    ...(Number.isFinite(serverUs) ? { serverCpuUs: serverUs } : {}),
    ...(databaseAfter && databaseBefore
      ? { databaseCpuUs: perRequestUs(databaseCpuBetween(databaseBefore, databaseAfter)) }
      : {}),
  }
}

/**
 * Load whose figures nobody reads: so that JIT and statement caches are warm before measuring.
 * With --quick, one run for all the routes given (each connection takes them in turn): a run of
 * autocannon lasts at least a second.
 */
function warmUp(url: string, ...requests: autocannon.Request[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    autocannon(
      {
        url,
        connections: CONNECTIONS,
        pipelining: 1,
        requests,
        ...(QUICK ? { amount: QUICK_WARMUP_REQUESTS * requests.length } : { duration: WARMUP_SECONDS }),
      },
      (error, result) => (error ? reject(error) : resolve(result)),
    )
  })
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] ?? Number.NaN

/**
 * `seconds` of load after SETTLE_SECONDS of it; `onWindowStart` is called as the measured part
 * begins. Errors and failed statuses count over the whole run.
 */
function load(
  url: string,
  request: autocannon.Request,
  seconds: number,
  onWindowStart: () => void = () => {},
): Promise<Measure> {
  return new Promise((resolve, reject) => {
    const latencies: number[] = []
    let answers = 0
    const answered = new Set<unknown>()
    let firstAnswerMax = 0
    let windowStart = Number.POSITIVE_INFINITY
    const settle = setTimeout(() => {
      windowStart = performance.now()
      onWindowStart()
    }, SETTLE_SECONDS * 1000)
    const run = autocannon(
      {
        url,
        connections: CONNECTIONS,
        pipelining: 1,
        duration: SETTLE_SECONDS + seconds,
        requests: [request],
      },
      (error, result) => {
        clearTimeout(settle)
        if (error) return reject(error)
        const windowSeconds = (performance.now() - windowStart) / 1000
        latencies.sort((a, b) => a - b)
        resolve({
          rps: windowSeconds > 0 ? answers / windowSeconds : Number.NaN,
          p50: Math.round(percentile(latencies, 50)),
          p99: Math.round(percentile(latencies, 99)),
          max: Math.round(latencies.at(-1) ?? Number.NaN),
          firstAnswerMax: Math.round(firstAnswerMax),
          errors: result.errors,
          requests: answers,
          answeredInRun: result.requests.total,
          non2xx: result.non2xx,
          failedStatuses: Object.fromEntries(
            Object.entries(
              (result as unknown as { statusCodeStats?: Record<string, { count: number }> })
                .statusCodeStats ?? {},
            )
              .filter(([status]) => !status.startsWith('2'))
              .map(([status, { count }]) => [status, count]),
          ),
        })
      },
    )
    run.on('response', (client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
      if (!answered.has(client)) {
        answered.add(client)
        firstAnswerMax = Math.max(firstAnswerMax, responseTime)
      }
      // As autocannon's own figures: the latencies of 2xx answers.
      if (performance.now() - responseTime < windowStart) return
      answers += 1
      if (statusCode >= 200 && statusCode < 300) latencies.push(responseTime)
    })
  })
}

/**
 * pgbench running the PUT's UPDATE directly. Like the HTTP PUT, it gives each contact its own
 * email back: one email written to every row would leave rows sharing an address that the
 * identity table (which pgbench does not touch) gives to one, and later rounds' upserts would
 * rightly answer 409.
 */
function pgbench(database: ScratchDatabase, orgId: string, seconds: number) {
  return runPgbench(
    database,
    seconds,
    `\\set n random(0, ${CONTACTS - 1})
UPDATE contacts SET first_name = '<string>', last_name = '<string>', email = 'c' || :n || '@bench.example',
  email_normalized = 'c' || :n || '@bench.example',
  channels = '{}', user_attributes = '{}', last_seen = '2023-11-07T05:31:56Z', last_sent = '2023-11-07T05:31:56Z',
  first_assistant_id = '${SEED_UUID}', last_assistant_id = '${SEED_UUID}', first_widget_id = '${SEED_UUID}',
  last_widget_id = '${SEED_UUID}', custom_fields = '{}', updated_at = now(), version = version + 1
WHERE org_id = '${orgId}' AND id = ${SEEDED_ID_OF_N} RETURNING *;
`,
  )
}

const SEEDED_ID_OF_N = `('00000000-0000-7000-8000-' || lpad(to_hex((:n)::bigint), 12, '0'))::uuid`

/**
 * pgbench running the changing PUT's whole transaction as the server sends it, with no server:
 * the key's lookup; BEGIN written with the locked UPDATE that returns the row as it was (the
 * search columns included); the event, of the same size, queued for the organization's enabled
 * webhooks in the same statement, written with COMMIT. What PostgreSQL alone, on this machine,
 * allows the PUT.
 */
function pgbenchPutTransaction(database: ScratchDatabase, orgId: string, key: string, seconds: number) {
  const before = `select * from contacts where org_id = '${orgId}' and id = ${SEEDED_ID_OF_N} and deleted_at is null for update`
  const update = `with before as (${before})
  update contacts set first_name = 'Changed ' || :r, last_name = '<string>', email = 'c' || :n || '@bench.example',
    email_normalized = 'c' || :n || '@bench.example', first_assistant_id = '${SEED_UUID}',
    last_assistant_id = '${SEED_UUID}', first_widget_id = '${SEED_UUID}', last_widget_id = '${SEED_UUID}',
    last_seen = '2023-11-07T05:31:56Z', last_sent = '2023-11-07T05:31:56Z', channels = '{}',
    user_attributes = '{}', custom_fields = '{}', updated_at = now(), first_name_folded = 'changed ' || :r,
    last_name_folded = '<string>', channels_folded = null, version = contacts.version + 1
  from before where contacts.org_id = before.org_id and contacts.id = before.id
  returning contacts.*, row_to_json(before.*) as previous;`
  const event = `with e as (insert into contact_events (org_id, id, contact_id, type, actor_type, actor_id, created_at, data)
    select '${orgId}', gen_random_uuid(), ${SEEDED_ID_OF_N}, 'contact.updated', 'api_key', null, now(), repeat('x', 1200)
    returning seq, org_id, id, contact_id, type, created_at)
  insert into webhook_deliveries (org_id, id, webhook_id, event_seq, contact_id, status, attempts, next_attempt_at, created_at)
    select e.org_id, gen_random_uuid(), w.id, e.seq, e.contact_id, 'pending', 0, e.created_at, e.created_at
    from e inner join webhooks as w on w.org_id = e.org_id
    where w.enabled = 1 and w.events::jsonb @> jsonb_build_array(e.type);`
  return runPgbench(
    database,
    seconds,
    `\\set n random(0, ${CONTACTS - 1})
\\set r random(0, 1000000000)
select id, org_id, role, key_hash, last_used_at from api_keys where key_hash = '${hashApiKey(key)}' and revoked_at is null;
\\startpipeline
BEGIN;
${update}
\\endpipeline
\\startpipeline
${event}
COMMIT;
\\endpipeline
`,
    DATABASE_POOL_SIZE,
  )
}

/** pgbench, prepared statements, on the bench's schema; its transactions per second. */
function runPgbench(database: ScratchDatabase, seconds: number, scriptText: string, clients = CONNECTIONS) {
  const script = join(tmpdir(), `contacts-bench-${randomBytes(4).toString('hex')}.sql`)
  writeFileSync(script, scriptText)
  const url = new URL(POSTGRES_URL)
  const args = [
    '-n',
    '-M',
    'prepared',
    '-f',
    script,
    '-c',
    String(clients),
    '-j',
    '2',
    '-T',
    String(Math.max(1, Math.floor(seconds))),
  ]
  const env = {
    ...process.env,
    PGHOST: url.hostname,
    PGPORT: url.port || '5432',
    PGUSER: decodeURIComponent(url.username || 'postgres'),
    PGDATABASE: url.pathname.slice(1),
    PGOPTIONS: `-c search_path=${database.schema}`,
  }
  if (url.password) Object.assign(env, { PGPASSWORD: decodeURIComponent(url.password) })
  try {
    const output = execFileSync('pgbench', args, { env, encoding: 'utf8' })
    const tps = /tps = ([\d.]+)/.exec(output)?.[1]
    return tps ? Number(tps) : Number.NaN
  } finally {
    rmSync(script, { force: true })
  }
}

const median = (xs: number[]) => {
  const sorted = [...xs].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)] ?? Number.NaN
}
const peakRssMb = (pid: number) => {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8')
    return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]) / 1024
  } catch {
    return Number.NaN
  }
}

async function benchBackend(backend: 'sqlite' | 'postgres') {
  const database = await scratchDatabase(backend, 'contacts-bench')
  try {
    process.stdout.write(`${backend}: seeding ${CONTACTS} contacts…\n`)
    const { orgId, key, seedRowsPerSecond } = await seed(database.url)
    const server = await startServer(database.url, { nodeArgs: SERVER_NODE_ARGS })
    const measured = await measure(backend, database, server, key, orgId).finally(() => server.stop())
    return { ...measured, seed_rows_per_second: seedRowsPerSecond }
  } finally {
    await database.drop()
  }
}

async function measure(
  backend: 'sqlite' | 'postgres',
  database: ScratchDatabase,
  server: { url: string; pid: number },
  key: string,
  orgId: string,
) {
  // Warm-up: every route once, so JIT and statement caches are warm before measuring.
  if (QUICK) await warmUp(server.url, ...SCENARIOS.map((scenario) => scenario.request(key)))
  else for (const scenario of SCENARIOS) await warmUp(server.url, scenario.request(key))
  const clock = cpuClock(server.pid, backend === 'postgres')
  const bare = await startBareServer()
  const receiver = await startReceiver()
  const webhook = await webhookSwitch(server.url, key, receiver.url, database.url)
  const rounds: Record<string, Measure>[] = []
  const pgbenchRounds: number[] = []
  const putTransactionRounds: number[] = []
  const webhookRounds: {
    backlog: number
    drainSeconds: number
    putAfterRps: number
    eventsPerPut: number
  }[] = []
  try {
    // The bare reference's own HTTP handling is part of the CPU it is to spend.
    let bareHttpCpuUs = await bareHttpShareAtRest(bare)
    // The PUT with a webhook too: the dispatcher's code, statements and connections are not
    // exercised by the other routes.
    const put = SCENARIOS.find((scenario) => scenario.name === 'put_changing') as Scenario
    await webhook.enable(true)
    await warmUp(server.url, put.request(key))
    await webhook.drain()
    await webhook.enable(false)
    for (let round = 1; round <= ROUNDS; round++) {
      const measures: Record<string, Measure> = {}
      for (const scenario of SCENARIOS) {
        measures[scenario.name] = await drive(server.url, scenario.request(key), SECONDS, clock)
        process.stdout.write(
          `${backend} round ${round} ${scenario.name}: ${Math.round(measures[scenario.name]?.rps ?? 0)} req/s\n`,
        )
        if (scenario.name === 'put') {
          // node:http alone spending what this PUT cost the server, in the same round.
          const putCpuUs = measures.put?.serverCpuUs ?? Number.NaN
          if (Number.isFinite(putCpuUs)) {
            const run = await driveBareAt(bare, putCpuUs, bareHttpCpuUs)
            measures.bare_put = run.measured
            bareHttpCpuUs = run.httpShareUs
            process.stdout.write(
              `${backend} round ${round} bare_put: ${Math.round(measures.bare_put.rps)} req/s at ${measures.bare_put.serverCpuUs} µs a request\n`,
            )
          }
        }
        if (scenario.name !== 'put_changing') continue
        // The same PUTs with one enabled webhook: every one changes its contact, so every one
        // queues a delivery, which the server's dispatcher sends to a receiver while the PUTs go on.
        await webhook.enable(true)
        const eventsBefore = await webhook.events()
        measures.put_webhook = await drive(server.url, scenario.request(key), SECONDS, clock)
        const eventsPerPut =
          ((await webhook.events()) - eventsBefore) / (measures.put_webhook.answeredInRun || 1)
        const backlog = await webhook.pending()
        const drainSeconds = await webhook.drain()
        await webhook.enable(false)
        // The plain PUT once more, so that the webhook's run is compared with the plain runs
        // either side of it: a drift of the machine's speed during the round cancels out.
        const putAfterRps = (await drive(server.url, scenario.request(key), SECONDS)).rps
        webhookRounds.push({ backlog, drainSeconds, putAfterRps, eventsPerPut })
        process.stdout.write(
          `${backend} round ${round} put_webhook: ${Math.round(measures.put_webhook.rps)} req/s, ${eventsPerPut.toFixed(2)} events per PUT (each owed a delivery), ${backlog} deliveries pending at the end, drained in ${drainSeconds} s; put_changing again: ${Math.round(putAfterRps)} req/s\n`,
        )
      }
      if (backend === 'postgres') {
        pgbenchRounds.push(pgbench(database, orgId, SECONDS))
        putTransactionRounds.push(pgbenchPutTransaction(database, orgId, key, SECONDS))
      }
      rounds.push(measures)
    }
  } finally {
    await webhook.close()
    await receiver.stop()
    await bare.stop()
  }
  const batch = await batchUpsertRate(server.url, key)
  process.stdout.write(`${backend} batch upsert: ${batch} contacts/s\n`)
  const peakRss = peakRssMb(server.pid)
  const routes = [...SCENARIOS.map(({ name }) => name), 'put_webhook', 'bare_put'].map((name) => {
    const of = (field: 'rps' | 'p50' | 'p99' | 'serverCpuUs' | 'databaseCpuUs') =>
      median(rounds.map((r) => r[name]?.[field] ?? Number.NaN))
    const failedStatuses: Record<string, number> = {}
    for (const round of rounds) {
      for (const [status, count] of Object.entries(round[name]?.failedStatuses ?? {})) {
        failedStatuses[status] = (failedStatuses[status] ?? 0) + count
      }
    }
    const ratio = median(rounds.map((r) => (r[name]?.rps ?? 0) / (r.ceiling?.rps ?? 1)))
    return {
      route: name,
      rps: Math.round(of('rps')),
      p50_ms: of('p50'),
      p99_ms: of('p99'),
      // "No request over": the largest of the rounds, not their median.
      max_ms: Math.max(...rounds.map((r) => r[name]?.max ?? Number.NaN)),
      first_answer_max_ms: Math.max(...rounds.map((r) => r[name]?.firstAnswerMax ?? Number.NaN)),
      ratio_to_ceiling: Number(ratio.toFixed(3)),
      server_cpu_us_per_request: of('serverCpuUs'),
      database_cpu_us_per_request: backend === 'postgres' && name !== 'bare_put' ? of('databaseCpuUs') : null,
      errors: rounds.reduce((sum, r) => sum + (r[name]?.errors ?? 0) + (r[name]?.non2xx ?? 0), 0),
      failed_statuses: failedStatuses,
    }
  })
  const pgbenchTps = backend === 'postgres' ? Math.round(median(pgbenchRounds)) : null
  const putTransactionTps = backend === 'postgres' ? Math.round(median(putTransactionRounds)) : null
  const putChangingRps = routes.find((r) => r.route === 'put_changing')?.rps ?? 0
  /** A round's plain changing PUT, the mean of its runs either side of the webhook's. */
  const plainPutAround = (round: number) =>
    ((rounds[round]?.put_changing?.rps ?? 0) + (webhookRounds[round]?.putAfterRps ?? 0)) / 2 || 1
  const putRps = routes.find((r) => r.route === 'put')?.rps ?? 0
  return {
    backend,
    contacts: CONTACTS,
    peak_rss_mb: Number(peakRss.toFixed(1)),
    batch_upsert_contacts_per_second: batch,
    pgbench_tps: pgbenchTps,
    put_to_pgbench: pgbenchTps ? Number((putRps / pgbenchTps).toFixed(3)) : null,
    pgbench_put_transaction_tps: putTransactionTps,
    put_transaction_to_pgbench:
      pgbenchTps && putTransactionTps ? Number((putTransactionTps / pgbenchTps).toFixed(3)) : null,
    put_changing_to_put_transaction: putTransactionTps
      ? Number((putChangingRps / putTransactionTps).toFixed(3))
      : null,
    put_webhook_to_put: Number(
      median(rounds.map((r, i) => (r.put_webhook?.rps ?? 0) / plainPutAround(i))).toFixed(3),
    ),
    // The same, counting the seconds the deliveries still pending at the end took to send: the rate
    // at which PUTs and their deliveries are both done, when the dispatcher falls behind in a run.
    put_webhook_sustained_to_put: Number(
      median(
        rounds.map((r, i) => {
          const seconds = SECONDS + (webhookRounds[i]?.drainSeconds ?? 0)
          return (r.put_webhook?.requests ?? 0) / seconds / plainPutAround(i)
        }),
      ).toFixed(3),
    ),
    webhook_events_per_put: Number(median(webhookRounds.map((r) => r.eventsPerPut)).toFixed(2)),
    webhook_backlog_at_end: median(webhookRounds.map((r) => r.backlog)),
    webhook_drain_seconds: median(webhookRounds.map((r) => r.drainSeconds)),
    routes,
  }
}

/**
 * One webhook of the bench organization, pointing at the receiver, switched on only for the
 * put_webhook runs; `pending` and `drain` read the delivery queue from the database itself.
 */
async function webhookSwitch(url: string, key: string, endpoint: string, databaseUrl: string) {
  const call = async (method: string, path: string, body: unknown) => {
    const response = await fetch(`${url}/api/v1${path}`, {
      method,
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    })
    if (!response.ok) throw new Error(`${method} ${path}: ${response.status} ${await response.text()}`)
    return ((await response.json()) as { data: { id: string } }).data
  }
  const { id } = await call('POST', '/outbound_webhook', { endpoint, name: 'bench', enabled: false })
  const handle = openDatabase(databaseUrl)
  /** Events in the log: each one written while the webhook is enabled is owed a delivery. */
  const events = async () =>
    Number(
      (
        await handle.db
          .selectFrom('contact_events')
          .select((eb) => eb.fn.countAll().as('n'))
          .executeTakeFirstOrThrow()
      ).n,
    )
  const pending = async () =>
    Number(
      (
        await handle.db
          .selectFrom('webhook_deliveries')
          .select((eb) => eb.fn.countAll().as('n'))
          .where('status', '=', 'pending')
          .executeTakeFirstOrThrow()
      ).n,
    )
  return {
    enable: (enabled: boolean) => call('PUT', `/outbound_webhook/${id}`, { enabled }),
    pending,
    events,
    /** Seconds until every queued delivery was made (at most 120). */
    async drain() {
      const started = performance.now()
      while ((await pending()) > 0 && performance.now() - started < 120_000)
        await new Promise((resolve) => setTimeout(resolve, 100))
      return Number(((performance.now() - started) / 1000).toFixed(1))
    },
    close: () => handle.close(),
  }
}

const BATCH_CALLS = QUICK ? 10 : 100

/** Batch upserts of 1000 new people each, for --profile batch. */
const BATCH_SCENARIO: Scenario = {
  name: 'batch',
  request: (key) => ({
    method: 'POST',
    headers: { 'content-type': 'application/json', 'x-api-key': key },
    setupRequest: (req) => {
      const run = randomBytes(6).toString('hex')
      const contacts = Array.from({ length: 1000 }, (_, i) => ({
        email: `p-${run}-${i}@bench.example`,
        first_name: 'Batch',
      }))
      return { ...req, path: '/api/v1/contact/batch/upsert', body: JSON.stringify({ contacts }) }
    },
  }),
}

/** New contacts a second through POST /contact/batch/upsert, 1000 per call, calls one after another. */
async function batchUpsertRate(url: string, key: string): Promise<number> {
  const run = randomBytes(4).toString('hex')
  const started = performance.now()
  for (let call = 0; call < BATCH_CALLS; call++) {
    const contacts = Array.from({ length: 1000 }, (_, i) => ({
      email: `batch-${run}-${call}-${i}@bench.example`,
      first_name: 'Batch',
      user_attributes: { source: 'import' },
    }))
    const response = await fetch(`${url}/api/v1/contact/batch/upsert`, {
      method: 'POST',
      headers: { 'x-api-key': key, 'content-type': 'application/json' },
      body: JSON.stringify({ contacts }),
    })
    const body = (await response.json()) as { data?: { created?: number } }
    if (response.status !== 200 || body.data?.created !== 1000) {
      throw new Error(`batch upsert answered ${response.status}: ${JSON.stringify(body).slice(0, 300)}`)
    }
  }
  return Math.round((BATCH_CALLS * 1000) / ((performance.now() - started) / 1000))
}

/**
 * `--profile ROUTE`: drives one route for 10 s against a server run with --cpu-prof and prints
 * where its time went, by function and by package, instead of the benchmark table.
 */
async function profileRoute(backend: 'sqlite' | 'postgres', routeName: string) {
  // put_webhook: the PUT with one enabled webhook, its deliveries made while it runs.
  const withWebhook = routeName === 'put_webhook'
  const scenario = [...SCENARIOS, BATCH_SCENARIO].find(
    (s) => s.name === (withWebhook ? 'put_changing' : routeName),
  )
  if (!scenario)
    throw new Error(`no route "${routeName}"; routes: ${SCENARIOS.map((s) => s.name).join(', ')}`)
  const database = await scratchDatabase(backend, 'contacts-bench')
  const profileDir = join(tmpdir(), `contacts-profile-${randomBytes(4).toString('hex')}`)
  try {
    const { key } = await seed(database.url)
    const server = await startServer(database.url, {
      nodeArgs: [...SERVER_NODE_ARGS, '--cpu-prof', '--cpu-prof-dir', profileDir],
    })
    const receiver = withWebhook ? await startReceiver() : null
    const webhook = receiver ? await webhookSwitch(server.url, key, receiver.url, database.url) : null
    try {
      await webhook?.enable(true)
      await warmUp(server.url, scenario.request(key))
      const measured = await drive(server.url, scenario.request(key), 10)
      process.stdout.write(`${backend} ${routeName}: ${Math.round(measured.rps)} req/s while profiling\n`)
    } finally {
      await webhook?.close()
      await receiver?.stop()
      await server.stop()
    }
    const file = readdirSync(profileDir).find((name) => name.endsWith('.cpuprofile'))
    if (!file) throw new Error('the server wrote no profile')
    process.stdout.write(`${summarizeProfile(JSON.parse(readFileSync(join(profileDir, file), 'utf8')))}\n`)
  } finally {
    rmSync(profileDir, { recursive: true, force: true })
    await database.drop()
  }
}

interface ProfileNode {
  id: number
  callFrame: { functionName: string; url: string; lineNumber: number }
  children?: number[]
}

/** Self time by function and by package (or Node internals, or this project's code). */
function summarizeProfile(profile: { nodes: ProfileNode[]; samples: number[]; timeDeltas: number[] }) {
  const byNode = new Map<number, number>()
  profile.samples.forEach((id, index) => {
    byNode.set(id, (byNode.get(id) ?? 0) + (profile.timeDeltas[index] ?? 0))
  })
  const total = [...byNode.values()].reduce((sum, t) => sum + t, 0)
  const byFunction = new Map<string, number>()
  const byPackage = new Map<string, number>()
  for (const node of profile.nodes) {
    const time = byNode.get(node.id) ?? 0
    if (time === 0) continue
    const { functionName, url, lineNumber } = node.callFrame
    const packageName =
      /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1] ??
      (url.includes('/dist/src/')
        ? '(this service)'
        : url === ''
          ? `(${functionName || 'native'})`
          : '(node internals)')
    const where = url
      ? `${url.replace(/^.*node_modules\//, '').replace(/^.*\/dist\//, '')}:${lineNumber + 1}`
      : ''
    const name = `${functionName || '(anonymous)'} ${where}`.trim()
    byFunction.set(name, (byFunction.get(name) ?? 0) + time)
    byPackage.set(packageName, (byPackage.get(packageName) ?? 0) + time)
  }
  const top = (map: Map<string, number>, n: number) =>
    [...map.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, n)
      .map(([name, time]) => `| ${((100 * time) / total).toFixed(1)} % | ${name} |`)
  return [
    '| self time | package |',
    '| --- | --- |',
    ...top(byPackage, 15),
    '',
    '| self time | function |',
    '| --- | --- |',
    ...top(byFunction, Number(process.env.PROFILE_TOP ?? 30)),
  ].join('\n')
}

/**
 * `--bare-sweep`: the bare server alone at CPU costs a request from the ceiling's to the slowest
 * routes', each driven like a route of the bench: how p99 grows with the cost of a request when
 * nothing but Node's HTTP handling and one event loop stand in the way.
 */
async function bareSweep() {
  const costsUs = [100, 200, 300, 400, 600, 900]
  const bare = await startBareServer()
  try {
    let httpShareUs = await bareHttpShareAtRest(bare)
    const lines = [
      `The bare node:http server alone, ${CONNECTIONS} connections, ${SECONDS} s a cost after ${SETTLE_SECONDS} s, ${canPin ? 'server on CPU 1, load on CPU 0' : 'not pinned'}.`,
      '',
      '| CPU µs a request, asked | measured | req/s | mean wait ms (connections / rate) | p50 ms | p99 ms | p99 / mean wait | max ms |',
      '| --- | --- | --- | --- | --- | --- | --- | --- |',
    ]
    for (const costUs of costsUs) {
      const run = await driveBareAt(bare, costUs, httpShareUs)
      httpShareUs = run.httpShareUs
      const { measured } = run
      const meanWaitMs = (CONNECTIONS * 1000) / measured.rps
      lines.push(
        `| ${costUs} | ${measured.serverCpuUs} | ${Math.round(measured.rps)} | ${meanWaitMs.toFixed(1)} | ${measured.p50} | ${measured.p99} | ${(measured.p99 / meanWaitMs).toFixed(2)} | ${measured.max} |`,
      )
      process.stdout.write(`${lines.at(-1)}\n`)
    }
    process.stdout.write(`\n${lines.join('\n')}\n`)
  } finally {
    await bare.stop()
  }
}

if (canPin) execFileSync('taskset', ['-cp', '0', String(process.pid)], { stdio: 'ignore' })
if (values['bare-sweep']) {
  await bareSweep()
  process.exit(0)
}
if (values.profile) {
  for (const backend of BACKENDS) await profileRoute(backend, values.profile)
  process.exit(0)
}
const results = []
for (const backend of BACKENDS) results.push(await benchBackend(backend))
// The CSV import and export, last, on PostgreSQL (the issue's target); SQLite with --backend sqlite alone.
const IMPORT_ROWS = Number(values['import-rows'] ?? (QUICK ? 10_000 : 1_000_000))
const importBackend = BACKENDS.includes('postgres') ? 'postgres' : 'sqlite'
const importResult = IMPORT_ROWS > 0 ? await benchImport(importBackend, IMPORT_ROWS, SERVER_NODE_ARGS) : null

const environment = {
  date: new Date().toISOString(),
  node: process.version,
  server_node_options: [...PRODUCTION_NODE_OPTIONS, ...SERVER_NODE_ARGS].join(' '),
  cpus: cpus().length,
  cpu: cpus()[0]?.model,
  tool: 'autocannon',
  connections: CONNECTIONS,
  pinned: canPin,
  quick: QUICK,
  rounds: ROUNDS,
  seconds_per_route: SECONDS,
  settle_seconds: SETTLE_SECONDS,
}
const lines = [
  `Node ${environment.node} (server: node ${environment.server_node_options}), ${environment.cpus} CPUs (${environment.cpu}), autocannon, ${CONNECTIONS} connections, no pipelining, ${ROUNDS} round(s) × ${SECONDS} s measured after ${SETTLE_SECONDS} s on the same connections, ${canPin ? 'server on CPU 1, load on CPU 0' : 'not pinned'}. Medians of the rounds; max ms is the largest of any round, and so is the slowest first answer of a new connection (its wait to be accepted included).`,
  '',
  '| backend | route | req/s | p50 ms | p99 ms | max ms | ratio to ceiling | server CPU µs/req | PostgreSQL CPU µs/req | errors | slowest first answer ms |',
  '| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |',
]
for (const result of results) {
  for (const r of result.routes) {
    lines.push(
      `| ${result.backend} | ${r.route} | ${r.rps} | ${r.p50_ms} | ${r.p99_ms} | ${r.max_ms} | ${r.ratio_to_ceiling} | ${r.server_cpu_us_per_request} | ${r.database_cpu_us_per_request ?? '–'} | ${r.errors}${
        Object.keys(r.failed_statuses).length > 0
          ? ` (${Object.entries(r.failed_statuses)
              .map(([status, count]) => `${count}× ${status}`)
              .join(', ')})`
          : ''
      } | ${r.first_answer_max_ms} |`,
    )
  }
}
lines.push('')
for (const result of results) {
  lines.push(
    `${result.backend}: ${result.contacts} contacts seeded at ${result.seed_rows_per_second} rows/s; peak server RSS ${result.peak_rss_mb} MB${
      result.pgbench_tps
        ? `; pgbench (same UPDATE, prepared) ${result.pgbench_tps} tps, PUT / pgbench = ${result.put_to_pgbench}; pgbench with the changing PUT's whole transaction (${DATABASE_POOL_SIZE} clients, the server's pool) ${result.pgbench_put_transaction_tps} tps (${result.put_transaction_to_pgbench} of pgbench's UPDATE), put_changing / that = ${result.put_changing_to_put_transaction}`
        : ''
    }; batch upsert of ${BATCH_CALLS * 1000} new contacts (1000 per call, one call at a time): ${result.batch_upsert_contacts_per_second} contacts/s; PUT with one enabled webhook / PUT = ${result.put_webhook_to_put}, every PUT changing its contact (${result.webhook_events_per_put} events per PUT, each owed a delivery; pending at the end of a run: ${result.webhook_backlog_at_end}, all delivered ${result.webhook_drain_seconds} s later; counting those seconds, ${result.put_webhook_sustained_to_put}).`,
  )
}
if (importResult) lines.push(importBenchLine(importResult))
const targets = checkTargets(results, importResult)
lines.push('', ...targetsTable(targets, QUICK))
const table = lines.join('\n')
mkdirSync(OUT, { recursive: true })
const stamp = environment.date.replace(/[:.]/g, '-')
writeFileSync(join(OUT, `bench-${stamp}.md`), `${table}\n`)
writeFileSync(
  join(OUT, `bench-${stamp}.json`),
  `${JSON.stringify({ environment, results, import: importResult, targets }, null, 2)}\n`,
)
process.stdout.write(`\n${table}\n\nWritten to .bench/bench-${stamp}.{md,json}\n`)

// Rates of failed requests measure nothing: a run where any route failed is a failed run (and CI's
// quick run of the bench checks every route still answers under load).
const failed = results.flatMap((result) =>
  result.routes.filter((r) => r.errors > 0).map((r) => `${result.backend} ${r.route}: ${r.errors} failed`),
)
if (failed.length > 0) {
  process.stderr.write(`bench: requests failed (${failed.join('; ')})\n`)
  process.exitCode = 1
}
