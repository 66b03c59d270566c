/**
 * A map that keeps its `capacity` most recently used entries: the bound on caches whose keys come
 * from requests (SQL texts, sets of columns), so that keys never seen before cannot grow it.
 */
export function recentlyUsed<V>(capacity: number) {
  const entries = new Map<string, V>()
  return {
    /** The entry for `key`, made by `make` (and the least recently used one dropped) if absent. */
    get(key: string, make: () => V): V {
      const kept = entries.get(key)
      if (kept !== undefined) {
        // Re-inserted, so that a Map's insertion order is the order of use.
        entries.delete(key)
        entries.set(key, kept)
        return kept
      }
      const made = make()
      entries.set(key, made)
      if (entries.size > capacity) {
        const oldest = entries.keys().next().value
        if (oldest !== undefined) entries.delete(oldest)
      }
      return made
    },
    size: () => entries.size,
  }
}
