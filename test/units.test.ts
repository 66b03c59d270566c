import assert from 'node:assert/strict'
import { createHmac } from 'node:crypto'
import { describe, test } from 'node:test'
import { API_KEY_PATTERN, generateApiKey, hashApiKey } from '../src/api-keys/api-key-secret.js'
import { ConfigError, loadConfig } from '../src/config.js'
import { normalizePhone } from '../src/contacts/phone.js'
import { DatabaseUrlError, parseDatabaseUrl } from '../src/db/database.js'
import { contactEventJson, toContactEvent } from '../src/events/events.service.js'
import { progressReporter } from '../src/imports/progress.js'
import { retryDelayMs } from '../src/shared/backoff.js'
import { createUuidv7Generator, uuidv7 } from '../src/shared/ids.js'
import { formatTimestamp, parseDateTime, timestampFromPostgres } from '../src/shared/time.js'
import { signatureHeader } from '../src/webhooks/signature.js'
import { targetPolicy } from '../src/webhooks/targets.js'

describe('phone numbers', () => {
  test('notations of one number normalize to one E.164 value', () => {
    for (const notation of [
      '+1 (650) 111-1234',
      '16501111234',
      '+16501111234',
      '001 650 111 1234',
      '1.650.111.1234',
    ]) {
      assert.equal(normalizePhone(notation), '+16501111234', notation)
    }
  })
  test('text that cannot be a phone number is refused', () => {
    for (const text of ['', 'call me', '+1 650 CALL NOW', '123', '+1234567890123456']) {
      assert.equal(normalizePhone(text), null, text)
    }
  })
})

describe('date-times', () => {
  test('RFC 3339 values are read to the millisecond and written back in UTC with a Z', () => {
    assert.equal(parseDateTime('2023-11-07T05:31:56Z')?.toISOString(), '2023-11-07T05:31:56.000Z')
    assert.equal(parseDateTime('2023-11-07T07:31:56.123456+02:00')?.toISOString(), '2023-11-07T05:31:56.123Z')
    assert.equal(parseDateTime('0001-01-01T00:00:00Z')?.toISOString(), '0001-01-01T00:00:00.000Z')
    assert.equal(formatTimestamp(new Date('2023-11-07T05:31:56.000Z')), '2023-11-07T05:31:56Z')
    assert.equal(formatTimestamp('2023-11-07T05:31:56.120Z'), '2023-11-07T05:31:56.120Z')
    assert.equal(formatTimestamp('2023-11-07T05:31:56.000Z'), '2023-11-07T05:31:56Z')
    assert.equal(formatTimestamp('2023-11-07T07:31:56.5+02:00'), '2023-11-07T05:31:56.500Z')
  })
  test("PostgreSQL's timestamps read as the strings SQLite stores for the same instants", () => {
    const driverParser = (text: string) => new Date(text.replace(' ', 'T').replace(/([+-]\d{2})$/, '$1:00'))
    const cases: [string, string][] = [
      ['2026-11-28 06:05:01.123+00', '2026-11-28T06:05:01.123Z'],
      ['2026-11-28 06:05:01+00', '2026-11-28T06:05:01.000Z'],
      ['2026-11-28 06:05:01.5+00', '2026-11-28T06:05:01.500Z'],
      ['2026-11-28 06:05:01.123456+00', '2026-11-28T06:05:01.123Z'],
      // A session in another time zone: through the driver's parser.
      ['2026-11-28 08:05:01.123+02', '2026-11-28T06:05:01.123Z'],
    ]
    for (const [text, stored] of cases) {
      assert.equal(timestampFromPostgres(text, driverParser), stored, text)
      assert.equal(timestampFromPostgres(text, driverParser), new Date(stored).toISOString())
    }
    assert.equal(
      timestampFromPostgres('infinity', () => 'infinity'),
      'infinity',
    )
  })
  test('impossible calendar values are refused, not rolled over', () => {
    for (const text of [
      '2023-02-29T00:00:00Z',
      '2023-04-31',
      '2023-01-01T24:00:00Z',
      '2023-01-01T10:00:60Z',
      '2023-01-01T10:00:00+25:00',
    ]) {
      assert.equal(parseDateTime(text), null, text)
    }
    assert.ok(parseDateTime('2024-02-29T00:00:00Z'))
  })
})

