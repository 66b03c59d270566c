import assert from 'node:assert/strict'
import { type ChildProcess, spawn } from 'node:child_process'
import { once } from 'node:events'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { API_KEY_PATTERN } from '../src/api-keys/api-key-secret.js'
import { BACKENDS, type TestDatabase } from './helpers/backends.js'

const CLI = fileURLToPath(new URL('../../bin/contacts.js', import.meta.url))

interface Run {
  code: number | null
  stdout: string
  stderr: string
}

function runCli(args: string[], env: Record<string, string>): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env } })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => {
      stdout += chunk
    })
    child.stderr.on('data', (chunk) => {
      stderr += chunk
    })
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}

/** `contacts serve` on a free port; resolves with its base URL once it is listening. */
async function serve(
  env: Record<string, string>,
): Promise<{ url: string; process: ChildProcess; log: () => string }> {
  const child = spawn(process.execPath, [CLI, 'serve'], {
    env: { ...process.env, ...env, PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'info' },
  })
  let log = ''
  const url = await new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${log}`)), 20_000)
    child.stdout.on('data', (chunk) => {
      log += chunk
      const match = /Server listening at (http:\/\/127\.0\.0\.1:\d+)/.exec(log)
      if (match?.[1]) {
        clearTimeout(timer)
        resolve(match[1])
      }
    })
    child.stderr.on('data', (chunk) => {
      log += chunk
    })
    child.on('exit', (code) => reject(new Error(`server exited with ${code}:\n${log}`)))
  })
  return { url, process: child, log: () => log }
}

for (const backend of BACKENDS) {
  describe(`the contacts CLI on ${backend.name}`, { skip: backend.skip }, () => {
    let database: TestDatabase
    let env: Record<string, string>
    let server: Awaited<ReturnType<typeof serve>> | undefined

    before(async () => {
      database = await backend.createDatabase()
      env = { DATABASE_URL: database.url }
    })
    after(async () => {
      if (server) {
        server.process.kill('SIGTERM')
        if (server.process.exitCode === null) await once(server.process, 'exit')
      }
      await database?.drop()
    })

    test('org create, key create, a working key, a list without keys, and a revoked key refused', async () => {
      const org = await runCli(['org', 'create', 'Acme Support', '--json'], env)
      assert.equal(org.code, 0, org.stderr)
      const orgJson = JSON.parse(org.stdout)
      assert.deepEqual(Object.keys(orgJson).sort(), ['id', 'name'])
      assert.equal(orgJson.name, 'Acme Support')

      const created = await runCli(
        ['key', 'create', '--org', 'Acme Support', '--name', 'zapier', '--role', 'full_access', '--json'],
        env,
      )
      assert.equal(created.code, 0, created.stderr)
      const key = JSON.parse(created.stdout)
      assert.deepEqual(Object.keys(key).sort(), ['id', 'key', 'name', 'org_id', 'prefix', 'role'])
      assert.match(key.key, API_KEY_PATTERN)
      assert.ok(key.key.startsWith(key.prefix))
      assert.equal(key.org_id, orgJson.id)
      assert.equal(key.role, 'full_access')

      const readOnly = await runCli(
        [
          'key',
          'create',
          '--org',
          orgJson.id,
          '--name',
          'reporting',
          '--role',
          'read_only',
          '--description',
          'BI',
          '--json',
        ],
        env,
      )
      assert.equal(readOnly.code, 0, readOnly.stderr)
      const readOnlyKey = JSON.parse(readOnly.stdout)

      server = await serve(env)
      const contacts = `${server.url}/api/v1/contact`
      const works = await fetch(`${contacts}?api_key=${key.key}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ first_name: 'From the CLI key' }),
      })
      assert.equal(works.status, 201)
      const refusedWrite = await fetch(`${contacts}?api_key=${readOnlyKey.key}`, {
        method: 'POST',
        body: '{}',
      })
      assert.equal(refusedWrite.status, 403)

      const listed = await runCli(['key', 'list', '--org', 'Acme Support', '--json'], env)
      assert.equal(listed.code, 0, listed.stderr)
      assert.ok(!listed.stdout.includes(key.key) && !listed.stdout.includes(readOnlyKey.key), 'never the key')
      const keys = JSON.parse(listed.stdout)
      assert.deepEqual(
        keys.map((k: { prefix: string }) => k.prefix),
        [key.prefix, readOnlyKey.prefix],
      )
      assert.equal(keys[1].description, 'BI')
      const human = await runCli(['key', 'list', '--org', 'Acme Support'], env)
      assert.ok(!human.stdout.includes(key.key))

      const revoked = await runCli(['key', 'revoke', key.id], env)
      assert.equal(revoked.code, 0, revoked.stderr)
      const refused = await fetch(`${contacts}?api_key=${key.key}`)
      assert.equal(refused.status, 401)
      assert.deepEqual(await refused.json(), { detail: 'Invalid API key', code: 'invalid_api_key' })
      const stillFine = await fetch(contacts, { headers: { 'x-api-key': readOnlyKey.key } })
      assert.equal(stillFine.status, 200)

      assert.ok(!server.log().includes(key.key), 'the server log never holds a key')
    })

    test('failures exit non-zero with one clear line on stderr', async () => {
      const cases: [string[], RegExp][] = [
        [['org', 'create', 'Acme Support'], /already exists/],
        [['key', 'create', '--org', 'Nobody', '--name', 'x', '--role', 'full_access'], /no organization/],
        [['key', 'create', '--org', 'Acme Support', '--name', 'x', '--role', 'admin'], /role must be one of/],
        [['key', 'create', '--org', 'Acme Support', '--role', 'read_only'], /--name is required/],
        [['key', 'revoke', '0190a5e4-0000-7000-8000-000000000000'], /no API key/],
        [['frobnicate'], /unknown command/],
      ]
      for (const [args, message] of cases) {
        const run = await runCli(args, env)
        assert.notEqual(run.code, 0, args.join(' '))
        assert.match(run.stderr, message)
        assert.equal(run.stderr.trim().split('\n').length, 1, `one line: ${run.stderr}`)
      }
    })

    test('migrate is idempotent and reports an up-to-date database', async () => {
      const run = await runCli(['migrate', '--json'], env)
      assert.equal(run.code, 0, run.stderr)
      assert.deepEqual(JSON.parse(run.stdout), { applied: [] })
    })
  })
}

describe('the contacts CLI configuration', () => {
  test('an unusable DATABASE_URL fails with one line naming the problem', async () => {
    const run = await runCli(['org', 'list'], { DATABASE_URL: 'mysql://nope' })
    assert.equal(run.code, 1)
    assert.match(run.stderr, /^contacts: DATABASE_URL must start with/)
  })

  test('an invalid PORT is refused at start-up by name', async () => {
    const run = await runCli(['serve'], { PORT: 'eighty', DATABASE_URL: 'sqlite::memory:' })
    assert.equal(run.code, 1)
    assert.match(run.stderr, /invalid PORT/)
  })
})
