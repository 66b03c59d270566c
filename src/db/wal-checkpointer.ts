import { statSync } from 'node:fs'
import { Worker } from 'node:worker_threads'
import type BetterSqlite3 from 'better-sqlite3'

/**
 * SQLite's automatic checkpoint runs inside the commit that crosses its threshold: every thousand
 * pages or so one request waits while the WAL is copied into the database file and both are
 * synced, and with it every other request of the process. Here a worker thread does that copying
 * and syncing on a connection of its own, with PASSIVE checkpoints that never block the writer.
 *
 * A PASSIVE checkpoint cannot reset the WAL while commits keep arriving: the WAL starts over only
 * when a write begins after every frame was copied. So once the worker has seen the WAL past
 * `finishAtFrames`, this connection (the process's only writer) runs one more PASSIVE checkpoint
 * before its next transaction: it copies only the frames written since the worker's last round,
 * and that transaction starts the WAL from the beginning. The WAL so stays near that size however
 * long the load lasts. The worker's count is read from shared memory, not from messages, so a
 * writer that never yields to the event loop (a loop of awaited transactions) still sees it. A
 * worker that falls behind (its sync slowed by a busy disk) cannot let the WAL grow without bound:
 * past `limitBytes` the writer waits for a checkpoint of the whole WAL and empties the file. If
 * the worker dies, automatic checkpoints resume.
 */
export interface WalCheckpointer {
  /** Called by the writer between transactions (before each BEGIN). */
  beforeTransaction(): void
  /**
   * Checkpoints the writer ran itself, and the seconds they took: while one runs (its syncs
   * above all) the writer's thread, and every request on it, waits.
   */
  stats(): { writerCheckpoints: number; writerCheckpointSeconds: number }
  stop(): Promise<void>
}

export interface WalCheckpointerOptions {
  /** WAL size, in frames, past which this connection completes a checkpoint itself. */
  finishAtFrames: number
  /**
   * WAL file size, in bytes, past which this connection waits for a checkpoint of the whole WAL
   * and empties the file: the bound that holds when the worker falls behind (a sync that takes
   * seconds on a busy disk lets the WAL grow by tens of MiB meanwhile).
   */
  limitBytes: number
  /** Pause between the worker's checkpoints while the WAL grows, and while it does not. */
  busyIntervalMs: number
  idleIntervalMs: number
  onError?: (error: unknown) => void
}

/** SQLite's own default, restored when the background checkpointer stops. */
const AUTOMATIC_CHECKPOINT_PAGES = 1000

/** The WAL file's size is looked at before every this many transactions: a system call saved. */
const SIZE_CHECK_EVERY = 32
/** The longest the writer waits for the worker's round before emptying the WAL itself. */
const ROUND_WAIT_MS = 5_000

export function startWalCheckpointer(
  database: BetterSqlite3.Database,
  path: string,
  options: WalCheckpointerOptions,
): WalCheckpointer {
  database.pragma('wal_autocheckpoint = 0')
  const walFrames = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT))
  // 1 while the worker's checkpoint runs: SQLite makes another checkpoint fail rather than wait.
  const roundInProgress = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT))
  const worker = new Worker(new URL('./wal-checkpointer.worker.js', import.meta.url), {
    workerData: {
      path,
      walFrames,
      roundInProgress,
      busyIntervalMs: options.busyIntervalMs,
      idleIntervalMs: options.idleIntervalMs,
    },
  })
  // The thread must not keep a finished process alive; close() stops it in an orderly way.
  worker.unref()
  let stopping = false
  let exited = false

  const resumeAutomaticCheckpoints = () => {
    if (database.open) database.pragma(`wal_autocheckpoint = ${AUTOMATIC_CHECKPOINT_PAGES}`)
  }
  worker.on('error', (error) => {
    options.onError?.(error)
    resumeAutomaticCheckpoints()
  })
  worker.on('exit', () => {
    exited = true
    if (!stopping) resumeAutomaticCheckpoints()
  })

  const walPath = `${path}-wal`
  let untilSizeCheck = SIZE_CHECK_EVERY
  let writerCheckpoints = 0
  let writerCheckpointMs = 0
  /** Runs a checkpoint on this connection; whether it ran to its end. */
  const checkpointHere = (mode: 'PASSIVE' | 'TRUNCATE') => {
    const started = performance.now()
    try {
      const [result] = database.pragma(`wal_checkpoint(${mode})`) as { busy: number }[]
      return result?.busy === 0
    } catch (error) {
      // A statement left mid-iteration (a streamed export) holds the connection: a later
      // transaction comes back here.
      if (!/busy executing/i.test(String((error as Error).message))) options.onError?.(error)
      return false
    } finally {
      writerCheckpoints++
      writerCheckpointMs += performance.now() - started
    }
  }
  /** Empties the WAL, waiting for the worker's rounds to end (each attempt may meet a new one). */
  const emptyWal = () => {
    const deadline = Date.now() + ROUND_WAIT_MS
    for (let attempt = 0; attempt < 3; attempt++) {
      while (Atomics.load(roundInProgress, 0) === 1 && Date.now() < deadline) {
        Atomics.wait(roundInProgress, 0, 1, Math.max(1, deadline - Date.now()))
      }
      if (checkpointHere('TRUNCATE')) return
    }
  }

  return {
    beforeTransaction() {
      if (exited) return
      untilSizeCheck -= 1
      if (untilSizeCheck <= 0) {
        untilSizeCheck = SIZE_CHECK_EVERY
        // Only an emptied file shrinks, so its size is at least what the WAL holds.
        if ((statSync(walPath, { throwIfNoEntry: false })?.size ?? 0) >= options.limitBytes) {
          emptyWal()
          Atomics.store(walFrames, 0, 0)
          return
        }
      }
      if (Atomics.load(walFrames, 0) < options.finishAtFrames) return
      // Until the worker's next round: a checkpoint that found the worker mid-round copies
      // nothing, and the next report brings the writer back here.
      Atomics.store(walFrames, 0, 0)
      checkpointHere('PASSIVE')
    },
    stats: () => ({ writerCheckpoints, writerCheckpointSeconds: writerCheckpointMs / 1000 }),
    async stop() {
      if (stopping) return
      stopping = true
      if (!exited) {
        const gone = new Promise<void>((resolve) => worker.once('exit', () => resolve()))
        // Waited for, the thread must keep the process alive until it is gone.
        worker.ref()
        worker.postMessage('stop')
        await gone
      }
      resumeAutomaticCheckpoints()
    },
  }
}
