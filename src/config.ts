import { type Static, Type } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { targetPolicy } from './webhooks/targets.js'

/**
 * Every setting the service reads, declared once. The server, the CLI and the tests all build a
 * Config through `loadConfig`, so a bad value fails at start-up with the variable's name rather
 * than deep inside a request.
 */
export const ConfigSchema = Type.Object({
  host: Type.String({ minLength: 1, default: '127.0.0.1' }),
  port: Type.Integer({ minimum: 0, maximum: 65535, default: 8000 }),
  databaseUrl: Type.String({ minLength: 1, default: 'sqlite:./data/contacts.db' }),
  databasePoolSize: Type.Integer({ minimum: 1, maximum: 200, default: 10 }),
  /** Longest a statement may run (PostgreSQL) or wait for another process's lock (SQLite). */
  databaseStatementTimeoutMs: Type.Integer({ minimum: 1, maximum: 600_000, default: 15_000 }),
  /** Longest a request waits for a free pooled connection before it is answered 503. */
  databasePoolTimeoutMs: Type.Integer({ minimum: 1, maximum: 600_000, default: 5_000 }),
  /**
   * PostgreSQL: keep the frequent statements as named prepared statements on each connection;
   * off behind a pooler that cannot carry them from one transaction's connection to the next.
   */
  databasePreparedStatements: Type.Boolean({ default: true }),
  /**
   * PostgreSQL: how often the GIN indexes' pending lists are moved into their indexes from the
   * background (db/gin-pending-lists.ts); 0 leaves it to the write that finds a list full.
   */
  ginCleanIntervalMs: Type.Integer({ minimum: 0, maximum: 3_600_000, default: 1_000 }),
  /** SQLite's page cache on the server's connection, in MiB: more only for a hot set larger than it. */
  sqliteCacheMb: Type.Integer({ minimum: 1, maximum: 65_536, default: 2 }),
  /** Longest a client may take to send a whole request (headers and body) before it gets 408. */
  requestTimeoutMs: Type.Integer({ minimum: 100, maximum: 3_600_000, default: 30_000 }),
  /** How long an idle keep-alive connection is kept open. */
  keepAliveTimeoutMs: Type.Integer({ minimum: 100, maximum: 3_600_000, default: 72_000 }),
  /**
   * Requests started per turn of the event loop, in the order they arrived (http/admission.ts);
   * 0 starts every request as soon as Node reads it.
   */
  requestsPerTurn: Type.Integer({ minimum: 0, maximum: 10_000, default: 8 }),
  logLevel: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((level) => Type.Literal(level)),
    { default: 'info' },
  ),
  bodyLimitBytes: Type.Integer({ minimum: 1024, default: 1024 * 1024 }),
  trustProxy: Type.Boolean({ default: false }),
  secureCookies: Type.Boolean({ default: false }),
  trashRetentionDays: Type.Number({ minimum: 0, maximum: 3650, default: 30 }),
  redisUrl: Type.Optional(Type.String({ pattern: '^rediss?://' })),
  rateLimitPerKey: Type.Integer({ minimum: 1, default: 1200 }),
  rateLimitPerAddress: Type.Integer({ minimum: 1, default: 3000 }),
  rateLimitWindowMs: Type.Integer({ minimum: 1000, default: 60_000 }),
  /** Bearer token that /metrics requires on the API port; without it (and without a metrics port) /metrics is off. */
  metricsToken: Type.Optional(Type.String({ minLength: 16 })),
  /** Serve /metrics on this port (of HOST) instead of the API's, for an admin network. */
  metricsPort: Type.Optional(Type.Integer({ minimum: 0, maximum: 65535 })),
  /** Whether this process runs CSV import jobs (any number of processes may). */
  importRunner: Type.Boolean({ default: true }),
  /** The largest CSV file an import takes (1 GiB by default). */
  importMaxBytes: Type.Integer({ minimum: 1, default: 1024 * 1024 * 1024 }),
  /** How long a runner holds an import job without reporting progress before another takes it over. */
  importLeaseMs: Type.Integer({ minimum: 1_000, default: 60_000 }),
  /** Whether this process delivers webhooks (any number of processes may). */
  webhookDispatcher: Type.Boolean({ default: true }),
  /** Internal networks (CIDRs, comma-separated) webhooks may be sent to; none by default. */
  webhookAllowedNetworks: Type.String({ default: '' }),
  webhookTimeoutMs: Type.Integer({ minimum: 100, maximum: 120_000, default: 10_000 }),
  webhookConcurrency: Type.Integer({ minimum: 1, maximum: 1000, default: 64 }),
  webhookPollIntervalMs: Type.Integer({ minimum: 10, maximum: 600_000, default: 1_000 }),
  webhookRetryBaseMs: Type.Integer({ minimum: 1, default: 10_000 }),
  webhookRetryMaxDelayMs: Type.Integer({ minimum: 1, default: 3_600_000 }),
  /** How long a delivery is retried; the default keeps trying for 24 hours. */
  webhookRetryWindowMs: Type.Integer({ minimum: 0, default: 86_400_000 }),
  /** How long a webhook may fail every delivery before it is disabled. */
  webhookDisableAfterMs: Type.Integer({ minimum: 0, default: 86_400_000 }),
})

