/** Exponential backoff with jitter: about base·2^(n-1), capped, each delay drawn from its upper half. */
export function retryDelayMs(attempt: number, baseMs: number, maxDelayMs: number, random = Math.random) {
  const ceiling = Math.min(maxDelayMs, baseMs * 2 ** Math.min(attempt - 1, 40))
  return Math.round(ceiling / 2 + random() * (ceiling / 2))
}
