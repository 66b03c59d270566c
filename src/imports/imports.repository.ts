import type { Insertable } from 'kysely'
import { type Kysely, sql } from 'kysely'
import { dialectOf } from '../db/database.js'
import type { Database, ImportJobRow, ImportJobTable } from '../db/schema.js'

export async function insertJob(db: Kysely<Database>, row: Insertable<ImportJobTable>) {
  await db.insertInto('import_jobs').values(row).execute()
}

export function findJob(db: Kysely<Database>, orgId: string, id: string) {
  return db
    .selectFrom('import_jobs')
    .selectAll()
    .where('org_id', '=', orgId)
    .where('id', '=', id)
    .executeTakeFirst()
}

/** The organization's jobs, newest first, after a (created_at, id) position when given. */
export function listJobs(
  db: Kysely<Database>,
  orgId: string,
  limit: number,
  after: { time: string; id: string } | null,
) {
  let query = db.selectFrom('import_jobs').selectAll().where('org_id', '=', orgId)
  if (after) {
    query = query.where((eb) =>
      eb.or([
        eb('created_at', '<', after.time),
        eb.and([eb('created_at', '=', after.time), eb('id', '<', after.id)]),
      ]),
    )
  }
  return query.orderBy('created_at', 'desc').orderBy('id', 'desc').limit(limit).execute()
}

export async function insertChunk(
  db: Kysely<Database>,
  orgId: string,
  jobId: string,
  seq: number,
  data: Uint8Array,
) {
  await db.insertInto('import_chunks').values({ org_id: orgId, job_id: jobId, seq, data }).execute()
}

export async function findChunk(db: Kysely<Database>, orgId: string, jobId: string, seq: number) {
  const row = await db
    .selectFrom('import_chunks')
    .select('data')
    .where('org_id', '=', orgId)
    .where('job_id', '=', jobId)
    .where('seq', '=', seq)
    .executeTakeFirst()
  return row?.data
}

export async function deleteJob(db: Kysely<Database>, orgId: string, id: string) {
  await db.deleteFrom('import_chunks').where('org_id', '=', orgId).where('job_id', '=', id).execute()
  await db.deleteFrom('import_failures').where('org_id', '=', orgId).where('job_id', '=', id).execute()
  await db.deleteFrom('import_jobs').where('org_id', '=', orgId).where('id', '=', id).execute()
}

export async function deleteChunks(db: Kysely<Database>, orgId: string, jobId: string) {
  await db.deleteFrom('import_chunks').where('org_id', '=', orgId).where('job_id', '=', jobId).execute()
}

/**
 * Takes a job that waits for a runner (queued, or running under a lease that has run out) for
 * this runner until `leaseUntil`. The conditional update is the lock: of two runners that pick
 * the same job, one updates it and the other finds nothing to update.
 */
export async function claimJob(
  db: Kysely<Database>,
  now: string,
  leaseUntil: string,
  token: string,
): Promise<ImportJobRow | undefined> {
  const candidates = await db
    .selectFrom('import_jobs')
    .select(['org_id', 'id'])
    .where('status', 'in', ['queued', 'running'])
    .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
    .orderBy('created_at')
    .limit(5)
    .execute()
  for (const { org_id, id } of candidates) {
    const claimed = await db
      .updateTable('import_jobs')
      // A job that waited for the database (postponeJob) goes on: the reason no longer holds.
      .set({ status: 'running', lease_until: leaseUntil, lease_token: token, error: null })
      .set({ started_at: sql<string>`coalesce(started_at, ${now})` })
      .where('org_id', '=', org_id)
      .where('id', '=', id)
      .where('status', 'in', ['queued', 'running'])
      .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
      .returningAll()
      .executeTakeFirst()
    if (claimed) return claimed
  }
  return undefined
}

/** Takes one given job, as `claimJob` does, if no runner holds it. */
export function claimJobById(
  db: Kysely<Database>,
  job: { org_id: string; id: string },
  now: string,
  leaseUntil: string,
  token: string,
): Promise<ImportJobRow | undefined> {
  return db
    .updateTable('import_jobs')
    .set({ status: 'running', lease_until: leaseUntil, lease_token: token })
    .set({ started_at: sql<string>`coalesce(started_at, ${now})` })
    .where('org_id', '=', job.org_id)
    .where('id', '=', job.id)
    .where('status', 'in', ['queued', 'running'])
    .where((eb) => eb.or([eb('lease_until', 'is', null), eb('lease_until', '<', now)]))
    .returningAll()
    .executeTakeFirst()
}

