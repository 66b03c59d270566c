import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { type BackendFigures, checkTargets, type ImportFigures, targetsTable } from '../bench/targets.js'

const routes = (overrides: Record<string, Partial<BackendFigures['routes'][number]>> = {}) =>
  ['ceiling', 'put', 'put_changing', 'get', 'list', 'create', 'upsert', 'put_webhook', 'bare_put'].map(
    (route) => ({ route, p99_ms: 20, max_ms: 100, ratio_to_ceiling: 0.6, ...overrides[route] }),
  )

/** A backend whose every figure meets its target. */
const passing = (
  backend: 'sqlite' | 'postgres',
  overrides: Partial<BackendFigures> = {},
): BackendFigures => ({
  backend,
  peak_rss_mb: 140,
  batch_upsert_contacts_per_second: 25_000,
  put_to_pgbench: backend === 'postgres' ? 0.4 : null,
  put_transaction_to_pgbench: backend === 'postgres' ? 0.6 : null,
  put_webhook_to_put: 0.9,
  routes: routes(),
  ...overrides,
})

const importing: ImportFigures = {
  backend: 'postgres',
  rows: 1_000_000,
  import_rows_per_second: 21_000,
  export_rows_per_second: 60_000,
  peak_rss_mb_after_import: 200,
  database_floor_rows_per_second: 15_000,
}

const find = (checks: ReturnType<typeof checkTargets>, target: string, backend: string | null) => {
  const found = checks.find((c) => c.target.startsWith(target) && c.backend === backend)
  assert.ok(found, `no check "${target}" for ${backend}`)
  return found
}

describe("the bench's targets", () => {
  test('a run that reaches every figure meets all eleven kinds of target, on both backends', () => {
    const checks = checkTargets([passing('sqlite'), passing('postgres')], importing)
    assert.equal(checks.length, 15)
    assert.deepEqual(
      checks.filter((c) => !c.met).map((c) => c.target),
      [],
    )
    assert.match(targetsTable(checks, false)[0] ?? '', /15 of 15 met\.$/)
  })

  /** Both backends and the import, every figure the one given, the rest passing. */
  const runWith = (figures: {
    putRatio: number
    getRatio: number
    putP99: number
    slowest: number
    sqliteRss: number
    webhook: number
    putToPgbench: number
    batch: number
    importRate: number
    exportRate: number
    importRss: number
  }) =>
    checkTargets(
      [
        passing('sqlite', {
          peak_rss_mb: figures.sqliteRss,
          put_webhook_to_put: figures.webhook,
          routes: routes({
            put: { ratio_to_ceiling: figures.putRatio, p99_ms: figures.putP99, max_ms: figures.slowest },
            get: { ratio_to_ceiling: figures.getRatio },
          }),
        }),
        passing('postgres', {
          put_to_pgbench: figures.putToPgbench,
          batch_upsert_contacts_per_second: figures.batch,
        }),
      ],
      {
        ...importing,
        import_rows_per_second: figures.importRate,
        export_rows_per_second: figures.exportRate,
        peak_rss_mb_after_import: figures.importRss,
      },
    )

  test('each threshold holds at its own value and fails just past it', () => {
    const at = runWith({
      putRatio: 0.35,
      getRatio: 0.5,
      putP99: 25,
      slowest: 250,
      sqliteRss: 150,
      webhook: 0.85,
      putToPgbench: 0.3,
      batch: 20_000,
      importRate: 20_000,
      exportRate: 50_000,
      importRss: 249.9,
    })
    assert.deepEqual(
      at.filter((c) => !c.met).map((c) => c.target),
      [],
    )
    // Only PostgreSQL's own route figures, left passing, still hold.
    const past = runWith({
      putRatio: 0.349,
      getRatio: 0.499,
      putP99: 26,
      slowest: 251,
      sqliteRss: 150.1,
      webhook: 0.849,
      putToPgbench: 0.299,
      batch: 19_999,
      importRate: 19_999,
      exportRate: 49_999,
      importRss: 250,
    })
    assert.deepEqual(
      past.filter((c) => c.met).map((c) => `${c.target} ${c.backend}`),
      [
        'p99 of PUT ≤ 25 ms postgres',
        'no request over 250 ms postgres',
        'peak server RSS ≤ 150 MB postgres',
        'PUT with one webhook ≥ 0.85 of the PUT without postgres',
      ],
    )
    assert.match(targetsTable(past, false)[0] ?? '', /4 of 15 met\.$/)
  })

  test('the slowest request is that of a route of the service, named; the references do not count', () => {
    const checks = checkTargets(
      [
        passing('postgres', {
          routes: routes({ ceiling: { max_ms: 900 }, bare_put: { max_ms: 800 }, list: { max_ms: 285 } }),
        }),
      ],
      null,
    )
    const slowest = find(checks, 'no request over 250 ms', 'postgres')
    assert.equal(slowest.reached, '285 ms (list)')
    assert.equal(slowest.met, false)
  })

  test('a figure the run did not take is "not measured" and not met', () => {
    const checks = checkTargets(
      [
        passing('sqlite', {
          routes: routes({ put: { p99_ms: Number.NaN } }).filter((r) => r.route !== 'get'),
        }),
      ],
      null,
    )
    for (const target of ['p99 of PUT', 'GET by id']) {
      const missing = find(checks, target, 'sqlite')
      assert.equal(missing.reached, 'not measured')
      assert.equal(missing.met, false)
    }
  })

  test('what bounds a figure is shown where the run measured it', () => {
    const checks = checkTargets(
      [passing('sqlite', { routes: routes({ bare_put: { p99_ms: 31 } }) }), passing('postgres')],
      importing,
    )
    assert.equal(
      find(checks, 'p99 of PUT', 'sqlite').bound,
      "node:http alone at the PUT's CPU a request: p99 31 ms",
    )
    assert.match(find(checks, 'batch upsert', 'postgres').bound ?? '', /PostgreSQL alone .*: 15,000 rows\/s$/)
    assert.match(find(checks, 'CSV import', 'postgres').bound ?? '', /15,000 rows\/s$/)
    assert.match(find(checks, 'PUT ≥ 0.30', 'postgres').bound ?? '', /whole transaction, no server: 0\.600$/)
    // An import on SQLite measures no floor.
    const onSqlite = checkTargets([passing('sqlite')], {
      ...importing,
      backend: 'sqlite',
      database_floor_rows_per_second: null,
    })
    assert.equal(find(onSqlite, 'CSV import', 'sqlite').bound, null)
  })

  test('a run of one backend checks only the targets of that backend, and a quick run says so', () => {
    const checks = checkTargets([passing('sqlite')], null)
    assert.deepEqual(new Set(checks.map((c) => c.backend)), new Set(['sqlite']))
    assert.equal(
      checks.some((c) => c.target.includes('pgbench') || c.target.includes('batch') || c.issue === 9),
      false,
    )
    assert.match(targetsTable(checks, true)[0] ?? '', /--quick run .* only indicate\.$/)
  })
})
