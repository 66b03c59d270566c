import { spawn, spawnSync } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { closeSync, openSync, readFileSync, rmSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const SERVER = fileURLToPath(new URL('./server.js', import.meta.url))

/**
 * The options `npm start` gives node (package.json), so that the benchmark's server runs as the
 * production one does: a young generation of 2 × 8 MiB instead of node's 2 × 16 MiB, which keeps
 * about 20 MB off the server's resident memory.
 */
export const PRODUCTION_NODE_OPTIONS: readonly string[] = (() => {
  const packageJson = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as {
    scripts: { start: string }
  }
  const [command, ...words] = packageJson.scripts.start.split(/\s+/)
  if (command !== 'node') throw new Error(`npm start does not run node: ${packageJson.scripts.start}`)
  return words.filter((word) => word.startsWith('--'))
})()
/** The server runs on core 1 and the load generator on core 0 when the machine allows it. */
export const canPin = spawnSync('taskset', ['--version']).status === 0 && cpus().length >= 2

/** PostgreSQL connections of the bench's server: at most this many transactions at once. */
export const DATABASE_POOL_SIZE = 20

/** Starts bench/server.ts (the production app) as a child process on the given database. */
export async function startServer(
  databaseUrl: string,
  options: { nodeArgs?: string[] } = {},
): Promise<{ url: string; pid: number; stop(): Promise<void> }> {
  const env = {
    ...process.env,
    DATABASE_URL: databaseUrl,
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    DATABASE_POOL_SIZE: String(DATABASE_POOL_SIZE),
    RATE_LIMIT_PER_KEY: '1000000000',
    RATE_LIMIT_PER_ADDRESS: '1000000000',
    // The benchmark's webhook receiver listens on loopback.
    WEBHOOK_ALLOWED_NETWORKS: '127.0.0.0/8',
  }
  // The access log goes to a file, as in production: a pipe read by this (busy) process would
  // make every log write wait for the load generator and measure that instead of the server.
  const logPath = join(tmpdir(), `contacts-bench-${randomBytes(4).toString('hex')}.log`)
  const logFile = openSync(logPath, 'w')
  const command = canPin ? 'taskset' : process.execPath
  const nodeArgs = [...PRODUCTION_NODE_OPTIONS, ...(options.nodeArgs ?? []), SERVER]
  const args = canPin ? ['-c', '1', process.execPath, ...nodeArgs] : nodeArgs
  const child = spawn(command, args, { env, stdio: ['ignore', logFile, 'inherit'] })
  closeSync(logFile)
  let exited = false
  child.once('exit', () => {
    exited = true
  })
  for (let waited = 0; waited < 30_000; waited += 50) {
    const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(readFileSync(logPath, 'utf8'))
    if (match?.[1]) {
      return {
        url: match[1],
        pid: child.pid as number,
        stop: () =>
          new Promise((done) => {
            if (exited) return done()
            child.once('exit', () => {
              rmSync(logPath, { force: true })
              done()
            })
            child.kill('SIGTERM')
          }),
      }
    }
    if (exited) break
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  throw new Error(`the bench server did not start:\n${readFileSync(logPath, 'utf8')}`)
}

const RECEIVER = fileURLToPath(new URL('./receiver.js', import.meta.url))
const BARE_SERVER = fileURLToPath(new URL('./bare-server.js', import.meta.url))

/** bench/receiver.ts in a child process, on the load generator's core when pinning. */
export async function startReceiver(): Promise<{ url: string; stop(): Promise<void> }> {
  const { origin, stop } = await startListener(RECEIVER, '0', 'the bench webhook receiver')
  return { url: `${origin}/hook`, stop }
}

/** bench/bare-server.ts in a child process, on the server's core when pinning. */
export function startBareServer(): Promise<{ origin: string; pid: number; stop(): Promise<void> }> {
  return startListener(BARE_SERVER, '1', 'the bare reference server')
}

/** A script that prints "listening PORT" once it listens on loopback. */
async function startListener(
  script: string,
  core: string,
  what: string,
): Promise<{ origin: string; pid: number; stop(): Promise<void> }> {
  const command = canPin ? 'taskset' : process.execPath
  const args = canPin ? ['-c', core, process.execPath, script] : [script]
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk) => {
    output += chunk
  })
  for (let waited = 0; waited < 10_000; waited += 20) {
    const port = /listening (\d+)/.exec(output)?.[1]
    if (port) {
      return {
        origin: `http://127.0.0.1:${port}`,
        pid: child.pid as number,
        stop: () =>
          new Promise((done) => {
            child.once('exit', () => done())
            child.kill('SIGTERM')
          }),
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 20))
  }
  child.kill('SIGKILL')
  throw new Error(`${what} did not start`)
}
