import { existsSync } from 'node:fs'
import { parseArgs } from 'node:util'
import * as apiKeys from './api-keys/api-keys.service.js'
import { loadConfig } from './config.js'
import { type DatabaseHandle, openDatabase, parseDatabaseUrl } from './db/database.js'
import { migrateToLatest } from './db/migrations.js'
import * as organizations from './organizations/organizations.service.js'
import * as users from './users/users.service.js'

const USAGE = `Usage: contacts <command> [options]

Commands:
  serve                                   start the HTTP server (same as npm start)
  dispatch                                deliver webhooks only (beside servers run with
                                          WEBHOOK_DISPATCHER=false)
  migrate                                 apply pending database migrations
  org create NAME                         create an organization
  org list                                list organizations
  key create --org ORG --name NAME --role full_access|read_only [--description TEXT]
                                          create an API key (the key is printed once, here only)
  key list --org ORG                      list an organization's keys (prefixes, never keys)
  key revoke ID                           revoke a key; it is refused from its next request on
  user create --org ORG --email EMAIL --name NAME --role owner|admin|member [--password PASSWORD]
                                          create a Settings page account (or give an existing one a
                                          role); the password may come from CONTACTS_USER_PASSWORD
  import FILE --org ORG [--map HEADER=TARGET]... [--delimiter D] [--dry-run]
                                          import contacts from a CSV file (as POST /contact/import);
                                          --map HEADER= skips a column; progress on stderr
  export --org ORG [--format csv|ndjson] [--output FILE] [--filter NAME=VALUE]...
                                          export contacts (as GET /contact/export; filters as its
                                          query parameters) to FILE or standard output
  backup FILE                             write a consistent copy of the SQLite database to FILE,
                                          while the server runs (PostgreSQL: use pg_dump)

ORG is an organization id or name. Add --json for machine-readable output.
The database is DATABASE_URL (default: SQLite at ./data/contacts.db), as for the server.`

class UsageError extends Error {}

type Options = {
  json: boolean
  map?: string[]
  delimiter?: string
  'dry-run'?: boolean
  format?: string
  output?: string
  filter?: string[]
  org?: string
  name?: string
  role?: string
  description?: string
  email?: string
  password?: string
}
type Print = (value: unknown, text: string) => void

function parse(argv: string[]) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      json: { type: 'boolean', default: false },
      org: { type: 'string' },
      name: { type: 'string' },
      role: { type: 'string' },
      description: { type: 'string' },
      email: { type: 'string' },
      password: { type: 'string' },
      map: { type: 'string', multiple: true },
      delimiter: { type: 'string' },
      'dry-run': { type: 'boolean', default: false },
      format: { type: 'string' },
      output: { type: 'string' },
      filter: { type: 'string', multiple: true },
      help: { type: 'boolean', short: 'h', default: false },
    },
  })
  return { options: values as Options & { help: boolean }, positionals }
}

const required = (value: string | undefined, flag: string): string => {
  if (value === undefined || value === '') throw new UsageError(`${flag} is required`)
  return value
}

/** `NAME=VALUE` flags as an object; an empty value is null where `emptyIsNull`. */
function pairs(flags: readonly string[], flag: string, emptyIsNull: boolean): Record<string, string | null> {
  const result: Record<string, string | null> = {}
  for (const pair of flags) {
    const at = pair.lastIndexOf('=')
    if (at <= 0) throw new UsageError(`${flag} takes NAME=VALUE, not "${pair}"`)
    const value = pair.slice(at + 1)
    result[pair.slice(0, at)] = value === '' && emptyIsNull ? null : value
  }
  return result
}

async function withDatabase<T>(run: (database: DatabaseHandle) => Promise<T>): Promise<T> {
  const config = loadConfig()
  const database = openDatabase(config.databaseUrl, {
    poolSize: 2,
    preparedStatements: config.databasePreparedStatements,
  })
  try {
    await migrateToLatest(database)
    return await run(database)
  } finally {
    await database.close()
  }
}

