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

/** What a statement written with the next one answered, once it has. */
export type LateAnswer = { ok: true; rowCount: number } | { ok: false; error: unknown }

const answerOfText = new Map<string, (answer: LateAnswer) => void>()

/**
 * Lets this statement, inside a transaction, wait for the transaction's next statement (its
 * COMMIT, most often) and go out just before it: one round trip less. Its caller gets neither
 * rows nor a count, only that it was taken; later statements of the transaction still see what it
 * did. Its failure fails the statement it went out with (and so the transaction). `onAnswer`
 * hears its answer when it comes, or nothing if a rollback dropped it unsent. Outside a
 * transaction it runs at once.
 */
export function sendWithNextStatement(text: string, onAnswer: (answer: LateAnswer) => void): void {
  answerOfText.set(text, onAnswer)
}

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
/** What a statement held back for the next one answers at once: no command, so no count. */
const HELD = { command: '', rowCount: null, rows: [] }
const ROLLED_BACK = { command: 'ROLLBACK', rowCount: null, rows: [] }
const COMMITTED = { command: 'COMMIT', rowCount: null, rows: [] }

/** A statement held back to go out with the transaction's next one. */
interface Held {
  text: string
  values: Values | undefined
  onAnswer?: (answer: LateAnswer) => void
}

const answered = (result: pg.QueryResult): LateAnswer => ({ ok: true, rowCount: result.rowCount ?? 0 })

/**
 * Runs `submit`, whose statements a pipelined connection writes at once, with the connection's
 * socket corked: they leave in one write instead of one each. On loopback a write to PostgreSQL
 * costs tens of µs of the sender's CPU (the kernel delivers it and wakes the backend inside it).
 */
function inOneWrite<T>(client: pg.PoolClient, submit: () => T): T {
  const stream = (client as unknown as { connection?: { stream?: Partial<NodeJS.WritableStream & Cork> } })
    .connection?.stream
  stream?.cork?.()
  try {
    return submit()
  } finally {
    stream?.uncork?.()
  }
}
interface Cork {
  cork(): void
  uncork(): void
}

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

  /** Runs one statement; one sent with the next statement that ran alone tells its answer too. */
  function runTelling(client: pg.PoolClient, text: string, values: Values | undefined) {
    const onAnswer = answerOfText.get(text)
    const answer = run(client, text, values)
    if (onAnswer)
      answer.then(
        (result) => onAnswer(answered(result)),
        (error) => onAnswer({ ok: false, error }),
      )
    return answer
  }

  /**
   * Writes `held` (statements held back, the transaction's BEGIN first if it was held too) and
   * then `text`, without waiting in between, and answers as `text` does; the first failure among
   * them fails it.
   */
  async function runAfterHeld(client: pg.PoolClient, held: Held[], text: string, values: Values | undefined) {
    const sent = inOneWrite(client, () => [
      ...held.map((statement) => run(client, statement.text, statement.values)),
      run(client, text, values),
    ])
    const answers = await Promise.allSettled(sent)
    const failure = answers.find((answer) => answer.status === 'rejected')
    const begunHere = held[0]?.text === 'begin'
    if (begunHere && answers.some((answer) => answer.status === 'rejected' && isStalePlan(answer.reason))) {
      // A plan made before its table changed, in a transaction nothing of which had been
      // written before: it starts over, its statements unnamed.
      await client.query('rollback')
      await client.query('begin')
      for (const statement of held.slice(1)) {
        statement.onAnswer?.(answered(await client.query(statement.text, statement.values as unknown[])))
      }
      return client.query(text, values as unknown[])
    }
    held.forEach((statement, i) => {
      const answer = answers[i] as PromiseSettledResult<pg.QueryResult>
      statement.onAnswer?.(
        answer.status === 'fulfilled' ? answered(answer.value) : { ok: false, error: answer.reason },
      )
    })
    if (failure) throw failure.reason
    return (answers.at(-1) as PromiseFulfilledResult<pg.QueryResult>).value
  }

  const wrap = (client: pg.PoolClient): PostgresPoolClient => {
    let wrapper = wrappers.get(client)
    if (!wrapper) {
      // A transaction's BEGIN is held back and written with its first statement, and statements
      // sent with the next one (sendWithNextStatement) wait for it: on a pipelined connection
      // they go out together, a round trip for all.
      let held: Held[] = []
      let inTransaction = false
      wrapper = {
        query: ((textOrCursor: unknown, values?: Values) => {
          if (typeof textOrCursor !== 'string') return client.query(textOrCursor as pg.Submittable)
          const text = textOrCursor
          const noValues = values === undefined || values.length === 0
          if (noValues && text === 'begin') {
            inTransaction = true
            held = [{ text, values: undefined }]
            return Promise.resolve(BEGUN)
          }
          const commits = noValues && text === 'commit'
          const rollsBack = noValues && text === 'rollback'
          const onAnswer = answerOfText.get(text)
          if (inTransaction && onAnswer && !commits && !rollsBack) {
            held.push({ text, values, onAnswer })
            return Promise.resolve(HELD)
          }
          const before = held
          held = []
          if (commits || rollsBack) inTransaction = false
          // BEGIN still held: nothing of the transaction has reached PostgreSQL.
          const begunHere = before[0]?.text === 'begin'
          // A rollback undoes whatever was held back: none of it need go.
          if (rollsBack) return begunHere ? Promise.resolve(ROLLED_BACK) : run(client, text, values)
          // Nothing was written: a commit has nothing to store.
          if (commits && begunHere && before.length === 1) return Promise.resolve(COMMITTED)
          if (before.length === 0) return runTelling(client, text, values)
          return runAfterHeld(client, before, text, values)
        }) as unknown as PostgresPoolClient['query'],
        release: (destroy?: boolean) => {
          // Statements still held belong to a transaction that did not end here: the connection
          // goes, and that transaction with it.
          const unfinished = held.some((statement) => statement.text !== 'begin')
          held = []
          inTransaction = false
          client.release(destroy || unfinished || stale.has(client))
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
