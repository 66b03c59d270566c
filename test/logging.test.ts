import assert from 'node:assert/strict'
import { Writable } from 'node:stream'
import { after, before, describe, test } from 'node:test'
import { redactUrl } from '../src/http/logging.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

class CapturedLog extends Writable {
  readonly lines: string[] = []
  override _write(chunk: Buffer, _encoding: string, done: () => void) {
    this.lines.push(...chunk.toString().split('\n').filter(Boolean))
    done()
  }
}

for (const backend of BACKENDS) {
  describe(`access logs on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let org: TestOrg
    const log = new CapturedLog()

    before(async () => {
      t = await startTestApp(backend, { logStream: log })
      org = await t.createOrg()
    })
    after(() => t?.close())

    test('a request made with ?api_key=in-… leaves no key in any log line', async () => {
      const keys = [org.key, org.readOnlyKey, `in-${'Z'.repeat(43)}`]
      await t.call(org.key, { method: 'GET', url: '/api/v1/contact?page=1' })
      await t.call(org.key, { method: 'POST', url: '/api/v1/contact', payload: { first_name: 5 } })
      await t.call(org.readOnlyKey, { method: 'DELETE', url: '/api/v1/contact/multiple', payload: {} })
      await t.call(keys[2] as string, { method: 'GET', url: '/api/v1/contact' })
      const otherSecrets = ['session=a-session-cookie', 'Bearer a-bearer-token']
      await t.app.inject({
        method: 'GET',
        url: '/api/v1/contact',
        headers: { 'x-api-key': org.key, cookie: otherSecrets[0], authorization: otherSecrets[1] },
      })
      await t.app.inject({ method: 'GET', url: `/api/v1/contact?foo=${org.key}` })

      // Percent-encoded, the parameter's name and the key still authenticate: the query is decoded.
      const secret = key43(org.key)
      const encoded = `api%5Fkey=in%2D%${secret.charCodeAt(0).toString(16)}${secret.slice(1)}`
      const encodedAnswer = await t.app.inject({ method: 'GET', url: `/api/v1/contact?${encoded}` })
      assert.equal(encodedAnswer.statusCode, 200, 'a percent-encoded key is still a key')
      await t.app.inject({
        method: 'GET',
        url: `/api/v1/contact?page=1&%61pi_key=${org.key.replace('-', '%2d')}`,
      })

      // A URL the router cannot decode is refused before any route runs.
      const badUrl = await t.app.inject({
        method: 'GET',
        url: `/api/v1/contact/${org.key}%E0?api_key=${org.key}`,
      })
      assert.equal(badUrl.statusCode, 400)

      const lines = log.lines.filter((line) => line.includes('/api/v1/contact'))
      assert.ok(lines.length >= 8, 'the requests were logged')
      for (const line of log.lines) {
        for (const key of keys) assert.ok(!line.includes(key), `key found in log line: ${line}`)
        for (const secret of otherSecrets)
          assert.ok(!line.includes(secret), `header found in log line: ${line}`)
        assert.ok(!line.includes(key43(org.key)), 'not even the secret part')
        assert.ok(!decodeURIComponent(line).includes(key43(org.key)), 'nor once decoded')
      }
      assert.ok(lines.some((line) => line.includes('api_key=[REDACTED]')))
    })
  })
}

const key43 = (key: string) => key.slice(3)

describe('URL redaction', () => {
  test('scrubs the api_key parameter wherever it stands, and anything shaped like a key', () => {
    const key = `in-${'a'.repeat(43)}`
    assert.equal(redactUrl(`/x?api_key=${key}`), '/x?api_key=[REDACTED]')
    assert.equal(redactUrl(`/x?page=2&api_key=${key}&size=3`), '/x?page=2&api_key=[REDACTED]&size=3')
    assert.equal(redactUrl('/x?API_KEY=whatever'), '/x?API_KEY=[REDACTED]')
    assert.equal(redactUrl(`/x/${key}`), '/x/[REDACTED]')
    assert.equal(
      redactUrl(`/a/ref-${key}/b?page=1&api_key=${key}`),
      '/a/[REDACTED]/b?page=1&api_key=[REDACTED]',
      'only the segment holding the key, the others kept',
    )
    assert.equal(redactUrl('/x?page=2'), '/x?page=2')
  })
  test('judges names and values percent-decoded, as the server reads them', () => {
    const secret = 'a'.repeat(43)
    assert.equal(redactUrl('/x?api%5Fkey=whatever&page=2'), '/x?api%5Fkey=[REDACTED]&page=2')
    assert.equal(redactUrl('/x?%41PI_KEY=whatever'), '/x?%41PI_KEY=[REDACTED]')
    assert.equal(redactUrl(`/x?q=in%2D${secret}`), '/x?q=[REDACTED]')
    assert.equal(redactUrl(`/x?q=in-%61${secret.slice(1)}&size=3`), '/x?q=[REDACTED]&size=3')
    assert.equal(redactUrl(`/x/in%2d${secret}/y`), '/x/[REDACTED]/y')
    assert.equal(redactUrl(`/x?in%2D${secret}=1`), '/x?[REDACTED]')
    assert.equal(redactUrl('/x?q=John%20Doe&bad=%E0%A4%A'), '/x?q=John%20Doe&bad=%E0%A4%A')
  })
})
