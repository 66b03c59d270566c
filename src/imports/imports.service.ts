import { randomUUID } from 'node:crypto'
import { Readable } from 'node:stream'
import type { CsvError, Info } from 'csv-parse'
import type { FastifyBaseLogger } from 'fastify'
import type { Kysely } from 'kysely'
import { applyPreparedBatch, type BatchItemResult, prepareBatch } from '../contacts/batch.service.js'
import { UpsertBody } from '../contacts/contacts.schemas.js'
import { normalizeEmail } from '../contacts/identities.js'
import { normalizePhone } from '../contacts/phone.js'
import { findCustomFieldTypesOf } from '../custom-fields/custom-fields.repository.js'
import { isDatabaseUnavailable, isPoolExhausted, isStorageFull } from '../db/errors.js'
import type { Database, ImportJobRow } from '../db/schema.js'
import { AppError, ValidationFailedError } from '../errors.js'
import type { Actor } from '../events/events.service.js'
import { validateBody } from '../http/validation.js'
import { retryDelayMs } from '../shared/backoff.js'
import { type CursorCodec, queryKeyOf, readTimeAndId, timeAndId } from '../shared/cursor.js'
import { withBulkHeapGrowth } from '../shared/heap-growth.js'
import { uuidv7 } from '../shared/ids.js'
import { cursorPageOf } from '../shared/list-paging.js'
import { formatNullableTimestamp, formatTimestamp, nowTimestamp } from '../shared/time.js'
import * as imports from './imports.repository.js'
import type { ImportJob, ImportListQuery, ImportQuery } from './imports.schemas.js'
import {
  bodyOfRow,
  headerOfLocation,
  type MappingSpec,
  mappingIssues,
  type RowPlan,
  resolveMapping,
  rowPlan,
} from './mapping.js'

/** An import writing at least this many contacts refreshes the planner's statistics when it ends. */
const BULK_WRITE_ROWS = 5_000

/** The upload is kept in pieces of this size: enough to make few rows, small enough to hold one. */
const CHUNK_BYTES = 1 << 20
/**
 * The parser is given a stored chunk in slices of this size: it turns what it is given into rows
 * in one go, and a whole chunk (some 14,000 rows) held the thread for up to 200 ms, and in memory.
 */
const PARSE_SLICE_BYTES = 1 << 16
/** Rows applied per transaction (one commit, one progress update). */
const BATCH_ROWS = 1000

export function toImportJob(row: ImportJobRow): ImportJob {
  return {
    id: row.id,
    status: row.status,
    dry_run: row.dry_run === 1,
    file_name: row.file_name,
    delimiter: row.delimiter,
    mapping: JSON.parse(row.mapping) as MappingSpec,
    bytes: Number(row.bytes),
    bytes_read: Number(row.bytes_read),
    // Every row read is counted under exactly one outcome.
    rows_read: row.created + row.updated + row.unchanged + row.failed,
    created: row.created,
    updated: row.updated,
    unchanged: row.unchanged,
    failed: row.failed,
    error: row.error,
    created_at: formatTimestamp(row.created_at),
    started_at: formatNullableTimestamp(row.started_at),
    finished_at: formatNullableTimestamp(row.finished_at),
  }
}

const importNotFound = () => new AppError('import_not_found', 'Import not found')

function mappingOf(query: ImportQuery): MappingSpec {
  if (query.mapping === undefined) return {}
  let spec: unknown
  try {
    spec = JSON.parse(query.mapping)
  } catch {
    spec = undefined
  }
  const issues = mappingIssues(spec, ['query', 'mapping'])
  if (issues.length > 0) throw new ValidationFailedError(issues)
  return spec as MappingSpec
}

/**
 * The CSV parser and writer, loaded by the first import that needs them rather than by every
 * server: about 1 MB of heap together.
 */
const csv = async () => {
  const [{ parse }, { parse: parseSync }, { stringify }] = await Promise.all([
    import('csv-parse'),
    import('csv-parse/sync'),
    import('csv-stringify/sync'),
  ])
  return { parse, parseSync, stringify }
}