export interface Progress {
  bytes_read: number
  lines_done: number
  created: number
  updated: number
  unchanged: number
  failed: number
}

/**
 * Records a job's progress while its lease is still held, and renews the lease. False when
 * another runner has taken the job over: the caller must then stop (and roll back).
 */
export async function recordProgress(
  db: Kysely<Database>,
  job: { org_id: string; id: string },
  token: string,
  progress: Progress,
  leaseUntil: string,
): Promise<boolean> {
  const result = await db
    .updateTable('import_jobs')
    .set({ ...progress, lease_until: leaseUntil })
    .where('org_id', '=', job.org_id)
    .where('id', '=', job.id)
    .where('lease_token', '=', token)
    .executeTakeFirst()
  return result.numUpdatedRows > 0n
}

/** Hands a job back for any runner to resume at once (this process is stopping). */
export async function releaseJob(db: Kysely<Database>, job: { org_id: string; id: string }, token: string) {
  await db
    .updateTable('import_jobs')
    .set({ lease_until: null, lease_token: null })
    .where('org_id', '=', job.org_id)
    .where('id', '=', job.id)
    .where('lease_token', '=', token)
    .execute()
}

/**
 * Hands a job back until `until`, with the reason it waits shown in its `error`: nobody takes it
 * before then, and whoever takes it next resumes after its last committed batch.
 */
export async function postponeJob(
  db: Kysely<Database>,
  job: { org_id: string; id: string },
  token: string,
  until: string,
  reason: string,
) {
  await db
    .updateTable('import_jobs')
    .set({ lease_until: until, lease_token: null, error: reason })
    .where('org_id', '=', job.org_id)
    .where('id', '=', job.id)
    .where('lease_token', '=', token)
    .execute()
}

export async function finishJob(
  db: Kysely<Database>,
  job: { org_id: string; id: string },
  token: string,
  outcome: { status: 'completed' | 'failed'; error: string | null; finished_at: string },
): Promise<boolean> {
  const result = await db
    .updateTable('import_jobs')
    .set({ ...outcome, lease_until: null, lease_token: null })
    .where('org_id', '=', job.org_id)
    .where('id', '=', job.id)
    .where('lease_token', '=', token)
    .executeTakeFirst()
  return result.numUpdatedRows > 0n
}

/** Failed rows; a row recorded before (a resumed job) is not recorded twice. Returns how many are new. */
export async function insertFailures(
  db: Kysely<Database>,
  rows: { org_id: string; job_id: string; line: number; cells: string | null; reason: string }[],
): Promise<number> {
  let inserted = 0
  for (let i = 0; i < rows.length; i += 500) {
    const result = await db
      .insertInto('import_failures')
      .values(rows.slice(i, i + 500))
      .onConflict((oc) => oc.columns(['org_id', 'job_id', 'line']).doNothing())
      .executeTakeFirst()
    inserted += Number(result.numInsertedOrUpdatedRows ?? 0n)
  }
  return inserted
}

export function failuresAfter(
  db: Kysely<Database>,
  orgId: string,
  jobId: string,
  afterLine: number,
  limit: number,
) {
  return db
    .selectFrom('import_failures')
    .select(['line', 'cells', 'reason'])
    .where('org_id', '=', orgId)
    .where('job_id', '=', jobId)
    .where('line', '>', afterLine)
    .orderBy('line')
    .limit(limit)
    .execute()
}

/** Uploads that never finished (their process died while receiving): what they left is removed. */
export async function deleteAbandonedUploads(db: Kysely<Database>, before: string) {
  const abandoned = await db
    .selectFrom('import_jobs')
    .select(['org_id', 'id'])
    .where('status', '=', 'receiving')
    .where('created_at', '<', before)
    .limit(100)
    .execute()
  for (const job of abandoned) await deleteJob(db, job.org_id, job.id)
}

/**
 * PostgreSQL plans queries from table statistics that autovacuum refreshes only some time after
 * a bulk load: until then a list or an export of the organization just imported can be planned
 * for the tables as they were (a sort of every row instead of an index read in order). SQLite
 * keeps no statistics unless told to, and plans by the indexes alone.
 */
export async function refreshPlannerStatistics(db: Kysely<Database>) {
  if (dialectOf(db) === 'postgres') await sql`analyze contacts, contact_identities`.execute(db)
}
