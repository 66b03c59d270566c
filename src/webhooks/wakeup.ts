/**
 * Writers tell this process's dispatcher that it has work, so it need not wait for its next poll;
 * dispatchers in other processes find it by polling.
 */
const queuedListeners = new Set<() => void>()
const appendedListeners = new Set<() => void>()

/** Deliveries were queued (on PostgreSQL by the write itself; a redelivery; a webhook changed). */
export function onDeliveriesQueued(listener: () => void): () => void {
  queuedListeners.add(listener)
  return () => queuedListeners.delete(listener)
}

export function deliveriesQueued(): void {
  for (const listener of queuedListeners) listener()
}

/** Events were appended whose deliveries nobody queued yet (SQLite: the dispatcher queues them). */
export function onEventsAppended(listener: () => void): () => void {
  appendedListeners.add(listener)
  return () => appendedListeners.delete(listener)
}

export function eventsAppended(): void {
  for (const listener of appendedListeners) listener()
}
