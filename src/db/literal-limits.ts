import {
  type KyselyPlugin,
  type PluginTransformQueryArgs,
  type PluginTransformResultArgs,
  type QueryResult,
  type RootOperationNode,
  SelectQueryNode,
  type UnknownRow,
  ValueNode,
} from 'kysely'

/**
 * SQLite lets a LIMIT's value steer the query plan, so it marks a statement whose LIMIT is a bound
 * parameter to be planned again whenever that parameter is bound, and better-sqlite3 binds on
 * every run: each run of such a statement costs a fresh prepare. Measured on SQLite 3.53, a
 * primary-key lookup with `limit ?` took 18 µs against 2 µs with `limit 1`, and the webhook
 * dispatcher's claim 130 µs against 4 µs. Written into the SQL instead, the LIMIT is planned once
 * and the statement cache serves it. OFFSET does not steer the plan and stays a parameter, so a
 * paged list has one statement per page size, not one per page.
 *
 * Only the outermost query's LIMIT is rewritten: none of ours sits in a subquery, and walking
 * every query's whole tree would cost the hot path more than this saves.
 */
export class LiteralLimitsPlugin implements KyselyPlugin {
  transformQuery({ node }: PluginTransformQueryArgs): RootOperationNode {
    if (!SelectQueryNode.is(node) || !node.limit) return node
    const { limit } = node.limit
    if (!ValueNode.is(limit) || limit.immediate || !isWholeNumber(limit.value)) return node
    return { ...node, limit: { ...node.limit, limit: ValueNode.createImmediate(limit.value) } }
  }

  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result
  }
}

const isWholeNumber = (value: unknown): value is number | bigint =>
  (typeof value === 'number' && Number.isSafeInteger(value) && value >= 0) || typeof value === 'bigint'
