import assert from 'node:assert/strict'
import { existsSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { after, before, describe, test } from 'node:test'
import { fileURLToPath } from 'node:url'
import { type Browser, chromium, type Page } from 'playwright-core'
import { API_KEY_PATTERN } from '../src/api-keys/api-key-secret.js'
import { BACKENDS, type TestDatabase } from './helpers/backends.js'
import { type ServerProcess, startServerProcess } from './helpers/processes.js'

/**
 * The Settings page driven in a real headless Chromium (Debian's package, installed by .ci/run),
 * against the real server process. Without Chromium the suite is skipped and says so, unless
 * REQUIRE_BROWSER=1 (as in CI).
 */
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
const browserSkip = existsSync(CHROMIUM) ? false : `browser suite skipped: no Chromium at ${CHROMIUM}`
if (browserSkip && process.env.REQUIRE_BROWSER === '1')
  throw new Error(`REQUIRE_BROWSER=1 but ${browserSkip}`)
if (browserSkip) process.stderr.write(`${browserSkip}\n`)

const SCREENSHOTS = fileURLToPath(new URL('../../screenshots/', import.meta.url))
interface ContactAnswer {
  data: { first_name: string | null; email: string | null; last_seen: string | null; custom_fields: object }
}

const OWNER = { name: 'Olivia Owner', email: 'olivia@example.com', password: 'correct horse battery' }

for (const backend of BACKENDS) {
  describe(`the Settings page in Chromium on ${backend.name}`, { skip: backend.skip || browserSkip }, () => {
    let database: TestDatabase
    let server: ServerProcess
    let browser: Browser
    let page: Page
    let fullKey: string
    let readOnlyKey: string
    let contactId: string

    const api = (path: string, key: string, init: RequestInit = {}) =>
      fetch(`${server.url}/api/v1${path}`, {
        ...init,
        headers: { 'x-api-key': key, 'content-type': 'application/json', ...(init.headers ?? {}) },
      })
    const shot = (name: string) => page.screenshot({ path: `${SCREENSHOTS}${name}-${backend.name}.png` })

    async function createKey(name: string, role: 'full_access' | 'read_only', description: string) {
      await page.getByLabel('Name', { exact: true }).fill(name)
      await page.getByLabel('Role').selectOption(role)
      await page.getByLabel('Description').fill(description)
      await page.getByRole('button', { name: 'Create key' }).click()
      const dialog = page.getByRole('dialog')
      await dialog.waitFor()
      // Made modal by the page's script, as a user meets it: then Done and Escape close it for good.
      await page.locator('dialog#new-key:modal').waitFor()
      const key = (await dialog.locator('code').innerText()).trim()
      assert.match(key, API_KEY_PATTERN)
      return key
    }

    before(async () => {
      await mkdir(SCREENSHOTS, { recursive: true })
      database = await backend.createDatabase()
      server = await startServerProcess({ DATABASE_URL: database.url })
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: [
          '--headless',
          '--no-sandbox',
          '--disable-gpu',
          '--disable-quic',
          '--no-first-run',
          '--disable-background-networking',
          '--disable-component-update',
          '--disable-sync',
        ],
      })
      const context = await browser.newContext({ viewport: { width: 1280, height: 800 } })
      page = await context.newPage()
    })
    after(async () => {
      await browser?.close()
      await server?.stop()
      await database?.drop()
    })

    test('first run asks for the setup token from the log and creates the owner', async () => {
      const token = /setup token (\S+)/.exec(server.log())?.[1]
      assert.ok(token, 'the server printed a setup token')
      await page.goto(`${server.url}/settings`)
      assert.match(page.url(), /\/settings\/setup$/)
      await page.getByLabel('Setup token').fill('not-the-token')
      await page.getByLabel('Organization name').fill('Acme Support')
      await page.getByLabel('Your name').fill(OWNER.name)
      await page.getByLabel('Email').fill(OWNER.email)
      await page.getByLabel('Password').fill(OWNER.password)
      await page.getByRole('button', { name: 'Create owner account' }).click()
      assert.match(await page.getByRole('alert').innerText(), /setup token/)

      await page.getByLabel('Setup token').fill(token)
      await page.getByLabel('Password').fill(OWNER.password)
      await page.getByRole('button', { name: 'Create owner account' }).click()
      await page.waitForURL(/\/settings\/keys$/)
      assert.equal(await page.getByRole('heading', { level: 1 }).innerText(), 'API keys')
    })

    test('a new key is shown once in a dialog, works against the API, and the list shows only its prefix', async () => {
      fullKey = await createKey('zapier', 'full_access', 'Zapier integration')
      await shot('key-dialog')
      await page.getByRole('button', { name: 'Done' }).click()
      // The element itself, not only a visible dialog: a closed one would still hold the key.
      await page.locator('#new-key').waitFor({ state: 'detached' })
      const table = await page.locator('#keys-table').innerText()
      assert.ok(table.includes(fullKey.slice(0, 10)), 'the prefix is listed')
      assert.ok(!(await page.content()).includes(fullKey), 'the key is no longer anywhere in the page')
      assert.match(table, /zapier\s+Full access\s+Zapier integration/)

      const created = await api('/contact', fullKey, {
        method: 'POST',
        body: JSON.stringify({ first_name: 'Ada', last_name: 'Lovelace', email: 'ada@example.com' }),
      })
      assert.equal(created.status, 201)
      contactId = ((await created.json()) as { data: { id: string } }).data.id
      assert.equal((await api('/contact', fullKey)).status, 200)
    })

    test('a read_only key made in the page gets 403 on PUT', async () => {
      readOnlyKey = await createKey('reporting', 'read_only', 'Dashboards')
      await page.keyboard.press('Escape')
      await page.locator('#new-key').waitFor({ state: 'detached' })
      const put = await api(`/contact/${contactId}`, readOnlyKey, {
        method: 'PUT',
        body: '{"first_name":"x"}',
      })
      assert.equal(put.status, 403)
      assert.equal((await api(`/contact/${contactId}`, readOnlyKey)).status, 200)
    })

    test('deleting a key asks for confirmation and the API refuses it from the next request on', async () => {
      await page.getByRole('link', { name: 'Delete key zapier' }).click()
      assert.match(await page.locator('main').innerText(), /Delete the key “zapier”/)
      await page.getByRole('button', { name: 'Delete key' }).click()
      await page.waitForURL(/\/settings\/keys$/)
      assert.ok(!(await page.locator('#keys-table').innerText()).includes('zapier'))
      const refused = await api('/contact', fullKey)
      assert.equal(refused.status, 401)
    })

    test('a contact edited in the page reads back changed through the API', async () => {
      await page.getByRole('link', { name: 'Contacts', exact: true }).click()
      await page.waitForURL(/\/settings\/contacts$/)
      assert.match(await page.locator('#contacts-table').innerText(), /Ada Lovelace\s+ada@example.com/)
      await shot('contacts-list')
      await page.getByRole('link', { name: 'Ada Lovelace' }).click()
      await page.getByLabel('First name').fill('Augusta Ada')
      await page.getByLabel('Custom fields (JSON object)').fill('{"plan": "pro"}')
      await page.getByRole('button', { name: 'Save changes' }).click()
      await page.getByText('Saved.').waitFor()
      const read = (await (await api(`/contact/${contactId}`, readOnlyKey)).json()) as ContactAnswer
      assert.equal(read.data.first_name, 'Augusta Ada')
      assert.deepEqual(read.data.custom_fields, { plan: 'pro' })
      assert.equal(read.data.email, 'ada@example.com', 'untouched fields are kept')
    })

    test('invalid input in the page is refused with the API’s own rules and changes nothing', async () => {
      await page.getByLabel('Last seen (RFC 3339)').fill('last tuesday')
      await page.getByRole('button', { name: 'Save changes' }).click()
      assert.match(await page.getByRole('alert').innerText(), /nothing was saved/)
      assert.match(await page.locator('#last_seen-error').innerText(), /valid datetime/)
      const read = (await (await api(`/contact/${contactId}`, readOnlyKey)).json()) as ContactAnswer
      assert.equal(read.data.last_seen, null)
    })

    test('a CSV file imported from the page shows live progress, its counts and its failed rows', async () => {
      await page.getByRole('link', { name: 'Import & export' }).click()
      await page.waitForURL(/\/settings\/import$/)
      const lines = ['email;first_name;custom_fields.plan']
      for (let i = 0; i < 20_000; i++) lines.push(`bulk${i}@example.com;Bulk ${i};basic`)
      lines.push(';nobody;basic', 'ada@example.com;Ada;"pro')
      await page.getByLabel('CSV file').setInputFiles({
        name: 'bulk.csv',
        mimeType: 'text/csv',
        buffer: Buffer.from(lines.join('\r\n')),
      })
      await page.getByLabel('Delimiter').selectOption(';')
      // Every state the progress panel goes through, as the user sees it.
      await page.evaluate(`(() => {
        const seen = (window.seen = [])
        const stage = document.getElementById('import-stage')
        new MutationObserver(() => seen.push(stage.textContent)).observe(stage, {
          childList: true,
          characterData: true,
          subtree: true,
        })
      })()`)
      await page.getByRole('button', { name: 'Import' }).click()
      await page
        .getByText('Imported bulk.csv: done')
        .waitFor({ timeout: 120_000 })
        .catch(async (error: Error) => {
          throw new Error(
            `${error.message}; the page says: ${await page.locator('#import-progress').innerText()}`,
          )
        })
      const seen = (await page.evaluate('window.seen')) as string[]
      assert.ok(
        seen.some((text) => /^Importing bulk\.csv: \d+%$/.test(text)),
        `progress was shown: ${seen.join(' | ')}`,
      )
      assert.equal(
        await page.locator('#import-bar').evaluate((bar) => (bar as unknown as { value: number }).value),
        1,
      )
      assert.equal(
        await page.locator('#import-counts').innerText(),
        '20002 rows: 20000 created, 0 updated, 0 unchanged, 2 failed',
      )
      await shot('import-progress')
      const failuresLink = page.getByRole('link', { name: /Download the rows that failed/ })
      const href = await failuresLink.getAttribute('href')
      assert.ok(href)
      const failures = await page.evaluate(async (url) => (await fetch(url)).text(), href)
      const failureLines = failures.trim().split(/\r?\n/)
      assert.equal(failureLines.length, 3)
      assert.match(
        failureLines[1] ?? '',
        /^20002,"email: One of email, phone_number or external_id is required",,nobody,basic$/,
      )
      assert.match(failureLines[2] ?? '', /^20003,Unreadable CSV/)

      const exported = await page.evaluate(async () => (await fetch('/settings/export?format=csv')).text())
      assert.equal(exported.trim().split('\n').length, 1 + 20_001, 'the export holds every contact')
      await page.reload()
      assert.match(await page.locator('#imports-table').innerText(), /bulk\.csv.*completed\s+20002 rows/s)
    })

    test('signing out ends the session and signing in with the keyboard brings it back', async () => {
      await page.getByRole('button', { name: 'Sign out' }).click()
      await page.waitForURL(/\/settings\/login$/)
      await page.goto(`${server.url}/settings/keys`)
      assert.match(page.url(), /\/settings\/login$/)
      await page.getByLabel('Email').focus()
      await page.keyboard.type(OWNER.email)
      await page.keyboard.press('Tab')
      await page.keyboard.type('wrong password!')
      await page.keyboard.press('Enter')
      await page.getByRole('alert').waitFor()
      await page.getByLabel('Password').fill(OWNER.password)
      await page.keyboard.press('Enter')
      await page.waitForURL(/\/settings\/contacts$/)
    })

    test("a key dialog closed before the page's script ran still takes the key out of the page", async () => {
      // The script held back until the dialog, shown open without it, has been closed.
      let release = () => {}
      const held = new Promise<void>((resolve) => {
        release = resolve
      })
      await page.route('**/settings/assets/settings.js', async (route) => {
        await held
        // The first page's request is abandoned when the form's answer replaces it.
        await route.continue().catch(() => {})
      })
      try {
        await page.goto(`${server.url}/settings/keys`, { waitUntil: 'commit' })
        await page.getByLabel('Name', { exact: true }).fill('early')
        await page.getByLabel('Role').selectOption('read_only')
        await page.getByLabel('Description').fill('Closed in a hurry')
        await page.getByRole('button', { name: 'Create key' }).click({ noWaitAfter: true })
        const dialog = page.getByRole('dialog')
        await dialog.waitFor()
        const key = (await dialog.locator('code').innerText()).trim()
        assert.match(key, API_KEY_PATTERN)
        await page.getByRole('button', { name: 'Done' }).click()
        await dialog.waitFor({ state: 'hidden' })
        assert.equal(
          await page.locator('#new-key').count(),
          1,
          'closed, but still in the page until the script runs',
        )
        release()
        await page.locator('#new-key').waitFor({ state: 'detached' })
        assert.ok(!(await page.content()).includes(key), 'the key is no longer anywhere in the page')
      } finally {
        release()
        await page.unroute('**/settings/assets/settings.js')
      }
    })
  })
}
