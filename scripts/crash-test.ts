/**
 * Crash test: start the real server as its own process, drive concurrent creates and updates at
 * it, kill -9 it mid-load several times, restart it, and check that every write acknowledged with
 * a 2xx is present and intact, and that the database passes its integrity check.
 *
 *   node dist/scripts/crash-test.js [sqlite|postgres ...]    (both by default)
 *
 * PostgreSQL is TEST_POSTGRES_URL (default: the local server); each run works in a schema of its
 * own and drops it. Prints "N passed, N failed" and exits non-zero on any failure.
 */
import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import { createApiKey } from '../src/api-keys/api-keys.service.js'
import { openDatabase } from '../src/db/database.js'
import { migrateToLatest } from '../src/db/migrations.js'
import { createOrganization } from '../src/organizations/organizations.service.js'
import { startServerProcess } from '../test/helpers/processes.js'
import { scratchDatabase } from '../test/helpers/scratch-database.js'

const ROUNDS = 4
const WORKERS = 12
const LOAD_MS = 1500

interface Ledger {
  /** contact id → the last counter acknowledged for it, and whether one more write was in flight. */
  contacts: Map<string, { acked: number; inFlight: boolean; email: string }>
}

async function worker(url: string, key: string, ledger: Ledger, stopAt: number, id: number) {
  const headers = { 'x-api-key': key, 'content-type': 'application/json' }
  let mine: string | null = null
  let counter = 0
  while (Date.now() < stopAt) {
    try {
      if (mine === null) {
        const email = `w${id}-${randomBytes(4).toString('hex')}@crash.example`
        const response = await fetch(`${url}/api/v1/contact`, {
          method: 'POST',
          headers,
          body: JSON.stringify({ email, first_name: 'n0', custom_fields: { n: 0 } }),
        })
        if (response.status !== 201) throw new Error(`create answered ${response.status}`)
        mine = ((await response.json()) as { data: { id: string } }).data.id
        ledger.contacts.set(mine, { acked: 0, inFlight: false, email })
        counter = 0
        continue
      }
      const entry = ledger.contacts.get(mine)
      if (!entry) throw new Error('lost track of a contact')
      counter += 1
      entry.inFlight = true
      const response = await fetch(`${url}/api/v1/contact/${mine}`, {
        method: 'PUT',
        headers,
        body: JSON.stringify({ first_name: `n${counter}`, custom_fields: { n: counter } }),
      })
      if (response.status !== 200) throw new Error(`update answered ${response.status}`)
      entry.acked = counter
      entry.inFlight = false
      if (counter >= 5) mine = null
    } catch {
      // The server was killed under us: whatever was not acknowledged may or may not have landed.
      return
    }
  }
}