/** The file's header line, read from the start of the file. */
async function headerOf(start: Buffer, delimiter: string): Promise<string[]> {
  const { parseSync } = await csv()
  let records: string[][]
  try {
    records = parseSync(start, {
      bom: true,
      delimiter,
      to: 1,
      skip_empty_lines: true,
      relax_column_count: true,
    })
  } catch (error) {
    throw invalidFile(`The header line cannot be read as CSV: ${(error as Error).message}`)
  }
  const [header] = records
  if (!header || header.every((cell) => cell.trim() === '')) throw invalidFile('The file has no header line')
  return header
}

const invalidFile = (msg: string) => new ValidationFailedError([{ loc: ['body'], msg, type: 'value_error' }])

export interface ReceiveOptions {
  maxBytes: number
}

/**
 * Receives an upload as a job: the body is streamed into the database a chunk at a time (never
 * held whole), its header is checked against the mapping, and the job is queued. Until then
 * the job is `receiving`; an upload that fails leaves nothing behind.
 */
export async function receiveImport(
  db: Kysely<Database>,
  actor: Actor,
  body: AsyncIterable<Uint8Array>,
  query: ImportQuery,
  { maxBytes }: ReceiveOptions,
): Promise<ImportJob> {
  const spec = mappingOf(query)
  const delimiter = query.delimiter ?? ','
  const id = uuidv7()
  await imports.insertJob(db, {
    org_id: actor.orgId,
    id,
    status: 'receiving',
    dry_run: query.dry_run ? 1 : 0,
    file_name: query.file_name ?? null,
    delimiter,
    mapping: JSON.stringify(spec),
    bytes: 0,
    bytes_read: 0,
    lines_done: 0,
    created: 0,
    updated: 0,
    unchanged: 0,
    failed: 0,
    error: null,
    actor_type: actor.actorType,
    actor_id: actor.actorId,
    created_at: nowTimestamp(),
    started_at: null,
    finished_at: null,
    lease_until: null,
    lease_token: null,
  })
  try {
    let pending: Buffer[] = []
    let pendingBytes = 0
    let bytes = 0
    let seq = 0
    let mapping: MappingSpec | null = null
    const flush = async () => {
      if (pendingBytes === 0) return
      const data = Buffer.concat(pending, pendingBytes)
      if (mapping === null) {
        const resolved = resolveMapping(await headerOf(data, delimiter), spec)
        if (typeof resolved === 'string') {
          throw new ValidationFailedError([{ loc: ['query', 'mapping'], msg: resolved, type: 'value_error' }])
        }
        mapping = resolved
      }
      await imports.insertChunk(db, actor.orgId, id, seq++, data)
      pending = []
      pendingBytes = 0
    }
    for await (const piece of body) {
      bytes += piece.byteLength
      if (bytes > maxBytes) {
        throw new AppError('payload_too_large', `An import file may hold at most ${maxBytes} bytes`)
      }
      pending.push(Buffer.from(piece.buffer, piece.byteOffset, piece.byteLength))
      pendingBytes += piece.byteLength
      if (pendingBytes >= CHUNK_BYTES) await flush()
    }
    await flush()
    if (mapping === null) throw invalidFile('The file is empty')
    const queued = await db
      .updateTable('import_jobs')
      .set({ status: 'queued', bytes, mapping: JSON.stringify(mapping) })
      .where('org_id', '=', actor.orgId)
      .where('id', '=', id)
      .returningAll()
      .executeTakeFirstOrThrow()
    return toImportJob(queued)
  } catch (error) {
    await imports.deleteJob(db, actor.orgId, id)
    throw error
  }
}

export async function getImportJob(db: Kysely<Database>, orgId: string, id: string): Promise<ImportJob> {
  const row = await imports.findJob(db, orgId, id.toLowerCase())
  if (!row) throw importNotFound()
  return toImportJob(row)
}

