import { randomUUID } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { basename } from 'node:path'
import type { Kysely } from 'kysely'
import type { Database } from '../db/schema.js'
import { systemActor } from '../events/events.service.js'
import { claimJobById, findJob } from './imports.repository.js'
import type { ImportJob } from './imports.schemas.js'
import { getImportJob, receiveImport, runImportJob } from './imports.service.js'
import { progressReporter } from './progress.js'

const LEASE_MS = 60_000

const detailOf = (job: ImportJob) =>
  `${job.rows_read} rows · ${job.created} created, ${job.updated} updated, ${job.unchanged} unchanged, ${job.failed} failed`

/**
 * `contacts import`: the file becomes a job exactly as an upload does (so a server's runner could
 * resume it), and this process runs it at once, showing progress. Should a server's runner take
 * it first, this process follows its progress instead.
 */
export async function importFile(
  db: Kysely<Database>,
  orgId: string,
  path: string,
  options: { mapping: Record<string, string | null>; delimiter?: string; dryRun: boolean },
): Promise<ImportJob> {
  const queued = await receiveImport(
    db,
    systemActor(orgId),
    createReadStream(path),
    {
      mapping: JSON.stringify(options.mapping),
      ...(options.delimiter === undefined ? {} : { delimiter: options.delimiter }),
      dry_run: options.dryRun,
      file_name: basename(path),
    },
    { maxBytes: Number.MAX_SAFE_INTEGER },
  )
  const progress = progressReporter(options.dryRun ? 'import (dry run)' : 'import')
  const show = (job: ImportJob) => progress.update(job.bytes_read, job.bytes, detailOf(job))
  const token = randomUUID()
  const now = Date.now()
  const claimed = await claimJobById(
    db,
    { org_id: orgId, id: queued.id },
    new Date(now).toISOString(),
    new Date(now + LEASE_MS).toISOString(),
    token,
  )
  try {
    if (claimed) {
      return await runImportJob(db, claimed, token, {
        leaseMs: LEASE_MS,
        onBatch: (_outcomes, job) => show(job),
      })
    }
    for (;;) {
      const row = await findJob(db, orgId, queued.id)
      if (!row || row.status === 'completed' || row.status === 'failed')
        return getImportJob(db, orgId, queued.id)
      show(await getImportJob(db, orgId, queued.id))
      await new Promise((resolve) => setTimeout(resolve, 500))
    }
  } finally {
    progress.end()
  }
}
