/**
 * Starts the real server (npm start's entry point) on a scratch SQLite database, fetches the
 * OpenAPI document it serves at /openapi.json, writes it to the path given, and stops the server.
 * CI lints that document and regenerates the SDK's types from it.
 */
import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const [output] = process.argv.slice(2)
if (!output) throw new Error('usage: served-openapi OUTPUT.json')
const dir = mkdtempSync(join(tmpdir(), 'contacts-openapi-'))
const server = spawn(process.execPath, [fileURLToPath(new URL('../src/server.js', import.meta.url))], {
  env: {
    ...process.env,
    DATABASE_URL: `sqlite:${join(dir, 'contacts.db')}`,
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: 'info',
  },
  stdio: ['ignore', 'pipe', 'inherit'],
})
try {
  const url = await new Promise<string>((resolve, reject) => {
    let log = ''
    server.stdout.on('data', (chunk) => {
      log += chunk
      const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(log)
      if (match?.[1]) resolve(match[1])
    })
    server.once('exit', (code) => reject(new Error(`the server exited (${code}) before listening`)))
  })
  const response = await fetch(`${url}/openapi.json`)
  if (!response.ok) throw new Error(`GET /openapi.json answered ${response.status}`)
  writeFileSync(output, `${JSON.stringify(await response.json(), null, 2)}\n`)
} finally {
  server.kill('SIGTERM')
  await new Promise((resolve) => server.once('exit', resolve))
  rmSync(dir, { recursive: true, force: true })
}
