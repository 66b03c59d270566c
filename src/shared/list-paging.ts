import { type CursorCodec, readTimeAndId, timeAndId } from './cursor.js'
import {
  type CursorPageOf,
  type ListPagingQuery,
  offsetOf,
  type PageOf,
  pageOf,
  pagingOf,
} from './schemas.js'

/** Where a list's page starts: an offset (`page`), or after a (time, id) position (`cursor`). */
export type ListStart = { offset: number } | { after: { time: string; id: string } | null }

export interface TimeOrderedList<Row, Item> {
  /** The list's rows from `start`, ordered by (time, id), at most `limit`. */
  find(limit: number, start: ListStart): Promise<Row[]>
  count(): Promise<number>
  /** The (time, id) a row sorts by. */
  positionOf(row: Row): { time: Date | string; id: string }
  toItem(row: Row): Item
}

/**
 * A list ordered by a time and the id, paged as the API asks: the original pages (with a cursor
 * to continue from the last item) or by cursor. `queryKey` binds its cursors to this list.
 */
export async function pageTimeOrderedList<Row, Item>(
  list: TimeOrderedList<Row, Item>,
  query: ListPagingQuery,
  cursors: () => Promise<CursorCodec>,
  queryKey: string,
): Promise<(PageOf<Item> & { next_cursor: string | null }) | CursorPageOf<Item>> {
  const paging = pagingOf(query)
  const codec = await cursors()
  const cursorAfter = (row: Row) => {
    const { time, id } = list.positionOf(row)
    return codec.encode(queryKey, timeAndId(time, id))
  }
  if (paging.mode === 'page') {
    const [rows, total] = await Promise.all([
      list.find(paging.size, { offset: offsetOf(paging) }),
      list.count(),
    ])
    const page = pageOf(rows.map(list.toItem), total, paging)
    const last = rows.at(-1)
    return { ...page, next_cursor: last !== undefined && page.next_page !== null ? cursorAfter(last) : null }
  }
  const after = paging.cursor === undefined ? null : readTimeAndId(codec, queryKey, paging.cursor)
  const rows = await list.find(paging.limit + 1, { after })
  return cursorPageOf(rows, paging.limit, list.toItem, cursorAfter)
}

/**
 * A page of cursor paging from the `limit + 1` rows a query read: the first `limit` as items,
 * and, only when the extra row shows that more remain, the cursor after the last item.
 */
export function cursorPageOf<Row, Item>(
  rows: readonly Row[],
  limit: number,
  toItem: (row: Row) => Item,
  cursorAfter: (row: Row) => string,
): CursorPageOf<Item> {
  const page = rows.slice(0, limit)
  const last = page.at(-1)
  return {
    items: page.map(toItem),
    limit,
    next_cursor: rows.length > limit && last !== undefined ? cursorAfter(last) : null,
  }
}