export async function listImportJobs(
  db: Kysely<Database>,
  cursors: () => Promise<CursorCodec>,
  orgId: string,
  query: ImportListQuery,
) {
  const codec = await cursors()
  const queryKey = queryKeyOf([orgId, 'imports'])
  const after = query.cursor === undefined ? null : readTimeAndId(codec, queryKey, query.cursor)
  const rows = await imports.listJobs(db, orgId, query.limit + 1, after)
  return cursorPageOf(rows, query.limit, toImportJob, (last) =>
    codec.encode(queryKey, timeAndId(last.created_at, last.id)),
  )
}

/**
 * The rows of a job that were not imported, as CSV: the line of the file, the reason, then the
 * row's cells under the file's own header, so that the file can be fixed and imported again.
 * Read a page at a time, so any number of failures is served in constant memory.
 */
export async function* failedRowsCsv(
  db: Kysely<Database>,
  orgId: string,
  id: string,
): AsyncGenerator<string> {
  const job = await imports.findJob(db, orgId, id.toLowerCase())
  if (!job) throw importNotFound()
  const headers = Object.keys(JSON.parse(job.mapping) as MappingSpec)
  const { stringify } = await csv()
  yield stringify([['line', 'reason', ...headers]])
  let after = 0
  for (;;) {
    const rows = await imports.failuresAfter(db, orgId, job.id, after, 1000)
    if (rows.length === 0) return
    yield stringify(
      rows.map((row) => [
        String(row.line),
        row.reason,
        // Cells under the file's header, as many as it has columns (none for an unreadable line).
        ...headers.map((_header, index) =>
          row.cells === null ? '' : ((JSON.parse(row.cells) as string[])[index] ?? ''),
        ),
      ]),
    )
    after = rows[rows.length - 1]?.line ?? after
  }
}

class LostLease extends Error {}

export interface RowOutcomes {
  created: number
  updated: number
  unchanged: number
  failed: number
}

export interface RunHooks {
  /** Called after each batch is committed, with what it did (for metrics and progress bars). */
  onBatch?: (outcomes: RowOutcomes, job: ImportJob) => void
  /** Checked between batches: true hands the job back (the process is stopping). */
  shouldStop?: () => boolean
  /** How long the job is held between two progress reports (60 s by default). */
  leaseMs?: number
}

/** Streams a job's stored upload back, a chunk at a time. */
async function* storedUpload(db: Kysely<Database>, job: ImportJobRow): AsyncGenerator<Uint8Array> {
  for (let seq = 0; ; seq++) {
    const data = await imports.findChunk(db, job.org_id, job.id, seq)
    if (data === undefined) return
    for (let at = 0; at < data.byteLength; at += PARSE_SLICE_BYTES)
      yield data.subarray(at, at + PARSE_SLICE_BYTES)
  }
}

interface PendingFailure {
  line: number
  cells: string | null
  reason: string
}

/** Why an upsert refused a row, in words that name the file's columns. */
function reasonOf(plan: RowPlan, error: NonNullable<BatchItemResult['error']>): string {
  if (Array.isArray(error.detail)) {
    return (error.detail as { loc: (string | number)[]; msg: string }[])
      .map((issue) => {
        const inside = issue.loc.slice(3)
        return `${headerOfLocation(plan, inside) ?? inside.join('.')}: ${issue.msg}`
      })
      .join('; ')
  }
  const held = error.existing_id ? ` (contact ${error.existing_id})` : ''
  return `${String(error.detail)}${held}`
}

/** The identities a row would create a contact with, to tell, in a dry run, a repeat from a new person. */
function identityKeysOf(body: Record<string, unknown>): string[] {
  const keys: string[] = []
  const email = typeof body.email === 'string' ? normalizeEmail(body.email) : null
  if (email) keys.push(`email:${email}`)
  const phone = typeof body.phone_number === 'string' ? normalizePhone(body.phone_number) : null
  if (phone) keys.push(`phone:${phone}`)
  if (typeof body.external_id === 'string' && body.external_id) keys.push(`external_id:${body.external_id}`)
  return keys
}