async function runBackend(name: 'sqlite' | 'postgres'): Promise<string[]> {
  const failures: string[] = []
  const scratch = await scratchDatabase(name, 'contacts-crash')
  const databaseUrl = scratch.url
  try {
    const setup = openDatabase(databaseUrl)
    await migrateToLatest(setup)
    const org = await createOrganization(setup.db, 'crash')
    const { key } = await createApiKey(setup.db, { orgId: org.id, name: 'crash', role: 'full_access' })
    await setup.close()

    const ledger: Ledger = { contacts: new Map() }
    for (let round = 1; round <= ROUNDS; round++) {
      const server = await startServerProcess({
        DATABASE_URL: databaseUrl,
        LOG_LEVEL: 'info',
        RATE_LIMIT_PER_KEY: '1000000000',
        RATE_LIMIT_PER_ADDRESS: '1000000000',
      })
      const stopAt = Date.now() + LOAD_MS * 4
      const load = Promise.all(
        Array.from({ length: WORKERS }, (_, i) => worker(server.url, key, ledger, stopAt, i)),
      )
      await new Promise((resolve) => setTimeout(resolve, LOAD_MS + Math.random() * 500))
      server.process.kill('SIGKILL')
      await load
      const exited = () => server.process.exitCode !== null || server.process.signalCode !== null
      if (!exited()) await new Promise((resolve) => server.process.once('exit', resolve))
      process.stdout.write(
        `${name}: round ${round} killed with ${ledger.contacts.size} acknowledged contacts so far\n`,
      )
    }

    const check = openDatabase(databaseUrl)
    try {
      const rows = await check.db
        .selectFrom('contacts')
        .select(['id', 'first_name', 'email', 'custom_fields', 'deleted_at'])
        .where('org_id', '=', org.id)
        .execute()
      const stored = new Map(rows.map((row) => [row.id, row]))
      for (const [id, entry] of ledger.contacts) {
        const row = stored.get(id)
        if (!row) {
          failures.push(`${name}: acknowledged contact ${id} is missing`)
          continue
        }
        const fields =
          typeof row.custom_fields === 'string' ? JSON.parse(row.custom_fields) : row.custom_fields
        const counter = Number(fields.n)
        const allowed = entry.inFlight ? [entry.acked, entry.acked + 1] : [entry.acked]
        if (!allowed.includes(counter) || row.first_name !== `n${counter}`) {
          failures.push(
            `${name}: contact ${id} holds n=${counter} (${row.first_name}); acknowledged ${entry.acked}`,
          )
        }
        if (row.email !== entry.email) failures.push(`${name}: contact ${id} lost its email`)
      }
      if (ledger.contacts.size < ROUNDS * WORKERS)
        failures.push(`${name}: too little load reached the server`)
      if (name === 'sqlite') {
        const { rows: integrity } = await sql<{ integrity_check: string }>`pragma integrity_check`.execute(
          check.db,
        )
        if (integrity[0]?.integrity_check !== 'ok')
          failures.push(`sqlite: integrity_check says ${JSON.stringify(integrity)}`)
        const { rows: keys } = await sql`pragma foreign_key_check`.execute(check.db)
        if (keys.length > 0) failures.push(`sqlite: foreign_key_check found ${keys.length} broken references`)
      }
      // On both backends: every identity belongs to a live contact, and every live contact with an
      // email holds that email as an identity.
      const { rows: orphans } = await sql<{ n: number | string }>`
        select count(*) as n from contact_identities i
        left join contacts c on c.org_id = i.org_id and c.id = i.contact_id
        where c.id is null or c.deleted_at is not null`.execute(check.db)
      if (Number(orphans[0]?.n) !== 0)
        failures.push(`${name}: ${orphans[0]?.n} identities point at no live contact`)
      const { rows: unindexed } = await sql<{ n: number | string }>`
        select count(*) as n from contacts c
        where c.email_normalized is not null and c.deleted_at is null and not exists (
          select 1 from contact_identities i
          where i.org_id = c.org_id and i.kind = 'email' and i.value = c.email_normalized and i.contact_id = c.id)`.execute(
        check.db,
      )
      if (Number(unindexed[0]?.n) !== 0)
        failures.push(`${name}: ${unindexed[0]?.n} contacts without their email identity`)
      process.stdout.write(
        `${name}: ${ledger.contacts.size} acknowledged contacts checked after ${ROUNDS} kills\n`,
      )
    } finally {
      await check.close()
    }
  } finally {
    await scratch.drop()
  }
  return failures
}

const backends = (process.argv.slice(2).length ? process.argv.slice(2) : ['sqlite', 'postgres']) as (
  | 'sqlite'
  | 'postgres'
)[]
let passed = 0
let failed = 0
for (const backend of backends) {
  const failures = await runBackend(backend)
  for (const failure of failures) process.stdout.write(`FAIL ${failure}\n`)
  if (failures.length === 0) passed += 1
  else failed += 1
}
process.stdout.write(`crash test: ${passed} passed, ${failed} failed\n`)
process.exitCode = failed > 0 ? 1 : 0