export type Config = Readonly<Static<typeof ConfigSchema>>

/** Environment variable → config key; the names are part of the operator contract. */
const ENVIRONMENT_KEYS = {
  HOST: 'host',
  PORT: 'port',
  DATABASE_URL: 'databaseUrl',
  DATABASE_POOL_SIZE: 'databasePoolSize',
  DATABASE_STATEMENT_TIMEOUT_MS: 'databaseStatementTimeoutMs',
  DATABASE_POOL_TIMEOUT_MS: 'databasePoolTimeoutMs',
  DATABASE_PREPARED_STATEMENTS: 'databasePreparedStatements',
  GIN_CLEAN_INTERVAL_MS: 'ginCleanIntervalMs',
  SQLITE_CACHE_MB: 'sqliteCacheMb',
  REQUEST_TIMEOUT_MS: 'requestTimeoutMs',
  KEEP_ALIVE_TIMEOUT_MS: 'keepAliveTimeoutMs',
  REQUESTS_PER_TURN: 'requestsPerTurn',
  LOG_LEVEL: 'logLevel',
  BODY_LIMIT_BYTES: 'bodyLimitBytes',
  TRUST_PROXY: 'trustProxy',
  COOKIE_SECURE: 'secureCookies',
  TRASH_RETENTION_DAYS: 'trashRetentionDays',
  REDIS_URL: 'redisUrl',
  RATE_LIMIT_PER_KEY: 'rateLimitPerKey',
  RATE_LIMIT_PER_ADDRESS: 'rateLimitPerAddress',
  RATE_LIMIT_WINDOW_MS: 'rateLimitWindowMs',
  METRICS_TOKEN: 'metricsToken',
  METRICS_PORT: 'metricsPort',
  IMPORT_RUNNER: 'importRunner',
  IMPORT_MAX_BYTES: 'importMaxBytes',
  IMPORT_LEASE_MS: 'importLeaseMs',
  WEBHOOK_DISPATCHER: 'webhookDispatcher',
  WEBHOOK_ALLOWED_NETWORKS: 'webhookAllowedNetworks',
  WEBHOOK_TIMEOUT_MS: 'webhookTimeoutMs',
  WEBHOOK_CONCURRENCY: 'webhookConcurrency',
  WEBHOOK_POLL_INTERVAL_MS: 'webhookPollIntervalMs',
  WEBHOOK_RETRY_BASE_MS: 'webhookRetryBaseMs',
  WEBHOOK_RETRY_MAX_DELAY_MS: 'webhookRetryMaxDelayMs',
  WEBHOOK_RETRY_WINDOW_MS: 'webhookRetryWindowMs',
  WEBHOOK_DISABLE_AFTER_MS: 'webhookDisableAfterMs',
} as const satisfies Record<string, keyof Config>

export class ConfigError extends Error {}

export function loadConfig(
  environment: Record<string, string | undefined> = process.env,
  overrides: Partial<Config> = {},
): Config {
  const raw: Record<string, unknown> = {}
  for (const [variable, key] of Object.entries(ENVIRONMENT_KEYS)) {
    const value = environment[variable]
    if (value !== undefined && value !== '') raw[key] = value
  }
  Object.assign(raw, overrides)
  const withDefaults = Value.Default(ConfigSchema, Value.Convert(ConfigSchema, raw))
  const firstError = Value.Errors(ConfigSchema, withDefaults).First()
  if (firstError) {
    const key = firstError.path.slice(1)
    const variable = Object.entries(ENVIRONMENT_KEYS).find(([, k]) => k === key)?.[0] ?? key
    throw new ConfigError(`invalid ${variable}: ${firstError.message}`)
  }
  const config = withDefaults as Config
  try {
    targetPolicy(config.webhookAllowedNetworks)
  } catch (error) {
    throw new ConfigError(`invalid WEBHOOK_ALLOWED_NETWORKS: ${(error as Error).message}`)
  }
  return Object.freeze(config)
}

/** The dispatcher's settings of a service configuration. */
export function dispatcherOptionsOf(config: Config) {
  return {
    policy: targetPolicy(config.webhookAllowedNetworks),
    concurrency: config.webhookConcurrency,
    pollIntervalMs: config.webhookPollIntervalMs,
    timeoutMs: config.webhookTimeoutMs,
    retryBaseMs: config.webhookRetryBaseMs,
    retryMaxDelayMs: config.webhookRetryMaxDelayMs,
    retryWindowMs: config.webhookRetryWindowMs,
    disableAfterMs: config.webhookDisableAfterMs,
  }
}
