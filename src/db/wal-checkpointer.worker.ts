/**
 * The background half of SQLite checkpointing (see wal-checkpointer.ts): on its own thread and
 * connection, copies committed WAL pages into the database file with PASSIVE checkpoints, which
 * never wait for or block the writer, and publishes the WAL's size after each one.
 */
import { parentPort, workerData } from 'node:worker_threads'
import BetterSqlite3 from 'better-sqlite3'

const { path, walFrames, roundInProgress, busyIntervalMs, idleIntervalMs } = workerData as {
  path: string
  /** One slot, shared with the writer: the WAL's size in frames at the last checkpoint. */
  walFrames: Int32Array
  /** One slot, shared with the writer: 1 while a checkpoint of this thread runs. */
  roundInProgress: Int32Array
  busyIntervalMs: number
  idleIntervalMs: number
}
const port = parentPort
if (!port) throw new Error('wal-checkpointer.worker must run as a worker thread')

const database = new BetterSqlite3(path, { fileMustExist: true })
const checkpoint = database.prepare('pragma wal_checkpoint(PASSIVE)')
let timer: NodeJS.Timeout | null = null
let lastFrames = -1

function round() {
  timer = null
  Atomics.store(roundInProgress, 0, 1)
  let outcome: { busy: number; log: number; checkpointed: number }
  try {
    outcome = checkpoint.get() as typeof outcome
  } finally {
    Atomics.store(roundInProgress, 0, 0)
    Atomics.notify(roundInProgress, 0)
  }
  const { log, checkpointed } = outcome
  Atomics.store(walFrames, 0, log)
  // A WAL that grew since the last round is being written to: come back soon.
  const idle = log === lastFrames && checkpointed === log
  lastFrames = log
  timer = setTimeout(round, idle ? idleIntervalMs : busyIntervalMs)
}

port.on('message', (message) => {
  if (message !== 'stop') return
  if (timer) clearTimeout(timer)
  database.close()
  port.close()
})

round()