describe('ids and keys', () => {
  test('uuid v7 ids are valid uuids that sort by creation time', () => {
    let now = 1_700_000_000_000
    const next = createUuidv7Generator(() => now)
    const first = next()
    now += 1
    const second = next()
    assert.match(first, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    assert.equal(first.slice(0, 13), '018bcfe5-6800')
    assert.ok(first < second)
  })
  test('uuid v7 ids made within one millisecond, or after the clock steps back, still sort in the order made', () => {
    let now = 1_700_000_000_000
    const next = createUuidv7Generator(() => now)
    const made = Array.from({ length: 5000 }, () => next())
    now -= 5
    made.push(next(), next())
    assert.deepEqual([...made].sort(), made)
    assert.equal(new Set(made).size, made.length)
    for (const id of made)
      assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    const fromDefaultClock = Array.from({ length: 1000 }, () => uuidv7())
    assert.deepEqual([...fromDefaultClock].sort(), fromDefaultClock)
  })
  test('API keys are in- plus 43 base64url characters, unique, and stored only as a hash', () => {
    const a = generateApiKey()
    const b = generateApiKey()
    assert.match(a.key, API_KEY_PATTERN)
    assert.notEqual(a.key, b.key)
    assert.equal(a.hash, hashApiKey(a.key))
    assert.ok(!a.hash.includes(a.key.slice(3)))
    assert.equal(a.prefix, a.key.slice(0, 10))
  })
})

describe('configuration', () => {
  test('defaults follow the contract', () => {
    const config = loadConfig({})
    assert.equal(config.host, '127.0.0.1')
    assert.equal(config.port, 8000)
    assert.equal(config.databaseUrl, 'sqlite:./data/contacts.db')
  })
  test('environment variables are read and converted', () => {
    const config = loadConfig({
      PORT: '9001',
      HOST: '0.0.0.0',
      DATABASE_URL: 'postgres://x/y',
      LOG_LEVEL: 'warn',
      SQLITE_CACHE_MB: '64',
    })
    assert.deepEqual(
      [config.port, config.host, config.databaseUrl, config.logLevel, config.sqliteCacheMb],
      [9001, '0.0.0.0', 'postgres://x/y', 'warn', 64],
    )
  })
  test('a bad value is refused by variable name', () => {
    assert.throws(
      () => loadConfig({ PORT: '70000' }),
      (error: Error) => error instanceof ConfigError && /PORT/.test(error.message),
    )
    assert.throws(() => loadConfig({ LOG_LEVEL: 'loud' }), /LOG_LEVEL/)
  })
  test('DATABASE_URL takes the contract’s forms and nothing else', () => {
    assert.deepEqual(parseDatabaseUrl('sqlite:./data/x.db'), { dialect: 'sqlite', path: './data/x.db' })
    assert.deepEqual(parseDatabaseUrl('file:/tmp/x.db'), { dialect: 'sqlite', path: '/tmp/x.db' })
    assert.equal(parseDatabaseUrl('postgresql://u@h/d').dialect, 'postgres')
    assert.throws(() => parseDatabaseUrl('mysql://u@h/d'), DatabaseUrlError)
    assert.throws(() => parseDatabaseUrl('sqlite:'), DatabaseUrlError)
  })
})

describe('webhook building blocks', () => {
  const row = (data: string) => ({
    seq: 7,
    org_id: '0193a5a1-0000-7000-8000-000000000001',
    id: '0193a5a1-0000-7000-8000-000000000002',
    contact_id: '0193a5a1-0000-7000-8000-000000000003',
    type: 'contact.updated' as const,
    actor_type: 'api_key' as const,
    actor_id: '0193a5a1-0000-7000-8000-000000000004',
    created_at: '2026-11-27T10:15:00.000Z',
    data,
  })

  test('a delivery body is the history event, byte for byte, whatever the stored data holds', () => {
    for (const data of [
      JSON.stringify({
        contact: { id: 'x', first_name: 'Zoë "Z"', channels: {} },
        changes: { a: { previous: null, current: [1] } },
      }),
      JSON.stringify({}),
      JSON.stringify({ redacted: true }),
    ]) {
      assert.equal(contactEventJson(row(data)), JSON.stringify(toContactEvent(row(data))))
    }
  })

  test('internal addresses are refused unless their network is allowed', () => {
    const closed = targetPolicy('')
    for (const address of [
      '127.0.0.1',
      '10.0.0.1',
      '172.31.255.255',
      '192.168.0.1',
      '169.254.169.254',
      '::1',
      'fd00::1',
      'fe80::1',
      '::ffff:127.0.0.1',
      '0.0.0.0',
      '100.64.0.1',
    ])
      assert.equal(closed.allows(address), false, address)
    for (const address of ['93.184.216.34', '2606:2800:220:1:248:1893:25c8:1946', '172.32.0.1'])
      assert.equal(closed.allows(address), true, address)
    const open = targetPolicy('127.0.0.0/8, 10.1.0.0/16')
    assert.equal(open.allows('127.0.0.1'), true)
    assert.equal(open.allows('10.1.2.3'), true)
    assert.equal(open.allows('10.2.0.1'), false)
    assert.throws(() => targetPolicy('not-a-network'), /not an IP network/)
    assert.throws(() => loadConfig({ WEBHOOK_ALLOWED_NETWORKS: '10.0.0.0/40' }), ConfigError)
  })

  test('retries back off exponentially, with jitter, up to the cap', () => {
    assert.equal(
      retryDelayMs(1, 10_000, 3_600_000, () => 0),
      5_000,
    )
    assert.equal(
      retryDelayMs(1, 10_000, 3_600_000, () => 1),
      10_000,
    )
    assert.equal(
      retryDelayMs(4, 10_000, 3_600_000, () => 1),
      80_000,
    )
    assert.equal(
      retryDelayMs(30, 10_000, 3_600_000, () => 1),
      3_600_000,
    )
    const delays = new Set(Array.from({ length: 50 }, () => retryDelayMs(3, 10_000, 3_600_000)))
    assert.ok(delays.size > 40, 'jitter spreads retries')
    // The default schedule keeps retrying through the whole 24-hour window.
    let elapsed = 0
    let attempts = 0
    while (elapsed < 24 * 3_600_000) elapsed += retryDelayMs(++attempts, 10_000, 3_600_000, () => 1)
    assert.ok(attempts > 24 && attempts < 40, `${attempts} attempts in 24 hours`)
  })

  test('signatures are HMAC-SHA256 of the timestamp and the body', () => {
    const header = signatureHeader('whsec_test', '{"a":1}', 1_700_000_000)
    const expected = createHmac('sha256', 'whsec_test').update('1700000000.{"a":1}').digest('hex')
    assert.equal(header, `t=1700000000,v1=${expected}`)
  })
})

describe('the progress of a CLI command', () => {
  const capture = (isTTY: boolean) => {
    const written: string[] = []
    const stream = { isTTY, write: (text: string) => written.push(text) } as unknown as NodeJS.WriteStream
    return { stream, written }
  }

  test('on a terminal: a bar redrawn in place, with the share done and an ETA from the rate so far', () => {
    let now = 0
    const { stream, written } = capture(true)
    const progress = progressReporter('import', stream, () => now)
    now = 10_000
    progress.update(25, 100, '25 rows')
    assert.equal(written.at(-1), '\r\x1b[2Kimport [######------------------] 25% 25 rows · ETA 0:30')
    now = 40_000
    progress.update(100, 100, '100 rows')
    assert.equal(written.at(-1), '\r\x1b[2Kimport [########################] 100% 100 rows · ETA 0:00')
    progress.end()
    assert.equal(written.at(-1), '\n')
  })

  test('in a file or a pipe: plain lines, at most one every two seconds, and always the last', () => {
    let now = 0
    const { stream, written } = capture(false)
    const progress = progressReporter('export', stream, () => now)
    now = 3_000
    progress.update(10, 100, '10 contacts')
    now = 3_500
    progress.update(20, 100, '20 contacts')
    now = 4_000
    progress.update(100, 100, '100 contacts')
    assert.deepEqual(written, ['export: 10% 10 contacts (ETA 0:27)\n', 'export: 100% 100 contacts\n'])
  })
})
