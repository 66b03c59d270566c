/**
 * The targets the issues set for `npm run bench`, checked against the figures of one run: each
 * with the figure reached, whether it holds, and what the same run measured that bounds it, where
 * it measured one. A run so says for itself which targets hold, instead of its figures being
 * compared with the issues by hand.
 */
import type { ImportBenchResult } from './import.js'

type Backend = 'sqlite' | 'postgres'

/** What the checks read of a backend's results (bench/run.ts `measure`). */
export interface BackendFigures {
  backend: Backend
  peak_rss_mb: number
  batch_upsert_contacts_per_second: number
  put_to_pgbench: number | null
  put_transaction_to_pgbench: number | null
  put_webhook_to_put: number
  routes: readonly { route: string; p99_ms: number; max_ms: number; ratio_to_ceiling: number }[]
}

export type ImportFigures = Pick<
  ImportBenchResult,
  | 'backend'
  | 'rows'
  | 'import_rows_per_second'
  | 'export_rows_per_second'
  | 'peak_rss_mb_after_import'
  | 'database_floor_rows_per_second'
>

export interface TargetCheck {
  issue: number
  target: string
  backend: Backend | null
  /** The figure of this run, as the table shows it; "not measured" when the run did not take it. */
  reached: string
  met: boolean
  /**
   * What the same run measured that the figure can hardly pass while the work stays what it is:
   * PostgreSQL alone storing the same rows, pgbench running the PUT's own transaction, node:http
   * alone spending the PUT's CPU a request. Null where the run measured no such thing.
   */
  bound: string | null
}

/** Routes of the bench that are not the service's own: the ceiling's fixed JSON, node:http alone. */
const REFERENCE_ROUTES = new Set(['ceiling', 'bare_put'])

const BACKEND_NAMES: Record<Backend, string> = { sqlite: 'SQLite', postgres: 'PostgreSQL' }

const finite = (value: number | null | undefined): value is number =>
  typeof value === 'number' && Number.isFinite(value)

/** A check whose figure passes `holds`, or fails as not measured when the run has no figure. */
function check(
  base: Omit<TargetCheck, 'reached' | 'met' | 'bound'>,
  value: number | null | undefined,
  holds: (value: number) => boolean,
  show: (value: number) => string,
  bound: string | null = null,
): TargetCheck {
  if (!finite(value)) return { ...base, reached: 'not measured', met: false, bound }
  return { ...base, reached: show(value), met: holds(value), bound }
}

const ratio = (value: number) => value.toFixed(3)
const ms = (value: number) => `${Math.round(value)} ms`
const mb = (value: number) => `${value.toFixed(1)} MB`
const perSecond = (unit: string) => (value: number) =>
  `${Math.round(value).toLocaleString('en-US')} ${unit}/s`

