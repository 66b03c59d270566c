import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { after, before, describe, test } from 'node:test'
import { sql } from 'kysely'
import { API_KEY_PATTERN } from '../src/api-keys/api-key-secret.js'
import { openDatabase } from '../src/db/database.js'
import { authenticateUser } from '../src/users/users.service.js'
import { BACKENDS, type TestDatabase } from './helpers/backends.js'
import { runCli, type ServerProcess, startServerProcess } from './helpers/processes.js'

for (const backend of BACKENDS) {
  describe(`the contacts CLI on ${backend.name}`, { skip: backend.skip }, () => {
    let database: TestDatabase
    let env: Record<string, string>
    let server: ServerProcess | undefined

    before(async () => {
      database = await backend.createDatabase()
      env = { DATABASE_URL: database.url }
    })
    after(async () => {
      await server?.stop()
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

      server = await startServerProcess(env)
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

    test('user create makes an account that can sign in to the Settings page', async () => {
      const run = await runCli(
        [
          'user',
          'create',
          '--org',
          'Acme Support',
          '--email',
          'Ops@Example.com',
          '--name',
          'Ops',
          '--role',
          'admin',
          '--json',
        ],
        { ...env, CONTACTS_USER_PASSWORD: 'long enough password' },
      )
      assert.equal(run.code, 0, run.stderr)
      const user = JSON.parse(run.stdout)
      assert.equal(user.email, 'Ops@Example.com')
      assert.equal(user.role, 'admin')
      assert.equal(user.created, true)
      assert.ok(!run.stdout.includes('long enough password'))
      const handle = openDatabase(database.url)
      try {
        assert.ok(await authenticateUser(handle.db, 'ops@example.com', 'long enough password'))
        assert.equal(await authenticateUser(handle.db, 'ops@example.com', 'wrong password!!'), null)
      } finally {
        await handle.close()
      }
      const weak = await runCli(
        [
          'user',
          'create',
          '--org',
          'Acme Support',
          '--email',
          'new@example.com',
          '--name',
          'N',
          '--role',
          'member',
        ],
        { ...env, CONTACTS_USER_PASSWORD: 'short' },
      )
      assert.notEqual(weak.code, 0)
      assert.match(weak.stderr, /at least 10 characters/)
    })

    test('import a CSV file with a mapping and a dry run, then export it as CSV and NDJSON', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'contacts-cli-'))
      try {
        const org = JSON.parse((await runCli(['org', 'create', 'Importers', '--json'], env)).stdout)
        const lines = ['Mail;Given;Notes']
        for (let i = 0; i < 2500; i++) lines.push(`p${i}@example.com;P${i};n`)
        lines.push('not an email at all;;')
        const file = join(dir, 'people.csv')
        await writeFile(file, `${lines.join('\n')}\n`)
        const args = [
          'import',
          file,
          '--org',
          'Importers',
          '--delimiter',
          ';',
          '--map',
          'Mail=email',
          '--map',
          'Given=first_name',
          '--map',
          'Notes=',
        ]

        const dry = await runCli([...args, '--dry-run'], env)
        assert.equal(dry.code, 0, dry.stderr)
        assert.match(dry.stdout, /^dry run: 2501 rows: 2501 created, 0 updated, 0 unchanged, 0 failed$/m)
        // Not a terminal here: plain progress lines, the last at 100%.
        assert.match(dry.stderr, /^import \(dry run\): 100% 2501 rows/m)

        const run = await runCli([...args, '--json'], env)
        assert.equal(run.code, 0, run.stderr)
        const job = JSON.parse(run.stdout)
        assert.deepEqual(
          [job.status, job.created, job.failed, job.mapping],
          ['completed', 2501, 0, { Mail: 'email', Given: 'first_name', Notes: null }],
        )
        const again = await runCli(args, env)
        assert.match(again.stdout, /^2501 rows: 0 created, 0 updated, 2501 unchanged, 0 failed$/m)

        const csv = await runCli(['export', '--org', org.id], env)
        assert.equal(csv.code, 0, csv.stderr)
        const csvLines = csv.stdout.trim().split('\n')
        assert.equal(csvLines.length, 2502)
        assert.ok(csvLines[0]?.startsWith('id,first_name,last_name,email,phone_number,external_id'))

        const out = join(dir, 'out.ndjson')
        const ndjson = await runCli(
          [
            'export',
            '--org',
            'Importers',
            '--format',
            'ndjson',
            '--filter',
            'email=p7@example.com',
            '--output',
            out,
          ],
          env,
        )
        assert.equal(ndjson.code, 0, ndjson.stderr)
        assert.match(ndjson.stdout, /exported 1 contacts/)
        const [only] = (await readFile(out, 'utf8'))
          .trim()
          .split('\n')
          .map((line) => JSON.parse(line))
        assert.equal(only.first_name, 'P7')

        const missing = await runCli(['import', join(dir, 'nope.csv'), '--org', 'Importers'], env)
        assert.equal(missing.code, 1)
        assert.match(missing.stderr, /ENOENT|no such file/)
        const badMap = await runCli(['import', file, '--org', 'Importers', '--map', 'oops'], env)
        assert.equal(badMap.code, 2)
      } finally {
        await rm(dir, { recursive: true, force: true })
      }
    })

    test('backup writes a consistent copy of a database being written to, and refuses what it cannot do', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'contacts-backup-'))
      const file = join(dir, 'contacts-backup.db')
      if (backend.name === 'postgres') {
        const refused = await runCli(['backup', file], env)
        assert.equal(refused.code, 1)
        assert.equal(
          refused.stderr,
          'contacts: backup copies a SQLite database; back up PostgreSQL with pg_dump\n',
        )
        await rm(dir, { recursive: true, force: true })
        return
      }
      const writer = await startServerProcess(env)
      try {
        await runCli(['org', 'create', 'Backed Up'], env)
        const key = JSON.parse(
          (
            await runCli(
              ['key', 'create', '--org', 'Backed Up', '--name', 'w', '--role', 'full_access', '--json'],
              env,
            )
          ).stdout,
        ).key as string
        const create = async (n: number) => {
          const response = await fetch(`${writer.url}/api/v1/contact?api_key=${key}`, {
            method: 'POST',
            headers: { 'content-type': 'application/json' },
            body: JSON.stringify({ first_name: `Backed ${n}`, email: `backed${n}@example.com` }),
          })
          assert.equal(response.status, 201)
          return ((await response.json()) as { data: { id: string } }).data.id
        }
        const before = await Promise.all(Array.from({ length: 50 }, (_, n) => create(n)))
        // Writes go on, four at a time, while the backup is taken.
        let writing = true
        let written = before.length
        const writers = Array.from({ length: 4 }, async () => {
          while (writing) await create(written++)
        })
        const backup = await runCli(['backup', file, '--json'], env)
        writing = false
        await Promise.all(writers)
        assert.equal(backup.code, 0, backup.stderr)
        const { bytes } = JSON.parse(backup.stdout)
        assert.ok(bytes > 0)

        const copy = openDatabase(`sqlite:${file}`)
        try {
          const [check] = (await sql<{ integrity_check: string }>`pragma integrity_check`.execute(copy.db))
            .rows
          assert.equal(check?.integrity_check, 'ok')
          const org = await copy.db
            .selectFrom('organizations')
            .select('id')
            .where('name', '=', 'Backed Up')
            .executeTakeFirstOrThrow()
          const stored = await copy.db
            .selectFrom('contacts')
            .select(['id'])
            .where('org_id', '=', org.id)
            .where('deleted_at', 'is', null)
            .execute()
          // One snapshot: what was acknowledged before it began, none torn, and the count its
          // triggers keep in the same transactions agreeing with the rows.
          assert.ok(stored.length >= before.length && stored.length <= written, `${stored.length} contacts`)
          for (const id of before) assert.ok(stored.some((row) => row.id === id))
          const counted = await copy.db
            .selectFrom('contact_counts')
            .select((eb) => eb.fn.sum<number>('live').as('live'))
            .where('org_id', '=', org.id)
            .executeTakeFirstOrThrow()
          assert.equal(Number(counted.live), stored.length)
        } finally {
          await copy.close()
        }
        const upToDate = await runCli(['migrate', '--json'], { DATABASE_URL: `sqlite:${file}` })
        assert.deepEqual(JSON.parse(upToDate.stdout), { applied: [] })

        const again = await runCli(['backup', file], env)
        assert.equal(again.code, 1)
        assert.equal(again.stderr, `contacts: ${file} already exists; a backup never overwrites a file\n`)
        const nowhere = await runCli(['backup', join(dir, 'other.db')], {
          DATABASE_URL: `sqlite:${join(dir, 'missing.db')}`,
        })
        assert.equal(nowhere.code, 1)
        assert.equal(nowhere.stderr, `contacts: no database at ${join(dir, 'missing.db')}\n`)
        assert.equal((await runCli(['backup'], env)).code, 2)
      } finally {
        await writer.stop()
        await rm(dir, { recursive: true, force: true })
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