/**
 * The rows of a batch grouped by person (rows sharing an email, phone number or external id),
 * each group's rows folded in file order into one upsert: later cells win, objects merge key by
 * key. Applying a person once with the net result, instead of row after row, is what lets a file
 * that lists someone twice with different values be imported again without changing anything.
 * A row that does not validate on its own stays alone, so that it fails alone.
 */
async function personsOf(bodies: readonly Record<string, unknown>[]) {
  const parent = bodies.map((_body, index) => index)
  const root = (index: number): number => {
    let at = index
    while (parent[at] !== at) at = parent[at] as number
    parent[index] = at
    return at
  }
  const owner = new Map<string, number>()
  for (const [index, body] of bodies.entries()) {
    // Validating a row and parsing its phone number take tens of microseconds: the batch being
    // applied meanwhile gets the thread between slices, for its next statement.
    if (index % 50 === 49) await new Promise(setImmediate)
    if (validateBody(UpsertBody, body).length > 0) continue
    for (const key of identityKeysOf(body)) {
      const other = owner.get(key)
      if (other === undefined) owner.set(key, index)
      else parent[root(index)] = root(other)
    }
  }
  const groups = new Map<number, { members: number[]; body: Record<string, unknown> }>()
  for (const [index, body] of bodies.entries()) {
    const group = groups.get(root(index))
    if (!group) {
      groups.set(root(index), { members: [index], body })
      continue
    }
    group.members.push(index)
    const merged: Record<string, unknown> = { ...group.body }
    for (const [field, value] of Object.entries(body)) {
      const earlier = merged[field]
      merged[field] =
        typeof value === 'object' && value !== null && typeof earlier === 'object' && earlier !== null
          ? { ...earlier, ...value }
          : value
    }
    group.body = merged
  }
  return [...groups.values()]
}

/**
 * Applies a job's file, a batch of rows per transaction, to the end. Each batch commits its rows,
 * its failed rows and the job's progress together, so a job resumed after a crash goes on from
 * exactly where the last commit left it. Rows match existing contacts by email, phone number or
 * external id; objects are merged key by key, and a contact the row would not change is left
 * untouched, so that importing a file a second time changes nothing.
 */