export function checkTargets(
  results: readonly BackendFigures[],
  imported: ImportFigures | null,
): TargetCheck[] {
  const of = (backend: Backend) => results.find((result) => result.backend === backend)
  const route = (backend: Backend, name: string) => of(backend)?.routes.find((r) => r.route === name)
  const sqlite = of('sqlite')
  const postgres = of('postgres')
  const floor = imported?.backend === 'postgres' ? imported.database_floor_rows_per_second : null
  const floorBound = finite(floor)
    ? `PostgreSQL alone storing the same people, no client: ${perSecond('rows')(floor)}`
    : null
  const checks: TargetCheck[] = []

  if (sqlite) {
    checks.push(
      check(
        { issue: 6, target: 'PUT ≥ 0.35 of the ceiling', backend: 'sqlite' },
        route('sqlite', 'put')?.ratio_to_ceiling,
        (v) => v >= 0.35,
        ratio,
      ),
      check(
        { issue: 6, target: 'GET by id ≥ 0.5 of the ceiling', backend: 'sqlite' },
        route('sqlite', 'get')?.ratio_to_ceiling,
        (v) => v >= 0.5,
        ratio,
      ),
    )
  }
  if (postgres) {
    const transaction = postgres.put_transaction_to_pgbench
    checks.push(
      check(
        { issue: 6, target: "PUT ≥ 0.30 of pgbench's UPDATE", backend: 'postgres' },
        postgres.put_to_pgbench,
        (v) => v >= 0.3,
        ratio,
        finite(transaction)
          ? `pgbench running the changing PUT's whole transaction, no server: ${ratio(transaction)}`
          : null,
      ),
    )
  }
  for (const result of results) {
    const bare = route(result.backend, 'bare_put')
    checks.push(
      check(
        { issue: 6, target: 'p99 of PUT ≤ 25 ms', backend: result.backend },
        route(result.backend, 'put')?.p99_ms,
        (v) => v <= 25,
        ms,
        finite(bare?.p99_ms) ? `node:http alone at the PUT's CPU a request: p99 ${ms(bare.p99_ms)}` : null,
      ),
    )
    const served = result.routes.filter((r) => !REFERENCE_ROUTES.has(r.route) && finite(r.max_ms))
    const slowest = served.reduce<(typeof served)[number] | undefined>(
      (worst, r) => (worst === undefined || r.max_ms > worst.max_ms ? r : worst),
      undefined,
    )
    checks.push(
      check(
        { issue: 6, target: 'no request over 250 ms', backend: result.backend },
        slowest?.max_ms,
        (v) => v <= 250,
        (v) => `${ms(v)} (${slowest?.route})`,
      ),
      check(
        { issue: 6, target: 'peak server RSS ≤ 150 MB', backend: result.backend },
        result.peak_rss_mb,
        (v) => v <= 150,
        mb,
      ),
    )
  }
  if (postgres) {
    checks.push(
      check(
        { issue: 6, target: 'batch upsert ≥ 20,000 contacts/s', backend: 'postgres' },
        postgres.batch_upsert_contacts_per_second,
        (v) => v >= 20_000,
        perSecond('contacts'),
        floorBound,
      ),
    )
  }
  for (const result of results) {
    checks.push(
      check(
        { issue: 8, target: 'PUT with one webhook ≥ 0.85 of the PUT without', backend: result.backend },
        result.put_webhook_to_put,
        (v) => v >= 0.85,
        ratio,
      ),
    )
  }
  if (imported) {
    const backend = imported.backend
    checks.push(
      check(
        {
          issue: 9,
          target: `CSV import of ${imported.rows.toLocaleString('en-US')} rows ≥ 20,000 rows/s`,
          backend,
        },
        imported.import_rows_per_second,
        (v) => v >= 20_000,
        perSecond('rows'),
        floorBound,
      ),
      check(
        { issue: 9, target: "the import's peak server RSS < 250 MB", backend },
        imported.peak_rss_mb_after_import,
        (v) => v < 250,
        mb,
      ),
      check(
        { issue: 9, target: 'CSV export ≥ 50,000 rows/s', backend },
        imported.export_rows_per_second,
        (v) => v >= 50_000,
        perSecond('rows'),
      ),
    )
  }
  return checks
}

/** The checks as a Markdown table, with a word on what a --quick run's figures are worth. */
export function targetsTable(checks: readonly TargetCheck[], quick: boolean): string[] {
  const met = checks.filter((c) => c.met).length
  return [
    `Targets of issues #6, #8 and #9 in this run: ${met} of ${checks.length} met.${
      quick
        ? ' A --quick run seeds 10,000 contacts and measures each route for 0.75 s: its figures only indicate.'
        : ''
    }`,
    '',
    '| issue | target | backend | reached | met | bounded, in this run, by |',
    '| --- | --- | --- | --- | --- | --- |',
    ...checks.map(
      (c) =>
        `| #${c.issue} | ${c.target} | ${c.backend ? BACKEND_NAMES[c.backend] : '–'} | ${c.reached} | ${c.met ? 'yes' : 'no'} | ${c.bound ?? '–'} |`,
    ),
  ]
}
