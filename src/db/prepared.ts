import { type Compilable, CompiledQuery, type Kysely, type QueryResult } from 'kysely'
import { type DialectName, dialectOf } from './database.js'
import { GroupCommitSqliteAdapter } from './group-commit.js'
import { type LateAnswer, nameForReuse, sendWithNextStatement } from './named-statements.js'
import type { Database } from './schema.js'

/** Stands for argument `index` while a query is built: a value no caller passes by chance. */
const placeholder = (index: number) => `\u0000prepared query argument ${index}\u0000`

type Parameter = { argument: number } | { constant: unknown }

interface Compiled {
  sql: string
  parameters: Parameter[]
}

function compile<Args extends unknown[]>(
  db: Kysely<Database>,
  arity: number,
  build: (db: Kysely<Database>, ...args: Args) => Compilable<unknown>,
): Compiled {
  const args = Array.from({ length: arity }, (_, i) => placeholder(i))
  const argumentOf = new Map(args.map((arg, i) => [arg, i]))
  const { sql, parameters } = build(db, ...(args as Args)).compile()
  const bound = parameters.map((value): Parameter => {
    const argument = typeof value === 'string' ? argumentOf.get(value) : undefined
    return argument === undefined ? { constant: value } : { argument }
  })
  for (let i = 0; i < arity; i++) {
    // An argument used other than as a value (in raw SQL, say) would be silently dropped.
    if (!bound.some((p) => 'argument' in p && p.argument === i))
      throw new Error(`argument ${i} of a prepared query is not one of its parameters`)
  }
  return { sql, parameters: bound }
}

/**
 * A query of a fixed shape, built and compiled once per backend and then run with new arguments.
 * Kysely builds and compiles a query on every call; for the hot path's short indexed statements
 * that costs about what SQLite takes to run them. `build` receives stand-ins for the arguments
 * and must use each only as a value (a comparison, an inserted value), never look into it.
 */
export function preparedQuery<Args extends unknown[], Row>(
  arity: Args['length'],
  build: (db: Kysely<Database>, ...args: Args) => Compilable<Row>,
  options: {
    /**
     * On PostgreSQL, inside a transaction, the statement goes out with the transaction's next
     * one, and its answer comes here instead of to its caller (named-statements.ts).
     */
    answeredLater?: (answer: LateAnswer) => void
  } = {},
): (db: Kysely<Database>, ...args: Args) => Promise<QueryResult<Row>> {
  const byDialect = new Map<DialectName, Compiled>()
  return async (db, ...args) => {
    const dialect = dialectOf(db)
    let compiled = byDialect.get(dialect)
    if (!compiled) {
      compiled = compile(db, arity, build)
      if (dialect === 'postgres') {
        nameForReuse(compiled.sql)
        if (options.answeredLater) sendWithNextStatement(compiled.sql, options.answeredLater)
      }
      byDialect.set(dialect, compiled)
    }
    const parameters = compiled.parameters.map((p) => ('argument' in p ? args[p.argument] : p.constant))
    const query = CompiledQuery.raw(compiled.sql, parameters)
    // On SQLite the statement runs synchronously either way; Kysely's executor around it (a
    // connection acquired and released, plugins asked about the result, several promises) cost
    // a hot read 7 µs on top of SQLite's 22. The plugins only rewrite queries (database.ts).
    const adapter = db.getExecutor().adapter
    if (adapter instanceof GroupCommitSqliteAdapter) {
      const answer = adapter.driver.runNow<Row>(query, db.isTransaction)
      if (answer) return answer
    }
    return db.executeQuery<Row>(query)
  }
}