export async function runImportJob(
  db: Kysely<Database>,
  job: ImportJobRow,
  token: string,
  hooks: RunHooks = {},
): Promise<ImportJob> {
  const actor: Actor = { orgId: job.org_id, actorType: job.actor_type, actorId: job.actor_id }
  const dryRun = job.dry_run === 1
  const customFieldTypes = await findCustomFieldTypesOf(db, job.org_id)
  const mapping = JSON.parse(job.mapping) as MappingSpec
  const resumeAfter = job.lines_done
  let progress = {
    bytes_read: Number(job.bytes_read),
    lines_done: job.lines_done,
    created: job.created,
    updated: job.updated,
    unchanged: job.unchanged,
    failed: job.failed,
  }
  const leaseMs = hooks.leaseMs ?? 60_000
  const leaseUntil = () => new Date(Date.now() + leaseMs).toISOString()
  const unreadable: PendingFailure[] = []
  const wouldCreate = new Set<string>()
  const { parse } = await csv()
  const parser = parse({
    bom: true,
    delimiter: job.delimiter,
    skip_empty_lines: true,
    skip_records_with_error: true,
    info: true,
    on_skip: (error: CsvError | undefined) => {
      if (!error) return
      const line = Number((error as CsvError & { lines?: number }).lines ?? 0)
      if (line <= resumeAfter) return
      const record = (error as CsvError & { record?: unknown }).record
      unreadable.push({
        line,
        cells: Array.isArray(record) ? JSON.stringify(record) : null,
        reason: `Unreadable CSV: ${error.message}`,
      })
    },
  })
  const source = Readable.from(storedUpload(db, job))
  source.on('error', (error) => parser.destroy(error))
  source.pipe(parser)

  let plan: RowPlan | null = null
  let batch: { line: number; cells: string[] }[] = []

  // PostgreSQL plans the lookup of each batch's identities from the organization's share of the
  // tables at their last ANALYZE. An organization loading its first file into tables that others
  // fill is a few rows there until the next one, which autovacuum runs only once the tables as a
  // whole have grown by a tenth, and a server's round (db/planner-statistics.ts) only where a
  // server runs, not in `contacts import`: until then every lookup hashed all the identities the
  // organization held, and each batch cost more than the one before. So the import refreshes the
  // statistics itself each time the contacts it created double, from BULK_WRITE_ROWS on, beside
  // the batches (a few ANALYZEs for a million rows).
  let statisticsDueAt = job.created + BULK_WRITE_ROWS
  let refreshingStatistics: Promise<void> = Promise.resolve()
  const keepStatisticsCurrent = () => {
    if (dryRun || progress.created < statisticsDueAt) return
    statisticsDueAt = progress.created * 2
    // Only a plan depends on it: a refresh that fails leaves the import as it was.
    refreshingStatistics = refreshingStatistics
      .then(() => imports.refreshPlannerStatistics(db))
      .catch(() => {})
  }

  /**
   * Turns the rows read so far into a prepared batch (all in memory) and returns what applies it
   * to the database, or null when there is nothing to apply.
   */
  const stage = async (bytesRead: number, linesDone: number): Promise<(() => Promise<void>) | null> => {
    if (plan === null) return null
    const rowPlanNow = plan
    const items: { line: number; cells: string[]; body: Record<string, unknown> }[] = []
    const failures: PendingFailure[] = unreadable.splice(0)
    for (const [position, row] of batch.entries()) {
      // The batch being applied meanwhile waits for the thread between its statements.
      if (position % 50 === 49) await new Promise(setImmediate)
      const mapped = bodyOfRow(rowPlanNow, row.cells)
      if ('problem' in mapped)
        failures.push({ line: row.line, cells: JSON.stringify(row.cells), reason: mapped.problem })
      else items.push({ ...row, body: mapped.body })
    }
    batch = []
    const persons = await personsOf(items.map((item) => item.body))
    const record = async (trx: Kysely<Database>, results: readonly BatchItemResult[]) => {
      const outcomes: RowOutcomes = { created: 0, updated: 0, unchanged: 0, failed: 0 }
      const rowFailures = [...failures]
      for (const result of results) {
        const person = persons[result.index]
        if (!person) continue
        let status = result.status
        if (status === 'created' && dryRun) {
          const keys = identityKeysOf(person.body)
          if (keys.some((key) => wouldCreate.has(key))) status = 'updated'
          for (const key of keys) wouldCreate.add(key)
        }
        for (const [position, member] of person.members.entries()) {
          const item = items[member]
          if (!item) continue
          if (result.status === 'error' && result.error) {
            rowFailures.push({
              line: item.line,
              cells: JSON.stringify(item.cells),
              reason: reasonOf(rowPlanNow, result.error),
            })
          } else if (status !== 'error') {
            // A later row for the person updates what the earlier one created.
            outcomes[position > 0 && status === 'created' ? 'updated' : status]++
          }
        }
      }
      outcomes.failed = await imports.insertFailures(
        trx,
        rowFailures.map((failure) => ({ org_id: job.org_id, job_id: job.id, ...failure })),
      )
      const next = {
        bytes_read: bytesRead,
        lines_done: linesDone,
        created: progress.created + outcomes.created,
        updated: progress.updated + outcomes.updated,
        unchanged: progress.unchanged + outcomes.unchanged,
        failed: progress.failed + outcomes.failed,
      }
      if (!(await imports.recordProgress(trx, job, token, next, leaseUntil()))) throw new LostLease()
      return { next, outcomes }
    }
    const options = { mode: { mergeObjects: true, skipUnchanged: true }, customFieldTypes, dryRun }
    const prepared =
      items.length > 0
        ? await prepareBatch(
            db,
            actor,
            persons.map((person) => person.body),
            options,
          )
        : null
    return async () => {
      let done: Awaited<ReturnType<typeof record>> | undefined
      if (prepared && !dryRun) {
        await applyPreparedBatch(db, actor, prepared, {
          ...options,
          beforeCommit: async (trx, results) => {
            done = await record(trx, results)
          },
        })
      } else {
        const results = prepared ? (await applyPreparedBatch(db, actor, prepared, options)).results : []
        done = await db.transaction().execute((trx) => record(trx, results))
      }
      if (!done) return
      progress = done.next
      keepStatisticsCurrent()
      hooks.onBatch?.(done.outcomes, toImportJob({ ...job, ...progress }))
    }
  }

  // One batch is applied while the next is read and prepared: the database and this process work
  // at the same time. Batches still commit one after the other, in file order.
  let applying: Promise<void> | null = null
  const applied = async () => {
    const pending = applying
    applying = null
    await pending
  }
  const startApplying = (apply: (() => Promise<void>) | null) => {
    if (apply === null) return
    applying = apply()
    // Awaited by applied(); until then a failure must not count as unhandled.
    applying.catch(() => {})
  }

  try {
    for await (const { record, info } of parser as AsyncIterable<{ record: string[]; info: Info }>) {
      if (plan === null) {
        plan = rowPlan(record, mapping, customFieldTypes)
        continue
      }
      if (info.lines <= resumeAfter) continue
      batch.push({ line: info.lines, cells: record })
      if (batch.length >= BATCH_ROWS) {
        const next = await stage(info.bytes, info.lines)
        await applied()
        startApplying(next)
        if (hooks.shouldStop?.()) {
          // The batch under way is finished; rows read past it are read again by the next runner.
          await applied()
          await refreshingStatistics
          source.destroy()
          await imports.releaseJob(db, job, token)
          return toImportJob({ ...job, ...progress })
        }
      }
    }
    const last = await stage(Number(job.bytes), parser.info.lines)
    await applied()
    startApplying(last)
    await applied()
    await refreshingStatistics
    // Before the job says it is done, so that what a client does next is planned for the new rows.
    if (!dryRun && progress.created + progress.updated >= BULK_WRITE_ROWS) {
      await imports.refreshPlannerStatistics(db)
    }
    return await finish(db, job, token, plan === null ? 'The file has no header line' : null)
  } catch (error) {
    source.destroy()
    // No batch (nor refresh) may still be running when the job is handed on.
    await applied().catch(() => {})
    await refreshingStatistics
    if (error instanceof LostLease) return toImportJob({ ...job, ...progress })
    throw error
  }
}

