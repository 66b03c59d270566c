import assert from 'node:assert/strict'
import type { AddressInfo } from 'node:net'
import { Readable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import { parse } from 'csv-parse/sync'
import { type Kysely, sql } from 'kysely'
import type { Database } from '../src/db/schema.js'
import { claimJob } from '../src/imports/imports.repository.js'
import { runImportJob, startImportRunner } from '../src/imports/imports.service.js'
import { heapGrowthPercent, manageHeapGrowth } from '../src/shared/heap-growth.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'
import { fillTheDisk } from './helpers/full-disk.js'

interface Job {
  id: string
  status: string
  dry_run: boolean
  mapping: Record<string, string | null>
  bytes: number
  bytes_read: number
  rows_read: number
  created: number
  updated: number
  unchanged: number
  failed: number
  error: string | null
}

/**
 * A 10,000-row export from some other tool, with everything such files hold: a byte order mark,
 * CRLF line ends, people listed twice, numbers and dates that are not, phone numbers that are
 * not, rows naming nobody, and lines whose quoting is broken. The expected outcome of each row is
 * known, so the job's counts and reasons can be checked exactly.
 */
function messyFile() {
  const lines = ['Email,First name,Phone,Score,City,Last seen']
  const expected = { created: 0, updated: 0, failed: 0 }
  const reasons = new Map<number, string>()
  const goodEmails = new Set<string>()
  for (let i = 1; i <= 10_000; i++) {
    const line = i + 1
    if (i % 200 === 0) {
      // Broken quoting: a quote inside an unquoted field.
      lines.push(`broken${i}@example.com,Ab"c,,1,Paris,`)
      expected.failed++
      reasons.set(line, 'Unreadable CSV')
    } else if (i % 100 === 0) {
      lines.push(`bad-score${i}@example.com,Bo,,lots,Paris,`)
      expected.failed++
      reasons.set(line, 'Score: Input should be a valid number')
    } else if (i % 100 === 1 && i > 1) {
      lines.push(`bad-date${i}@example.com,Cy,,3,Paris,yesterday`)
      expected.failed++
      reasons.set(line, 'Last seen: Input should be a valid datetime')
    } else if (i % 250 === 7) {
      lines.push(`bad-phone${i}@example.com,Di,12,3,Paris,`)
      expected.failed++
      reasons.set(line, 'Phone: Input should be a valid phone number')
    } else if (i % 250 === 8) {
      lines.push(',Nobody,,3,Paris,')
      expected.failed++
      reasons.set(line, 'Email: One of email, phone_number or external_id is required')
    } else if (i % 50 === 3) {
      // The same person as the row before (in another case), with a new first name: an update.
      const earlier = i - 1
      lines.push(
        `PERSON${earlier}@Example.com,Renamed ${earlier},,${earlier},"Saint-Denis, Paris",2026-11-01T10:00:00Z`,
      )
      expected.updated++
    } else {
      lines.push(
        `person${i}@example.com,"Name ""${i}""",+1650555${String(i).padStart(4, '0')},${i},Lyon,2026-10-01T08:00:00Z`,
      )
      goodEmails.add(`person${i}@example.com`)
      expected.created++
    }
  }
  return { body: `\uFEFF${lines.join('\r\n')}\r\n`, expected, reasons, goodEmails }
}

const MAPPING = {
  Email: 'email',
  'First name': 'first_name',
  Phone: 'phone_number',
  Score: 'custom_fields.score',
  City: 'user_attributes.city',
  'Last seen': 'last_seen',
}

/** How many contacts an organization has, in the trash or not. */
async function contactsIn(db: Kysely<Database>, orgId: string) {
  const { n } = await db
    .selectFrom('contacts')
    .select((eb) => eb.fn.countAll().as('n'))
    .where('org_id', '=', orgId)
    .executeTakeFirstOrThrow()
  return Number(n)
}

/** Uploads a CSV file's lines to an app's import route; resolves to the queued job's id. */
async function uploadTo(app: TestApp, key: string, fileName: string, lines: readonly string[]) {
  const upload = await app.call(key, {
    method: 'POST',
    url: `/api/v1/contact/import?file_name=${fileName}`,
    headers: { 'content-type': 'text/csv' },
    payload: lines.join('\n'),
  })
  assert.equal(upload.statusCode, 202, upload.body)
  return upload.json().data.id as string
}

for (const backend of BACKENDS) {
  describe(`CSV import and export on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    let other: TestOrg

    before(async () => {
      t = await startTestApp(backend, { importRunner: true, config: { importMaxBytes: 4_000_000 } })
      org = await t.createOrg()
      other = await t.createOrg()
      for (const o of [org, other]) {
        const field = await t.call(o.key, {
          method: 'POST',
          url: '/api/v1/contact_custom_field',
          payload: { custom_field_name: 'score', custom_field_type: 'number' },
        })
        assert.equal(field.statusCode, 201, field.body)
      }
    })
    after(() => t?.close())

    const upload = (body: string, query: Record<string, string> = {}, key = org.key, type = 'text/csv') =>
      t.call(key, {
        method: 'POST',
        url: `/api/v1/contact/import?${new URLSearchParams(query)}`,
        headers: { 'content-type': type },
        payload: body,
      })
    const finished = async (id: string, key = org.key): Promise<Job> => {
      for (let i = 0; i < 1200; i++) {
        const response = await t.call(key, { method: 'GET', url: `/api/v1/contact/import/${id}` })
        assert.equal(response.statusCode, 200, response.body)
        const job = response.json().data as Job
        if (job.status === 'completed' || job.status === 'failed') return job
        await new Promise((resolve) => setTimeout(resolve, 50))
      }
      throw new Error('the import did not finish')
    }
    const importFile = async (body: string, query: Record<string, string> = {}, key = org.key) => {
      const response = await upload(body, query, key)
      assert.equal(response.statusCode, 202, response.body)
      return finished(response.json().data.id, key)
    }
    const contactCount = (orgId: string) => contactsIn(t.database.db, orgId)
    const exportOf = async (query: string, key = org.key) => {
      const response = await t.call(key, { method: 'GET', url: `/api/v1/contact/export${query}` })
      assert.equal(response.statusCode, 200, response.body)
      return response
    }

    test('a messy 10,000-row file: exact counts, a reason for every failed row, and a second run changes nothing', async () => {
      const file = messyFile()
      const total = file.expected.created + file.expected.updated + file.expected.failed
      assert.equal(total, 10_000)

      const dry = await importFile(file.body, { mapping: JSON.stringify(MAPPING), dry_run: 'true' })
      assert.equal(dry.status, 'completed', dry.error ?? '')
      assert.deepEqual(
        { created: dry.created, updated: dry.updated, unchanged: dry.unchanged, failed: dry.failed },
        { ...file.expected, unchanged: 0 },
        'a dry run reports what the import will do',
      )
      assert.equal(await contactCount(org.id), 0, 'a dry run writes no contact')

      const job = await importFile(file.body, { mapping: JSON.stringify(MAPPING), file_name: 'messy.csv' })
      assert.equal(job.status, 'completed', job.error ?? '')
      assert.deepEqual(
        {
          rows_read: job.rows_read,
          created: job.created,
          updated: job.updated,
          unchanged: job.unchanged,
          failed: job.failed,
        },
        { rows_read: 10_000, ...file.expected, unchanged: 0 },
      )
      assert.equal(job.bytes_read, job.bytes)
      assert.equal(await contactCount(org.id), file.expected.created)
      if (backend.name === 'postgres') {
        const { rows } = await sql<{ analyzed: boolean }>`
          select last_analyze is not null as analyzed from pg_stat_user_tables
          where relname = 'contacts' and schemaname = current_schema()`.execute(t.database.db)
        assert.deepEqual(rows, [{ analyzed: true }], 'a large import leaves the planner fresh statistics')
      }

      // What was imported is what the file says, typed by the custom field's definition.
      const person = (
        await t.call(org.key, { method: 'GET', url: '/api/v1/contact?email=person4@example.com' })
      ).json().data.items[0]
      assert.equal(person.first_name, 'Name "4"')
      assert.deepEqual(person.custom_fields, { score: 4 })
      assert.deepEqual(person.user_attributes, { city: 'Lyon' })
      assert.equal(person.channels.telephone, '+16505550004')
      assert.equal(person.last_seen, '2026-10-01T08:00:00Z')
      const renamed = (
        await t.call(org.key, { method: 'GET', url: '/api/v1/contact?email=person2@example.com' })
      ).json().data.items[0]
      assert.equal(renamed.first_name, 'Renamed 2', 'a later row for the same person updates it')
      assert.deepEqual(renamed.user_attributes, { city: 'Saint-Denis, Paris' })
      assert.equal(renamed.channels.telephone, '+16505550002', 'an empty cell keeps the stored value')
      assert.equal(renamed.last_seen, '2026-11-01T10:00:00Z')

      // Every failed row, with its line, its reason and its cells under the file's header.
      const failures = await t.call(org.key, {
        method: 'GET',
        url: `/api/v1/contact/import/${job.id}/failures`,
      })
      assert.equal(failures.statusCode, 200)
      assert.match(String(failures.headers['content-type']), /^text\/csv/)
      const [header, ...rows] = parse(failures.body) as string[][]
      assert.deepEqual(header, ['line', 'reason', ...Object.keys(MAPPING)])
      assert.equal(rows.length, file.expected.failed)
      for (const row of rows) {
        const expected = file.reasons.get(Number(row[0]))
        assert.ok(expected, `line ${row[0]} was not expected to fail: ${row[1]}`)
        assert.ok(row[1]?.startsWith(expected), `line ${row[0]}: "${row[1]}" should start with "${expected}"`)
      }
      const badScore = rows.find((row) => row[1]?.startsWith('Score'))
      assert.equal(badScore?.[5], 'lots', 'a failed row keeps its cells')

      const events = async () =>
        Number(
          (
            await t.database.db
              .selectFrom('contact_events')
              .select((eb) => eb.fn.countAll().as('n'))
              .where('org_id', '=', org.id)
              .executeTakeFirstOrThrow()
          ).n,
        )
      const eventsBefore = await events()
      const again = await importFile(file.body, { mapping: JSON.stringify(MAPPING) })
      assert.deepEqual(
        { created: again.created, updated: again.updated, unchanged: again.unchanged, failed: again.failed },
        {
          created: 0,
          updated: 0,
          unchanged: file.expected.created + file.expected.updated,
          failed: file.expected.failed,
        },
      )
      assert.equal(await events(), eventsBefore, 'the second run records no change at all')
    })

    test('a semicolon-separated file with its delimiter declared, mapped by header, merges objects key by key', async () => {
      const first = await importFile(
        'email;first_name;custom_fields.tier;user_attributes.lang\nsemi@example.com;Sam;gold;fr\n',
        {
          delimiter: ';',
        },
      )
      assert.equal(first.created, 1, first.error ?? '')
      assert.deepEqual(first.mapping, {
        email: 'email',
        first_name: 'first_name',
        'custom_fields.tier': 'custom_fields.tier',
        'user_attributes.lang': 'user_attributes.lang',
      })
      const second = await importFile('E-mail;Notes;custom_fields.plan\nSEMI@example.com;ignored;pro\n', {
        delimiter: ';',
      })
      assert.deepEqual([second.created, second.updated, second.failed], [0, 1, 0])
      assert.deepEqual(second.mapping, {
        'E-mail': 'email',
        Notes: null,
        'custom_fields.plan': 'custom_fields.plan',
      })
      const contact = (
        await t.call(org.key, { method: 'GET', url: '/api/v1/contact?email=semi@example.com' })
      ).json().data.items[0]
      assert.deepEqual(
        contact.custom_fields,
        { tier: 'gold', plan: 'pro' },
        'a column for one key keeps the others',
      )
      assert.equal(contact.first_name, 'Sam', 'a field the file does not name is kept')
    })

    test('refused uploads are clear 4xx and leave no job', async () => {
      const jobsBefore = (
        await t.call(org.key, { method: 'GET', url: '/api/v1/contact/import?limit=1000' })
      ).json().data.items.length
      const missingColumn = await upload('email\na@example.com\n', {
        mapping: JSON.stringify({ Mail: 'email' }),
      })
      assert.equal(missingColumn.statusCode, 422)
      assert.match(missingColumn.json().detail[0].msg, /Mail/)
      const unknownTarget = await upload('email\na@example.com\n', {
        mapping: JSON.stringify({ email: 'mail' }),
      })
      assert.equal(unknownTarget.statusCode, 422)
      assert.deepEqual(unknownTarget.json().detail[0].loc, ['query', 'mapping', 'email'])
      const noIdentity = await upload('name\nAda\n')
      assert.equal(noIdentity.statusCode, 422)
      assert.match(noIdentity.json().detail[0].msg, /email, phone_number or external_id/)
      assert.equal((await upload('')).statusCode, 422)
      const json = await upload('{"email":"a@example.com"}', {}, org.key, 'application/json')
      assert.equal(json.statusCode, 415)
      assert.equal(json.json().code, 'unsupported_media_type')
      const big = await upload(`email\n${'x@example.com\n'.repeat(400_000)}`)
      assert.equal(big.statusCode, 413)
      const readOnly = await upload('email\na@example.com\n', {}, org.readOnlyKey)
      assert.equal(readOnly.statusCode, 403)
      const jobsAfter = (
        await t.call(org.key, { method: 'GET', url: '/api/v1/contact/import?limit=1000' })
      ).json().data.items.length
      assert.equal(jobsAfter, jobsBefore)
      const chunks = await t.database.db.selectFrom('import_chunks').select('job_id').execute()
      assert.deepEqual(chunks, [], 'a refused upload leaves nothing stored')
    })

    test('an upload over a real connection is streamed, in pieces, to the job', async () => {
      const address = await t.app.listen({ port: 0, host: '127.0.0.1' })
      const rows = 40_000
      async function* pieces() {
        yield 'email,first_name\n'
        for (let from = 0; from < rows; from += 1000) {
          let text = ''
          for (let i = from; i < from + 1000; i++) text += `streamed${i}@example.com,S${i}\n`
          yield text
        }
      }
      const response = await fetch(`${address}/api/v1/contact/import?file_name=streamed.csv`, {
        method: 'POST',
        headers: { 'x-api-key': other.key, 'content-type': 'text/csv' },
        body: Readable.toWeb(Readable.from(pieces())) as ReadableStream,
        duplex: 'half',
      } as RequestInit)
      assert.equal(response.status, 202, await response.clone().text())
      const job = await finished(((await response.json()) as { data: { id: string } }).data.id, other.key)
      assert.deepEqual([job.status, job.created, job.failed], ['completed', rows, 0])
      assert.ok(job.bytes > 1 << 20, 'the file spans several stored chunks')
    })

    test('an export runs with the heap let grow as bulk work needs, until it ends or its client goes away', async () => {
      // As the server does at start-up.
      manageHeapGrowth()
      assert.ok(
        (await contactCount(other.id)) >= 40_000,
        'the streamed upload above left 40,000 contacts, more than the connection holds in flight',
      )
      const { port } = t.app.server.address() as AddressInfo
      const exportUrl = `http://127.0.0.1:${port}/api/v1/contact/export?format=csv`
      const abandoned = new AbortController()
      const response = await fetch(exportUrl, {
        headers: { 'x-api-key': other.key },
        signal: abandoned.signal,
      })
      const reader = (response.body as ReadableStream<Uint8Array>).getReader()
      try {
        await reader.read()
        assert.equal(heapGrowthPercent(), 60, 'while the export is being read')
      } finally {
        abandoned.abort()
        await reader.read().catch(() => undefined)
      }
      for (let i = 0; i < 200 && heapGrowthPercent() !== 30; i++) {
        await new Promise((resolve) => setTimeout(resolve, 10))
      }
      assert.equal(heapGrowthPercent(), 30, 'back to the API’s once its client went away')
      const whole = await fetch(exportUrl, { headers: { 'x-api-key': other.key } })
      assert.ok((await whole.text()).length > 1 << 20)
      assert.equal(heapGrowthPercent(), 30, 'back to the API’s once the export ended')
    })

    test('a character cut in two where the file is read in pieces comes through whole', async () => {
      const rows = 2_500
      const nameOf = (i: number) => `${'日本'.repeat(8)} Zoë ${i}`
      const fileWith = (padding: string) =>
        `email,first_name\n${Array.from({ length: rows }, (_, i) => `${i === 0 ? padding : ''}cut${i}@example.com,${nameOf(i)}`).join('\n')}\n`
      // The parser is given the file 64 KiB at a time: the byte at 64 KiB is made to fall inside a character.
      const padding = ['', 'x', 'xx'].find((pad) => (Buffer.from(fileWith(pad))[1 << 16] ?? 0) >> 6 === 0b10)
      assert.notEqual(padding, undefined)
      const job = await importFile(fileWith(padding as string), {}, other.key)
      assert.deepEqual([job.status, job.created, job.failed], ['completed', rows, 0])
      const stored = await t.database.db
        .selectFrom('contacts')
        .select(['email', 'first_name'])
        .where('org_id', '=', other.id)
        .where('email', 'like', '%cut%@example.com')
        .execute()
      assert.equal(stored.length, rows)
      for (const { email, first_name } of stored) {
        const i = Number(/cut(\d+)@/.exec(email as string)?.[1])
        assert.equal(first_name, nameOf(i))
      }
    })

    test("one organization never sees another's jobs or failed rows", async () => {
      const job = await importFile('email\nmine@example.com\n')
      for (const url of [`/api/v1/contact/import/${job.id}`, `/api/v1/contact/import/${job.id}/failures`]) {
        const response = await t.call(other.key, { method: 'GET', url })
        assert.equal(response.statusCode, 404)
        assert.equal(response.json().code, 'import_not_found')
      }
      const list = (await t.call(other.key, { method: 'GET', url: '/api/v1/contact/import' })).json().data
        .items as Job[]
      assert.ok(!list.some((item) => item.id === job.id))
    })

    test('a job is resumed after its last committed batch, whether handed back or taken from a dead runner', async () => {
      // An app without a runner of its own: this test is the runner, so nothing races it.
      const solo = await startTestApp(backend)
      try {
        const owner = await solo.createOrg()
        const db = solo.database.db
        const lines = ['email,first_name']
        for (let i = 0; i < 3500; i++) lines.push(`resume${i}@example.com,R${i}`)
        lines.push('not-a-number@example.com,"broken')
        await uploadTo(solo, owner.key, 'resume.csv', lines)
        const at = (ms = 0) => new Date(Date.now() + ms).toISOString()
        const claim = (token: string, ms = 0) => claimJob(db, at(ms), at(ms + 60_000), token)

        // A runner that stops (its process is shutting down) hands the job back after a batch.
        const first = await claim('first')
        assert.ok(first)
        const handedBack = await runImportJob(db, first, 'first', { shouldStop: () => true })
        assert.deepEqual([handedBack.status, handedBack.rows_read], ['running', 1000])

        // A runner that dies keeps the job until its lease runs out; then another takes it over.
        const dying = await claim('dying')
        assert.ok(dying, 'a job handed back is taken at once')
        assert.equal(dying.lines_done, 1001)
        const held = await runImportJob(db, dying, 'dying', { shouldStop: () => true })
        assert.equal(held.rows_read, 2000)
        await db
          .updateTable('import_jobs')
          .set({ lease_token: 'dying', lease_until: at(60_000) })
          .execute()
        assert.equal(await claim('early'), undefined, 'a job under a live lease is not taken')
        const taken = await claim('taker', 120_000)
        assert.ok(taken, 'a job whose lease ran out is taken over')
        assert.equal(taken.lines_done, 2001)
        const done = await runImportJob(db, taken, 'taker')
        assert.equal(done.status, 'completed', done.error ?? '')
        assert.deepEqual([done.rows_read, done.created, done.updated, done.failed], [3501, 3500, 0, 1])
        assert.equal(await contactsIn(db, owner.id), 3500, 'every row once: none skipped, none applied twice')
        const failures = await db.selectFrom('import_failures').select('line').execute()
        assert.deepEqual(failures, [{ line: 3502 }])
      } finally {
        await solo.close()
      }
    })

    test("an import runs with the heap let grow as an import needs, and serving goes back to the API's", async () => {
      // As the server does at start-up.
      manageHeapGrowth()
      assert.equal(heapGrowthPercent(), 30)
      const solo = await startTestApp(backend)
      const runner = { stop: async () => {} }
      try {
        const owner = await solo.createOrg()
        const lines = ['email,first_name']
        for (let i = 0; i < 2500; i++) lines.push(`heap${i}@example.com,H${i}`)
        const jobId = await uploadTo(solo, owner.key, 'heap.csv', lines)
        const duringBatches: (number | null)[] = []
        Object.assign(
          runner,
          startImportRunner(solo.database.db, solo.app.log, {
            pollIntervalMs: 20,
            leaseMs: 60_000,
            onBatch: () => duringBatches.push(heapGrowthPercent()),
          }),
        )
        let job = (await solo.api(owner.key, 'GET', `/contact/import/${jobId}`)).json().data as Job
        for (let i = 0; i < 400 && job.status !== 'completed'; i++) {
          await new Promise((resolve) => setTimeout(resolve, 25))
          job = (await solo.api(owner.key, 'GET', `/contact/import/${jobId}`)).json().data as Job
        }
        assert.equal(job.status, 'completed', job.error ?? '')
        assert.ok(duringBatches.length >= 2, 'the import ran in several batches')
        assert.deepEqual(new Set(duringBatches), new Set([60]), 'every batch ran with 60%')
        assert.equal(heapGrowthPercent(), 30, 'back to the API’s once the import ended')
      } finally {
        await runner.stop()
        await solo.close()
      }
    })

    test('a job the database cannot take (a full disk) waits, says why, and goes on by itself once it can', async () => {
      const solo = await startTestApp(backend)
      const runner = { stop: async () => {} }
      try {
        const owner = await solo.createOrg()
        const db = solo.database.db
        const lines = ['email,first_name']
        for (let i = 0; i < 2500; i++) lines.push(`waits${i}@example.com,W${i}`)
        const jobId = await uploadTo(solo, owner.key, 'waits.csv', lines)
        const jobNow = async () =>
          (await solo.api(owner.key, 'GET', `/contact/import/${jobId}`)).json().data as Job
        // The file is stored; now the database refuses to grow, as on a full disk.
        const makeRoom = await fillTheDisk(solo.database)
        Object.assign(
          runner,
          startImportRunner(db, solo.app.log, {
            pollIntervalMs: 20,
            leaseMs: 60_000,
            retryBaseMs: 40,
            retryMaxDelayMs: 80,
          }),
        )
        let waiting = await jobNow()
        for (let i = 0; i < 400 && waiting.error === null; i++) {
          await new Promise((resolve) => setTimeout(resolve, 25))
          waiting = await jobNow()
        }
        assert.equal(waiting.status, 'running')
        assert.match(waiting.error ?? '', /no room left.*goes on by itself/)
        assert.equal(waiting.created, 0)
        // It keeps waiting, and failing nothing, while the disk stays full.
        await new Promise((resolve) => setTimeout(resolve, 300))
        const still = await jobNow()
        assert.deepEqual([still.status, still.created, still.failed], ['running', 0, 0])

        await makeRoom()
        let done = await jobNow()
        for (let i = 0; i < 400 && done.status === 'running'; i++) {
          await new Promise((resolve) => setTimeout(resolve, 25))
          done = await jobNow()
        }
        assert.equal(done.status, 'completed', done.error ?? '')
        assert.equal(done.error, null)
        assert.deepEqual([done.rows_read, done.created, done.updated, done.failed], [2500, 2500, 0, 0])
        assert.equal(await contactsIn(db, owner.id), 2500)
      } finally {
        await runner.stop()
        await solo.close()
      }
    })

    test('CSV export has a stable column order and imports back as the same people; NDJSON follows filters', async () => {
      const csv = await exportOf('')
      assert.match(String(csv.headers['content-type']), /^text\/csv/)
      assert.match(
        String(csv.headers['content-disposition']),
        /attachment; filename="contacts-\d{4}-\d{2}-\d{2}\.csv"/,
      )
      const [header, ...rows] = parse(csv.body) as string[][]
      assert.deepEqual(header, [
        'id',
        'first_name',
        'last_name',
        'email',
        'phone_number',
        'external_id',
        'channels',
        'user_attributes',
        'last_seen',
        'last_sent',
        'first_assistant_id',
        'last_assistant_id',
        'first_widget_id',
        'last_widget_id',
        'created_at',
        'updated_at',
        'custom_fields.score',
        'custom_fields',
      ])
      // Read in pages of a few hundred: every contact once, none lost or repeated at a page's edge.
      assert.ok(rows.length > 1000, `${rows.length} contacts: enough for several pages`)
      assert.equal(rows.length, await contactCount(org.id))
      assert.equal(new Set(rows.map((row) => row[0])).size, rows.length)

      const target = await t.createOrg()
      await t.call(target.key, {
        method: 'POST',
        url: '/api/v1/contact_custom_field',
        payload: { custom_field_name: 'score', custom_field_type: 'number' },
      })
      const imported = await importFile(csv.body, {}, target.key)
      assert.equal(imported.status, 'completed', imported.error ?? '')
      assert.deepEqual([imported.created, imported.failed], [rows.length, 0])
      const [, ...back] = parse((await exportOf('?sort=email', target.key)).body) as string[][]
      const [, ...original] = parse((await exportOf('?sort=email')).body) as string[][]
      // Everything but the ids and times the new organization gave them.
      const comparable = (row: string[]) => [...row.slice(1, 14), ...row.slice(16)]
      assert.deepEqual(back.map(comparable), original.map(comparable))

      const ndjson = await exportOf('?format=ndjson&custom_fields.score[lt]=10&sort=email')
      assert.match(String(ndjson.headers['content-type']), /^application\/x-ndjson/)
      const lines = ndjson.body
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as { email: string })
      const expected = (
        await t.call(org.key, {
          method: 'GET',
          url: '/api/v1/contact?custom_fields.score[lt]=10&sort=email&limit=1000',
        })
      ).json().data.items as { email: string }[]
      assert.ok(expected.length > 0)
      assert.deepEqual(
        lines.map((line) => line.email),
        expected.map((item) => item.email),
      )
      const badFilter = await t.call(org.key, { method: 'GET', url: '/api/v1/contact/export?colour=red' })
      assert.equal(badFilter.statusCode, 422)
    })
  })
}
