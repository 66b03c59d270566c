import assert from 'node:assert/strict'
import { describe, test } from 'node:test'
import { API_KEY_PATTERN, generateApiKey, hashApiKey } from '../src/api-keys/api-key-secret.js'
import { ConfigError, loadConfig } from '../src/config.js'
import { normalizePhone } from '../src/contacts/phone.js'
import { DatabaseUrlError, parseDatabaseUrl } from '../src/db/database.js'
import { uuidv7 } from '../src/shared/ids.js'
import { formatTimestamp, parseDateTime } from '../src/shared/time.js'

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
    const first = uuidv7(1_700_000_000_000)
    const second = uuidv7(1_700_000_000_001)
    assert.match(first, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/)
    assert.ok(first < second)
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
    })
    assert.deepEqual(
      [config.port, config.host, config.databaseUrl, config.logLevel],
      [9001, '0.0.0.0', 'postgres://x/y', 'warn'],
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
