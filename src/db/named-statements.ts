import type { PostgresPool, PostgresPoolClient } from 'kysely'
import type pg from 'pg'

/**
 * PostgreSQL parses and plans an unnamed statement at every run, a named one once per connection
 * (the PUT spent a fifth of its PostgreSQL time on that). The fixed-shape statements of
 * db/prepared.ts are named here: the first NAMED_STATEMENTS_CAP distinct texts of the process,
 * which the code fixes, so that a connection never keeps more than that many whatever else runs.
 */
export const NAMED_STATEMENTS_CAP = 256

const nameOfText = new Map<string, string>()

/** Lets PostgreSQL keep this statement's plan on each connection that runs it (within the cap). */
export function nameForReuse(text: string): void {
  if (nameOfText.size >= NAMED_STATEMENTS_CAP || nameOfText.has(text)) return
  nameOfText.set(text, `contacts_${nameOfText.size + 1}`)
}

/** How many statement texts have a name (at most NAMED_STATEMENTS_CAP). */
export const namedStatementCount = () => nameOfText.size

/**
 * A kept plan whose result columns have changed since it was made (a migration added a column to
 * a table it reads with `*`): PostgreSQL refuses to run it rather than answer in another shape.
 */
const isStalePlan = (error: unknown) =>
  (error as { code?: unknown })?.code === '0A000' &&
  String((error as Error).message).includes('cached plan must not change result type')

type Values = ReadonlyArray<unknown>
type TransactionStatus = 'I' | 'T' | 'E' | null

const transactionStatus = (client: pg.PoolClient): TransactionStatus =>
  (client as unknown as { getTransactionStatus?(): TransactionStatus }).getTransactionStatus?.() ?? null

const BEGUN = { command: 'BEGIN', rowCount: null, rows: [] }
const ROLLED_BACK = { command: 'ROLLBACK', rowCount: null, rows: [] }
const COMMITTED = { command: 'COMMIT', rowCount: null, rows: [] }

export interface NamedStatementPool extends PostgresPool {
  /**
   * Tables have changed (migrations ran): connections that may hold plans made before are
   * closed instead of being used again.
   */
  schemaChanged(): void
}

/**
 * The pool as Kysely sees it, running the named statements under their names (unless `named` is
 * off, for poolers that cannot keep them).
 */
export function withNamedStatements(pool: pg.Pool, options: { named: boolean }): NamedStatementPool {
  let generation = 0
  const generationOf = new WeakMap<pg.PoolClient, number>()
  const stale = new WeakSet<pg.PoolClient>()
  const wrappers = new WeakMap<pg.PoolClient, PostgresPoolClient>()

  async function runNamed(client: pg.PoolClient, name: string, text: string, values: Values) {
    try {
      return await client.query({ name, text, values: values as unknown[] })
    } catch (error) {
      if (!isStalePlan(error)) throw error
      stale.add(client)
      // Alone, the statement can run again unnamed; inside a transaction PostgreSQL has already
      // aborted it (the transaction's first statement starts it over, below; a later one fails
      // it). Either way the connection is replaced.
      if (transactionStatus(client) !== 'I') throw error
      return client.query(text, values as unknown[])
    }
  }

  const run = (client: pg.PoolClient, text: string, values: Values | undefined) => {
    const name = options.named ? nameOfText.get(text) : undefined
    return name === undefined
      ? client.query(text, values as unknown[])
      : runNamed(client, name, text, values ?? [])
  }

  const wrap = (client: pg.PoolClient): PostgresPoolClient => {
    let wrapper = wrappers.get(client)
    if (!wrapper) {
      // A transaction's BEGIN is held back and written with its first statement: on a pipelined
      // connection both go out at once, so the transaction costs one round trip less.
      let beginPending = false
      wrapper = {
        query: ((textOrCursor: unknown, values?: Values) => {
          if (typeof textOrCursor !== 'string') return client.query(textOrCursor as pg.Submittable)
          const noValues = values === undefined || values.length === 0
          if (noValues && textOrCursor === 'begin') {
            beginPending = true
            return Promise.resolve(BEGUN)
          }
          if (!beginPending) return run(client, textOrCursor, values)
          beginPending = false
          // Nothing was written: a rollback has nothing to undo, a commit nothing to store.
          if (noValues && textOrCursor === 'rollback') return Promise.resolve(ROLLED_BACK)
          if (noValues && textOrCursor === 'commit') return Promise.resolve(COMMITTED)
          const begun = client.query('begin')
          return Promise.all([begun, run(client, textOrCursor, values)]).then(
            ([, result]) => result,
            async (error) => {
              if (!isStalePlan(error)) throw error
              // The transaction's first statement met a plan made before its table changed:
              // nothing else has happened in it yet, so it starts over, the statement unnamed.
              await client.query('rollback')
              await client.query('begin')
              return client.query(textOrCursor, values as unknown[])
            },
          )
        }) as unknown as PostgresPoolClient['query'],
        release: (destroy?: boolean) => {
          beginPending = false
          client.release(destroy || stale.has(client))
        },
      }
      wrappers.set(client, wrapper)
    }
    return wrapper
  }

  return {
    async connect() {
      for (;;) {
        const client = await pool.connect()
        const born = generationOf.get(client)
        if (born === undefined) generationOf.set(client, generation)
        else if (born !== generation || stale.has(client)) {
          client.release(true)
          continue
        }
        return wrap(client)
      }
    },
    end: () => pool.end(),
    schemaChanged() {
      generation += 1
    },
  }
}