async function finish(db: Kysely<Database>, job: ImportJobRow, token: string, error: string | null) {
  const outcome = {
    status: error ? ('failed' as const) : ('completed' as const),
    error,
    finished_at: nowTimestamp(),
  }
  await db.transaction().execute(async (trx) => {
    if (await imports.finishJob(trx, job, token, outcome)) await imports.deleteChunks(trx, job.org_id, job.id)
  })
  return getImportJob(db, job.org_id, job.id)
}

export interface ImportRunner {
  /** A job was queued: look for it now instead of at the next poll. */
  wake(): void
  stop(): Promise<void>
}

export interface ImportRunnerOptions {
  pollIntervalMs: number
  leaseMs: number
  onBatch?: RunHooks['onBatch']
  /** The first wait of a job the database could not take (doubled at each failure in a row). */
  retryBaseMs?: number
  retryMaxDelayMs?: number
}

/**
 * Why a job must wait for the database rather than fail: a full disk, a database unreachable,
 * saturated or read-only, states that pass by themselves or by an operator's hand. Null for any
 * other error. Not a statement timeout: a batch too slow for the database could be too slow at
 * every try, and the job would wait for ever.
 */
function waitReasonOf(error: unknown): string | null {
  if (isStorageFull(error)) return 'The database has no room left'
  if (isDatabaseUnavailable(error) || isPoolExhausted(error)) return 'The database is unavailable'
  return null
}

