import type BetterSqlite3 from 'better-sqlite3'

/**
 * Applies the trigram index's pending notes (migration 016) inside the current transaction: the
 * text each noted row had in the index is deleted from it, and the row's present text, if it
 * still exists, is added. FTS5 keeps the whole batch in memory and writes it as one segment at
 * the COMMIT. Before migration 016 has run there is nothing to apply.
 */
export function deferredTextIndexApplier(database: BetterSqlite3.Database): () => void {
  let statements: {
    anyPending: BetterSqlite3.Statement
    deleteIndexed: BetterSqlite3.Statement
    indexPresent: BetterSqlite3.Statement
    clear: BetterSqlite3.Statement
  } | null = null
  const prepare = () => {
    try {
      return {
        anyPending: database.prepare('select 1 from contact_search_fts_pending limit 1').pluck(),
        deleteIndexed: database.prepare(
          `insert into contact_search_fts (contact_search_fts, rowid, document)
           select 'delete', rowid, indexed_document from contact_search_fts_pending
           where indexed_document is not null`,
        ),
        indexPresent: database.prepare(
          `insert into contact_search_fts (rowid, document)
           select s.rowid, s.document from contact_search_fts_pending as p
           join contact_search as s on s.rowid = p.rowid`,
        ),
        clear: database.prepare('delete from contact_search_fts_pending'),
      }
    } catch (error) {
      if (/no such table/i.test((error as Error).message)) return null
      throw error
    }
  }
  return () => {
    statements ??= prepare()
    if (!statements || statements.anyPending.get() === undefined) return
    statements.deleteIndexed.run()
    statements.indexPresent.run()
    statements.clear.run()
  }
}
