/**
 * Writers tell this process's dispatcher that deliveries were queued, so it need not wait for its
 * next poll; dispatchers in other processes find them by polling.
 */
const listeners = new Set<() => void>()

export function onDeliveriesQueued(listener: () => void): () => void {
  listeners.add(listener)
  return () => listeners.delete(listener)
}

export function deliveriesQueued(): void {
  for (const listener of listeners) listener()
}