async function runCommand(positionals: string[], options: Options, print: Print): Promise<void> {
  const [command, subcommand, argument] = positionals
  // import, export and backup take a file or nothing where other commands take a subcommand.
  const takesSubcommand = command !== 'import' && command !== 'export' && command !== 'backup'
  const route = subcommand === undefined || !takesSubcommand ? command : `${command} ${subcommand}`
  switch (route) {
    case 'serve': {
      // Loaded only here: the HTTP stack is most of the CLI's start-up time.
      const { startServer } = await import('./serve.js')
      return startServer(loadConfig())
    }
    case 'dispatch': {
      const { startDispatcherProcess } = await import('./serve.js')
      return startDispatcherProcess(loadConfig())
    }
    case 'migrate':
      return withDatabase(async (database) => {
        const result = await migrateToLatest(database)
        const applied = (result.results ?? []).map((r) => r.migrationName)
        print({ applied }, applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date')
      })
    case 'org create':
      return withDatabase(async ({ db }) => {
        const org = await organizations.createOrganization(db, required(argument, 'NAME'))
        print({ id: org.id, name: org.name }, `created organization ${org.name} (${org.id})`)
      })
    case 'org list':
      return withDatabase(async ({ db }) => {
        const orgs = await organizations.listOrganizations(db)
        print(orgs, orgs.map((o) => `${o.id}  ${o.name}`).join('\n') || 'no organizations')
      })
    case 'key create':
      return withDatabase(async ({ db }) => {
        const org = await organizations.resolveOrganization(db, required(options.org, '--org'))
        const key = await apiKeys.createApiKey(db, {
          orgId: org.id,
          name: required(options.name, '--name'),
          role: required(options.role, '--role'),
          description: options.description ?? null,
        })
        print(
          key,
          `created ${key.role} key "${key.name}" (${key.id}) for ${org.name}\n\n  ${key.key}\n\nStore it now: it is shown only once.`,
        )
      })
    case 'key list':
      return withDatabase(async ({ db }) => {
        const org = await organizations.resolveOrganization(db, required(options.org, '--org'))
        const keys = await apiKeys.listApiKeys(db, org.id)
        const lines = keys.map(
          (k) =>
            `${k.id}  ${k.prefix}…  ${k.role.padEnd(11)}  ${k.revoked_at ? 'revoked' : 'active '}  ${k.name}`,
        )
        print(keys, lines.join('\n') || 'no keys')
      })
    case 'key revoke':
      return withDatabase(async ({ db }) => {
        const revoked = await apiKeys.revokeApiKey(db, required(argument, 'ID'))
        print({ id: revoked.id, revoked: true }, `revoked key ${revoked.id}`)
      })
    case 'user create':
      return withDatabase(async ({ db }) => {
        const org = await organizations.resolveOrganization(db, required(options.org, '--org'))
        const password = options.password ?? process.env.CONTACTS_USER_PASSWORD ?? ''
        const { user, created } = await users.addMember(db, org.id, {
          email: required(options.email, '--email'),
          name: options.name ?? '',
          password,
          role: required(options.role, '--role'),
        })
        print(
          { id: user.id, email: user.email, name: user.name, org_id: org.id, role: options.role, created },
          created
            ? `created user ${user.email} (${user.id}) as ${options.role} of ${org.name}`
            : `${user.email} is now ${options.role} of ${org.name}`,
        )
      })
    case 'import':
      return withDatabase(async ({ db }) => {
        const org = await organizations.resolveOrganization(db, required(options.org, '--org'))
        const { importFile } = await import('./imports/import-command.js')
        const job = await importFile(db, org.id, required(subcommand, 'FILE'), {
          mapping: pairs(options.map ?? [], '--map', true),
          ...(options.delimiter === undefined ? {} : { delimiter: options.delimiter }),
          dryRun: options['dry-run'] === true,
        })
        const counts = `${job.rows_read} rows: ${job.created} created, ${job.updated} updated, ${job.unchanged} unchanged, ${job.failed} failed`
        print(
          job,
          job.status === 'completed'
            ? `${job.dry_run ? 'dry run: ' : ''}${counts}${job.failed > 0 ? `\nfailed rows: GET /api/v1/contact/import/${job.id}/failures` : ''}`
            : `import ${job.status}: ${job.error ?? counts}`,
        )
        if (job.status === 'failed') process.exitCode = 1
      })
    case 'export':
      return withDatabase(async (database) => {
        const org = await organizations.resolveOrganization(database.db, required(options.org, '--org'))
        const format = options.format ?? 'csv'
        if (format !== 'csv' && format !== 'ndjson') throw new UsageError('--format is csv or ndjson')
        const { exportToFile } = await import('./exports/export-command.js')
        const count = await exportToFile(
          database,
          org.id,
          format,
          pairs(options.filter ?? [], '--filter', false),
          options.output,
        )
        if (options.output !== undefined)
          print({ exported: count, file: options.output }, `exported ${count} contacts to ${options.output}`)
      })
    case 'backup': {
      const file = required(subcommand, 'FILE')
      const config = loadConfig()
      const location = parseDatabaseUrl(config.databaseUrl)
      // SQLite would make an empty database where none is, and back that up.
      if (location.dialect === 'sqlite' && !existsSync(location.path)) {
        throw new Error(`no database at ${location.path}`)
      }
      // Opened, not migrated: a backup copies the database as it is and changes nothing.
      const database = openDatabase(config.databaseUrl, { poolSize: 1 })
      try {
        const { backupSqlite } = await import('./db/backup.js')
        const { bytes } = await backupSqlite(database, file)
        print({ file, bytes }, `backed up to ${file} (${(bytes / 1_048_576).toFixed(1)} MB)`)
      } finally {
        await database.close()
      }
      return
    }
    default:
      throw new UsageError(command === undefined ? 'a command is required' : `unknown command "${route}"`)
  }
}

export async function main(argv: string[]): Promise<number> {
  try {
    const { options, positionals } = parse(argv)
    if (options.help || positionals[0] === 'help') {
      process.stdout.write(`${USAGE}\n`)
      return 0
    }
    const print: Print = (value, text) =>
      process.stdout.write(`${options.json ? JSON.stringify(value, null, 2) : text}\n`)
    await runCommand(positionals, options, print)
    return 0
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error)
    const isUsage =
      error instanceof UsageError || (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')
    process.stderr.write(`contacts: ${message}${isUsage ? ' (see contacts --help)' : ''}\n`)
    return isUsage ? 2 : 1
  }
}

const code = await main(process.argv.slice(2))
// `serve` and `dispatch` keep running; every other command ends here.
if (code !== 0 || !['serve', 'dispatch'].includes(process.argv[2] ?? '')) process.exitCode = code