/**
 * Runs queued import jobs in this process, one at a time, and takes over jobs whose runner
 * died (their lease ran out). Several processes on one PostgreSQL share the jobs through the
 * claim; on SQLite there is one runner per process.
 */
export function startImportRunner(
  db: Kysely<Database>,
  log: FastifyBaseLogger,
  { pollIntervalMs, leaseMs, onBatch, retryBaseMs = 1_000, retryMaxDelayMs = 60_000 }: ImportRunnerOptions,
): ImportRunner {
  let stopping = false
  /** Failures in a row of the jobs waiting for the database, for their backoff. */
  const failuresInARow = new Map<string, number>()
  let wakeUp: (() => void) | null = null
  let lastSweep = 0
  const idle = () =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, pollIntervalMs)
      wakeUp = () => {
        clearTimeout(timer)
        resolve()
      }
    })
  const cycle = async (): Promise<boolean> => {
    const now = Date.now()
    if (now - lastSweep > 60_000) {
      lastSweep = now
      // An upload takes at most the request timeout; an hour-old one died with its process.
      await imports.deleteAbandonedUploads(db, new Date(now - 3_600_000).toISOString())
    }
    const token = randomUUID()
    const job = await imports.claimJob(
      db,
      new Date(now).toISOString(),
      new Date(now + leaseMs).toISOString(),
      token,
    )
    if (!job) return false
    const jobLog = log.child({ import_job: job.id })
    jobLog.info({ resumed_after_line: job.lines_done || undefined }, 'import started')
    try {
      const done = await withBulkHeapGrowth(() =>
        runImportJob(db, job, token, { onBatch, leaseMs, shouldStop: () => stopping }),
      )
      failuresInARow.delete(job.id)
      jobLog.info({ status: done.status, rows: done.rows_read, failed: done.failed }, 'import finished')
    } catch (error) {
      const reason = waitReasonOf(error)
      if (reason !== null) {
        // The file is fine and the batch was rolled back whole: the job waits, then goes on from
        // its last committed batch, instead of failing for what an operator can mend.
        const failures = (failuresInARow.get(job.id) ?? 0) + 1
        // Jobs another process finished leave their count here: bounded, not tracked.
        if (failuresInARow.size >= 1_000) failuresInARow.clear()
        failuresInARow.set(job.id, failures)
        const delayMs = retryDelayMs(failures, retryBaseMs, retryMaxDelayMs)
        jobLog.error({ err: error, retry_in_ms: delayMs }, 'import waits for the database')
        await imports
          .postponeJob(
            db,
            job,
            token,
            new Date(Date.now() + delayMs).toISOString(),
            `${reason}; the import goes on by itself, from its last committed batch, once it can`,
          )
          .catch((err: unknown) =>
            jobLog.error({ err }, 'could not postpone the import; its lease will run out'),
          )
        return true
      }
      failuresInARow.delete(job.id)
      jobLog.error({ err: error }, 'import stopped on an internal error')
      // The job ends, keeping what its committed batches did.
      await finish(
        db,
        job,
        token,
        'The import stopped on an internal error; the rows applied before it are kept',
      ).catch((err: unknown) => jobLog.error({ err }, 'could not record the import as failed'))
    }
    return true
  }
  const running = (async () => {
    while (!stopping) {
      let worked = false
      try {
        worked = await cycle()
      } catch (error) {
        log.error({ err: error }, 'import runner cycle failed')
      }
      if (!worked && !stopping) await idle()
    }
  })()
  return {
    wake: () => wakeUp?.(),
    async stop() {
      stopping = true
      wakeUp?.()
      await running
    },
  }
}
