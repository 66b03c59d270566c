import { type Kysely, sql } from 'kysely'
import type { Database } from './schema.js'

/**
 * PostgreSQL: the pending lists of the GIN indexes (the trigram index behind `q`, the JSON ones
 * behind custom-field and attribute filters), emptied from the background.
 *
 * A GIN index takes new entries into a pending list, and whichever insert or update finds that
 * list past `gin_pending_list_limit` (4 MB) moves the whole list into the index, inside its own
 * statement, while its transaction holds its row locks and its request waits. Under a steady
 * stream of contact writes that was every few seconds, one write at a time taking 300 ms to over a
 * second. Here a round every `intervalMs` moves the lists into their indexes with
 * `gin_clean_pending_list`, in a statement of its own that no request waits for; a write that
 * finds a list full while a round is under way does not start a cleanup of its own. Under heavy
 * writes a round takes seconds and the next follows a second later, so a list can grow past the
 * limit meanwhile (27 MB once, under pgbench at full rate): the index still answers the same, since
 * a search reads the pending entries too, but a search by `q` then reads more of them. The work is
 * the same: the entries go into the same index.
 *
 * `gin_clean_pending_list` needs the index's owner, which is the role that ran the migrations;
 * indexes owned by another role are left to PostgreSQL's own cleanup. Several processes may run a
 * cleaner on one database: their rounds wait for one another.
 */
export interface PendingListCleaner {
  /** Waits for the round in progress, if any, and runs no more. */
  stop(): Promise<void>
  /** Since start: completed rounds, and the pending-list pages they moved into their indexes. */
  stats(): { rounds: number; pagesCleaned: number }
}

/** The GIN indexes with pending lists on tables of the connection's schema that this role may clean. */
export async function ginIndexesWithPendingLists(db: Kysely<Database>): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`
    select quote_ident(n.nspname) || '.' || quote_ident(c.relname) as name
    from pg_index i
    join pg_class c on c.oid = i.indexrelid
    join pg_am a on a.oid = c.relam
    join pg_class t on t.oid = i.indrelid
    join pg_namespace n on n.oid = c.relnamespace
    where a.amname = 'gin'
      and t.relnamespace = current_schema()::regnamespace
      and not coalesce('fastupdate=off' = any (c.reloptions), false)
      and pg_has_role(current_user, c.relowner, 'USAGE')
    order by c.relname`.execute(db)
  return rows.map((row) => row.name)
}

/** Moves the pending lists of `indexes` into their indexes; the pages moved. */
export async function cleanPendingLists(db: Kysely<Database>, indexes: readonly string[]): Promise<number> {
  let pages = 0
  for (const index of indexes) {
    const { rows } = await sql<{ pages: string | number }>`
      select gin_clean_pending_list(${index}::regclass) as pages`.execute(db)
    pages += Number(rows[0]?.pages ?? 0)
  }
  return pages
}

const MAX_WAIT_AFTER_ERROR_MS = 5 * 60_000

export function startPendingListCleaner(
  db: Kysely<Database>,
  options: { intervalMs: number; onError: (error: unknown) => void },
): PendingListCleaner {
  let rounds = 0
  let pagesCleaned = 0
  let stopped = false
  let timer: NodeJS.Timeout | null = null
  let current: Promise<void> | null = null
  /** After a failed round the next waits twice as long (up to 5 minutes): a line a second would flood the log. */
  let wait = options.intervalMs

  const round = async () => {
    try {
      // Listed every round: a migration run by another process may add or drop an index.
      const indexes = await ginIndexesWithPendingLists(db)
      pagesCleaned += await cleanPendingLists(db, indexes)
      rounds += 1
      wait = options.intervalMs
    } catch (error) {
      if (stopped) return
      options.onError(error)
      wait = Math.min(wait * 2, MAX_WAIT_AFTER_ERROR_MS)
    }
  }
  const schedule = () => {
    if (stopped) return
    // From the end of one round to the start of the next: a slow round never overlaps the next.
    timer = setTimeout(() => {
      timer = null
      current = round().finally(() => {
        current = null
        schedule()
      })
    }, wait)
    timer.unref()
  }
  schedule()

  return {
    async stop() {
      stopped = true
      if (timer) clearTimeout(timer)
      await current
    },
    stats: () => ({ rounds, pagesCleaned }),
  }
}
