import { setFlagsFromString } from 'node:v8'
import { givenOnCommandLine } from './v8-flags.js'

/**
 * How far V8 lets the heap grow past what its last full collection kept before it collects
 * again. Left to itself V8 lets a busy process grow to several times that: the passing garbage of
 * an import took the server from 130 MB to over 300 MB.
 *
 * - While the process serves the API, 30%. Against 60%, alternated `npm run bench -- --quick`
 *   runs peaked 8 to 13 MB lower (see docs/PERFORMANCE.md, Memory); the CPU a request cost moved
 *   within the runs' noise, but a batch upsert of 1000 new people, whose items live through the
 *   call's statements, cost the server 6 to 18% more CPU: its survivors fill the old generation,
 *   which is now collected about twice as often.
 * - While an import or an export runs, 60%. An import holds each batch's rows across its database
 *   round trips, so they outlive the young generation; collecting them 30% past what was kept
 *   cost an import about a tenth of its rate. An export of 200,000 rows ran at 53,408 and 54,381
 *   rows/s with 30% against 56,226 and 60,711 with 60%.
 *
 * V8 reads the setting each time it sets the next collection's threshold, so a change holds from
 * the next collection on. A process whose command line sets `--heap-growing-percent` keeps it.
 */
const SERVING_PERCENT = 30
const BULK_PERCENT = 60

let managed = false
let bulkRunning = 0
let currentPercent: number | null = null

function setPercent(percent: number) {
  if (currentPercent === percent) return
  setFlagsFromString(`--heap-growing-percent=${percent}`)
  currentPercent = percent
}

/** From now on this process's heap growth follows what it is doing (the server and dispatcher). */
export function manageHeapGrowth(): void {
  if (managed || givenOnCommandLine('heap-growing-percent')) return
  managed = true
  setPercent(bulkRunning > 0 ? BULK_PERCENT : SERVING_PERCENT)
}

function bulkStarted() {
  bulkRunning += 1
  if (managed) setPercent(BULK_PERCENT)
}

function bulkEnded() {
  bulkRunning -= 1
  if (managed && bulkRunning === 0) setPercent(SERVING_PERCENT)
}

/** Runs bulk work (an import job) with the heap growth it needs, then returns to the serving one. */
export async function withBulkHeapGrowth<T>(run: () => Promise<T>): Promise<T> {
  bulkStarted()
  try {
    return await run()
  } finally {
    bulkEnded()
  }
}

/**
 * An export's output, produced with the heap growth it needs from its first piece until it ends
 * or is abandoned (a stream destroyed when its client goes away ends its source).
 */
export async function* iterateWithBulkHeapGrowth<T>(pieces: AsyncIterable<T>): AsyncGenerator<T> {
  bulkStarted()
  try {
    yield* pieces
  } finally {
    bulkEnded()
  }
}

/** The percentage this module last set, or null where it manages nothing (tests, the CLI). */
export const heapGrowthPercent = (): number | null => currentPercent
