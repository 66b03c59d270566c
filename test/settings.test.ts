import assert from 'node:assert/strict'
import { after, before, describe, test } from 'node:test'
import { createApiKey } from '../src/api-keys/api-keys.service.js'
import { addMember } from '../src/users/users.service.js'
import { startTestApp, type TestApp, type TestOrg } from './helpers/app.js'
import { BACKENDS } from './helpers/backends.js'

const PASSWORD = 'a long enough password'

interface Browser {
  cookies: Map<string, string>
  csrf: string
}

const cookieHeader = (browser: Browser) => [...browser.cookies].map(([k, v]) => `${k}=${v}`).join('; ')

function keepCookies(browser: Browser, setCookie: string | string[] | undefined) {
  for (const line of [setCookie ?? []].flat()) {
    const [pair] = line.split(';')
    const [name, ...rest] = (pair ?? '').split('=')
    if (name) browser.cookies.set(name.trim(), rest.join('='))
  }
}

const csrfIn = (page: string) => /name="_csrf" value="([^"]+)"/.exec(page)?.[1] ?? ''

for (const backend of BACKENDS) {
  describe(`Settings page refusals on ${backend.name}`, { skip: backend.skip }, () => {
    let t: TestApp
    let orgA: TestOrg
    let orgB: TestOrg
    let contactA: string

    const get = (browser: Browser | null, url: string) =>
      t.app.inject({ method: 'GET', url, headers: browser ? { cookie: cookieHeader(browser) } : {} })
    const post = (
      browser: Browser | null,
      url: string,
      fields: Record<string, string>,
      remoteAddress?: string,
    ) =>
      t.app.inject({
        method: 'POST',
        url,
        ...(remoteAddress ? { remoteAddress } : {}),
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          ...(browser ? { cookie: cookieHeader(browser) } : {}),
        },
        payload: new URLSearchParams(fields).toString(),
      })

    async function signIn(email: string): Promise<Browser> {
      const browser: Browser = { cookies: new Map(), csrf: '' }
      const login = await get(browser, '/settings/login')
      keepCookies(browser, login.headers['set-cookie'])
      const answer = await post(browser, '/settings/login', {
        email,
        password: PASSWORD,
        _csrf: csrfIn(login.body),
      })
      assert.equal(answer.statusCode, 303, answer.body)
      keepCookies(browser, answer.headers['set-cookie'])
      browser.csrf = csrfIn((await get(browser, '/settings/keys')).body)
      assert.ok(browser.csrf)
      return browser
    }

    const keyCount = async (orgId: string) =>
      (await t.database.db.selectFrom('api_keys').select('id').where('org_id', '=', orgId).execute()).length
    const contactRow = (id: string) =>
      t.database.db.selectFrom('contacts').selectAll().where('id', '=', id).executeTakeFirst()

    before(async () => {
      t = await startTestApp(backend)
      orgA = await t.createOrg()
      orgB = await t.createOrg()
      await addMember(t.database.db, orgA.id, {
        email: 'alice@a.example',
        name: 'Alice',
        password: PASSWORD,
        role: 'owner',
      })
      await addMember(t.database.db, orgA.id, {
        email: 'mia@a.example',
        name: 'Mia',
        password: PASSWORD,
        role: 'member',
      })
      await addMember(t.database.db, orgB.id, {
        email: 'bob@b.example',
        name: 'Bob',
        password: PASSWORD,
        role: 'owner',
      })
      const created = await t.call(orgA.key, {
        method: 'POST',
        url: '/api/v1/contact',
        payload: { first_name: 'Alpha' },
      })
      contactA = created.json().data.id
    })
    after(() => t?.close())

    test('a signed-out visitor is sent to sign in and can change nothing', async () => {
      for (const url of [
        '/settings/keys',
        '/settings/contacts',
        `/settings/contacts/${contactA}`,
        '/settings/members',
      ]) {
        const response = await get(null, url)
        assert.equal(response.statusCode, 303, url)
        assert.equal(response.headers.location, '/settings/login')
      }
      const before = await keyCount(orgA.id)
      const attempt = await post(null, '/settings/keys', {
        name: 'x',
        role: 'full_access',
        description: 'x',
        _csrf: 'x',
      })
      assert.notEqual(attempt.statusCode, 201)
      const edit = await post(null, `/settings/contacts/${contactA}`, { first_name: 'Hacked', _csrf: 'x' })
      assert.notEqual(edit.statusCode, 303)
      assert.equal(await keyCount(orgA.id), before)
      assert.equal((await contactRow(contactA))?.first_name, 'Alpha')
    })

    test('a form posted without the session’s CSRF token is refused and changes nothing', async () => {
      const alice = await signIn('alice@a.example')
      const before = await keyCount(orgA.id)
      for (const token of [undefined, 'forged-token-value-forged-token-value']) {
        const fields = {
          name: 'csrf',
          role: 'full_access',
          description: 'x',
          ...(token ? { _csrf: token } : {}),
        }
        const response = await post(alice, '/settings/keys', fields)
        assert.equal(response.statusCode, 403)
        const edit = await post(alice, `/settings/contacts/${contactA}`, {
          first_name: 'Forged',
          ...(token ? { _csrf: token } : {}),
        })
        assert.equal(edit.statusCode, 403)
      }
      assert.equal(await keyCount(orgA.id), before)
      assert.equal((await contactRow(contactA))?.first_name, 'Alpha')
      const genuine = await post(alice, '/settings/keys', {
        name: 'ok',
        role: 'read_only',
        description: 'ok',
        _csrf: alice.csrf,
      })
      assert.equal(genuine.statusCode, 201)
      assert.equal(await keyCount(orgA.id), before + 1)
    })

    test('a member of another organization can neither see nor change this one’s contacts and keys', async () => {
      const bob = await signIn('bob@b.example')
      assert.equal((await get(bob, `/settings/contacts/${contactA}`)).statusCode, 404)
      const edit = await post(bob, `/settings/contacts/${contactA}`, {
        first_name: 'Bob was here',
        _csrf: bob.csrf,
      })
      assert.equal(edit.statusCode, 404)
      const remove = await post(bob, `/settings/contacts/${contactA}/delete`, { _csrf: bob.csrf })
      assert.equal(remove.statusCode, 404)
      assert.equal((await contactRow(contactA))?.first_name, 'Alpha')

      const revoke = await post(bob, `/settings/keys/${orgA.keyId}/revoke`, { _csrf: bob.csrf })
      assert.equal(revoke.statusCode, 404)
      assert.equal((await t.call(orgA.key, { method: 'GET', url: '/api/v1/contact' })).statusCode, 200)

      await post(bob, '/settings/org', { org_id: orgA.id, _csrf: bob.csrf })
      const list = await get(bob, '/settings/contacts')
      assert.ok(
        !list.body.includes('Alpha'),
        'switching to an organization one is not a member of does nothing',
      )
      assert.ok(!(await get(bob, '/settings/keys')).body.includes(orgA.key.slice(0, 10)))
    })

    test('a member sees and revokes only their own keys and cannot add members', async () => {
      const mia = await signIn('mia@a.example')
      const page = await get(mia, '/settings/keys')
      assert.ok(!page.body.includes(orgA.key.slice(0, 10)), 'keys of others are not listed')
      assert.equal(
        (await post(mia, `/settings/keys/${orgA.keyId}/revoke`, { _csrf: mia.csrf })).statusCode,
        404,
      )
      assert.equal((await t.call(orgA.key, { method: 'GET', url: '/api/v1/contact' })).statusCode, 200)
      const own = await createApiKey(t.database.db, {
        orgId: orgA.id,
        name: 'mine',
        role: 'read_only',
        createdByUserId: (
          await t.database.db
            .selectFrom('users')
            .select('id')
            .where('email_normalized', '=', 'mia@a.example')
            .executeTakeFirstOrThrow()
        ).id,
      })
      assert.equal((await post(mia, `/settings/keys/${own.id}/revoke`, { _csrf: mia.csrf })).statusCode, 303)
      assert.equal((await t.call(own.key, { method: 'GET', url: '/api/v1/contact' })).statusCode, 401)
      const add = await post(mia, '/settings/members', {
        name: 'Eve',
        email: 'eve@a.example',
        password: PASSWORD,
        role: 'owner',
        _csrf: mia.csrf,
      })
      assert.equal(add.statusCode, 403)
    })

    test('the first-run page is closed once an owner exists, and sign-in attempts are rate-limited', async () => {
      const setup = await get(null, '/settings/setup')
      assert.equal(setup.headers.location, '/settings/login')
      const login = await get(null, '/settings/login')
      const browser: Browser = { cookies: new Map(), csrf: csrfIn(login.body) }
      keepCookies(browser, login.headers['set-cookie'])
      const statuses = []
      for (let i = 0; i < 12; i++) {
        const attempt = await post(
          browser,
          '/settings/login',
          { email: 'alice@a.example', password: 'guess', _csrf: browser.csrf },
          '192.0.2.7',
        )
        statuses.push(attempt.statusCode)
      }
      assert.deepEqual(statuses.slice(0, 10), Array(10).fill(401))
      assert.deepEqual(statuses.slice(10), [429, 429])
    })

    test('the contact view shows duplicates and merges one; deleted contacts can be restored from the trash', async () => {
      const alice = await signIn('alice@a.example')
      const api = (method: string, url: string, payload?: object) => t.api(orgA.key, method, url, payload)
      const primary = (
        await api('POST', '/contact', { first_name: 'Jo', last_name: 'Doe', channels: { instagram: 'jd' } })
      ).json().data
      const twin = (
        await api('POST', '/contact', {
          first_name: 'Jo',
          last_name: 'Doe',
          email: 'jo@twin.example',
          channels: { instagram: 'jd' },
        })
      ).json().data

      const view = await get(alice, `/settings/contacts/${primary.id}`)
      assert.match(view.body, /Possible duplicates/)
      assert.ok(view.body.includes(`/settings/contacts/${twin.id}`), 'the duplicate is listed')
      assert.match(view.body, /same name and channel/)

      const merge = await post(alice, `/settings/contacts/${primary.id}/merge`, {
        duplicate_id: twin.id,
        _csrf: alice.csrf,
      })
      assert.equal(merge.statusCode, 303)
      const merged = (await api('GET', `/contact/${primary.id}`)).json().data
      assert.equal(merged.email, 'jo@twin.example')
      assert.equal((await api('GET', `/contact/${twin.id}`)).json().merged_into, primary.id)

      const remove = await post(alice, `/settings/contacts/${primary.id}/delete`, { _csrf: alice.csrf })
      assert.equal(remove.statusCode, 303)
      assert.equal((await api('GET', `/contact/${primary.id}`)).statusCode, 404)
      const trash = await get(alice, '/settings/trash')
      assert.match(trash.body, /Jo Doe/)
      const restore = await post(alice, `/settings/trash/${primary.id}/restore`, { _csrf: alice.csrf })
      assert.equal(restore.statusCode, 303)
      assert.deepEqual((await api('GET', `/contact/${primary.id}`)).json().data, merged)
      const bobRestore = await post(await signIn('bob@b.example'), `/settings/trash/${primary.id}/restore`, {
        _csrf: 'x',
      })
      assert.equal(bobRestore.statusCode, 403)
    })

    test('a person belongs to several organizations, with a role in each, and switches between them', async () => {
      const alice = await signIn('alice@a.example')
      const created = await post(alice, '/settings/organizations', {
        name: `Second ${backend.name}`,
        _csrf: alice.csrf,
      })
      assert.equal(created.statusCode, 303)
      const inSecond = await get(alice, '/settings/contacts')
      assert.match(
        inSecond.body,
        new RegExp(`<option value="[^"]+" selected>Second ${backend.name}</option>`),
      )
      assert.match(inSecond.body, /No contacts on this page/)
      assert.match((await get(alice, '/settings/organizations')).body, /Second[\s\S]*owner/)
      const back = await post(alice, '/settings/org', { org_id: orgA.id, _csrf: alice.csrf })
      assert.equal(back.statusCode, 303)
      const inFirst = await get(alice, '/settings/contacts')
      assert.match(inFirst.body, new RegExp(`<option value="${orgA.id}" selected>`))
      assert.match(inFirst.body, /Alpha/)
    })

    test('a contact edited on the Settings page records the member as the actor; the page shows the history', async () => {
      const alice = await signIn('alice@a.example')
      // An earlier test left Alice in her other organization.
      await post(alice, '/settings/org', { org_id: orgA.id, _csrf: alice.csrf })
      const aliceId = (
        await t.database.db
          .selectFrom('users')
          .select('id')
          .where('email', '=', 'alice@a.example')
          .executeTakeFirstOrThrow()
      ).id
      const edit = await post(alice, `/settings/contacts/${contactA}`, {
        first_name: 'Alpha',
        last_name: 'Edited',
        _csrf: alice.csrf,
      })
      assert.equal(edit.statusCode, 303, edit.body)
      const history = await t.call(orgA.key, { method: 'GET', url: `/api/v1/contact/${contactA}/history` })
      const [latest] = history.json().data.items
      assert.equal(latest.event, 'contact.updated')
      assert.deepEqual(latest.data.actor, { type: 'user', id: aliceId })
      assert.deepEqual(latest.data.changes.last_name, { previous: null, current: 'Edited' })
      const page = await get(alice, `/settings/contacts/${contactA}`)
      assert.match(page.body, /<h2 id="history-title">History<\/h2>/)
      assert.match(page.body, /Updated<\/strong> by Alice/)
      assert.match(page.body, /<code>last_name<\/code>: — → &quot;Edited&quot;/)
    })

    test('owners manage webhooks on the Settings page, members only look, and internal endpoints are refused', async () => {
      const alice = await signIn('alice@a.example')
      // An earlier test left Alice in her other organization.
      await post(alice, '/settings/org', { org_id: orgA.id, _csrf: alice.csrf })
      const internal = await post(alice, '/settings/webhooks', {
        endpoint: 'http://169.254.169.254/latest',
        events: 'contact.created',
        _csrf: alice.csrf,
      })
      assert.equal(internal.statusCode, 422)
      assert.match(internal.body, /internal address/)
      const created = await post(alice, '/settings/webhooks', {
        name: 'Partner',
        endpoint: 'https://93.184.216.34/hook',
        events: 'contact.updated',
        _csrf: alice.csrf,
      })
      assert.equal(created.statusCode, 201, created.body)
      assert.match(created.body, /whsec_[\w-]{43}/)
      const listed = await t.call(orgA.key, { method: 'GET', url: '/api/v1/outbound_webhook/list' })
      const webhook = listed.json().data.items.find((w: { name: string }) => w.name === 'Partner')
      assert.deepEqual(webhook.events, ['contact.updated'])

      // Fields chosen through the API are shown, and saving the page keeps them.
      const narrowed = await t.call(orgA.key, {
        method: 'PUT',
        url: `/api/v1/outbound_webhook/${webhook.id}`,
        payload: { fields: ['email', 'channels'] },
      })
      assert.equal(narrowed.statusCode, 200, narrowed.body)

      const mia = await signIn('mia@a.example')
      const shown = await get(mia, `/settings/webhooks/${webhook.id}`)
      assert.equal(shown.statusCode, 200)
      assert.match(shown.body, /Updates are sent only when they change email, channels/)
      const forbidden = await post(mia, `/settings/webhooks/${webhook.id}/delete`, { _csrf: mia.csrf })
      assert.equal(forbidden.statusCode, 403)
      const bob = await signIn('bob@b.example')
      assert.equal((await get(bob, `/settings/webhooks/${webhook.id}`)).statusCode, 404)

      const off = await post(alice, `/settings/webhooks/${webhook.id}`, {
        name: 'Partner',
        endpoint: 'https://93.184.216.34/hook',
        events: 'contact.updated',
        _csrf: alice.csrf,
      })
      assert.equal(off.statusCode, 303, off.body)
      const after = await t.call(orgA.key, { method: 'GET', url: `/api/v1/outbound_webhook/${webhook.id}` })
      assert.equal(after.json().data.enabled, false)
      assert.deepEqual(after.json().data.fields, ['email', 'channels'])
      assert.equal(
        (await post(alice, `/settings/webhooks/${webhook.id}/delete`, { _csrf: alice.csrf })).statusCode,
        303,
      )
      assert.equal(
        (await t.call(orgA.key, { method: 'GET', url: `/api/v1/outbound_webhook/${webhook.id}` })).statusCode,
        404,
      )
    })

    test('pages carry a restrictive content security policy', async () => {
      const page = await get(null, '/settings/login')
      assert.match(page.headers['content-security-policy'] as string, /script-src 'self'/)
      assert.match(page.headers['content-security-policy'] as string, /frame-ancestors 'none'/)
      assert.equal(page.headers['x-content-type-options'], 'nosniff')
      assert.doesNotMatch(page.body, /<script>|\son[a-z]+="/, 'no inline script or event handler')
    })
  })
}
