import { randomBytes, timingSafeEqual } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { Readable } from 'node:stream'
import cookie from '@fastify/cookie'
import formbody from '@fastify/formbody'
import rateLimit from '@fastify/rate-limit'
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify'
import type { Kysely } from 'kysely'
import type { Principal } from '../api-keys/api-keys.service.js'
import * as apiKeys from '../api-keys/api-keys.service.js'
import { ContactUpdateBody } from '../contacts/contacts.schemas.js'
import * as contacts from '../contacts/contacts.service.js'
import { findDuplicates, mergeContacts } from '../contacts/merge.service.js'
import type { DialectName } from '../db/database.js'
import type { Database, MembershipRole } from '../db/schema.js'
import { AppError, ValidationFailedError, type ValidationIssue } from '../errors.js'
import { listContactEvents } from '../events/events.repository.js'
import { EVENT_TYPES } from '../events/events.schemas.js'
import { toContactEvent } from '../events/events.service.js'
import { exportContacts } from '../exports/exports.service.js'
import { toHttpError } from '../http/errors.js'
import { validateBody } from '../http/validation.js'
import * as imports from '../imports/imports.service.js'
import * as organizations from '../organizations/organizations.service.js'
import * as sessions from '../sessions/sessions.service.js'
import type { CursorCodec } from '../shared/cursor.js'
import { isUuid } from '../shared/ids.js'
import * as users from '../users/users.service.js'
import type { TargetPolicy } from '../webhooks/targets.js'
import * as webhooks from '../webhooks/webhooks.service.js'
import type { SafeHtml } from './html.js'
import * as views from './settings.views.js'

/** The one-time token that guards the first-run page; null once an owner exists. */
export interface SetupState {
  token: string | null
}

export interface SettingsOptions {
  db: Kysely<Database>
  trashRetentionDays: number
  setup: SetupState
  /** Mark cookies Secure even when the request reached us over plain HTTP (TLS ends at a proxy). */
  secureCookies: boolean
  /** Where webhooks may point (the API's rule). */
  webhookPolicy: TargetPolicy
  cursors: () => Promise<CursorCodec>
  dialect: DialectName
  /** The API's limits and wake-up for imports started from the page. */
  imports: { maxBytes: number; jobQueued: () => void }
}

interface PageContext {
  session: sessions.Session
  chrome: views.Chrome
  principal: Principal
  role: MembershipRole
}

declare module 'fastify' {
  interface FastifyRequest {
    settingsSession: sessions.Session | null
    page: PageContext | null
  }
  interface FastifyContextConfig {
    /** Which tab of the Settings navigation a page belongs to. */
    section?: 'contacts' | 'trash' | 'import' | 'keys' | 'webhooks' | 'members' | 'organizations'
  }
}

const SESSION_COOKIE = 'contacts_session'
const CSRF_COOKIE = 'contacts_csrf'
const CONTACTS_PER_PAGE = 25

// The pages load no script or style from anywhere but here, and cannot be framed.
const PAGE_HEADERS = {
  'content-security-policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'same-origin',
  'cache-control': 'no-store',
}

function send(reply: FastifyReply, content: SafeHtml, status = 200) {
  return reply.code(status).headers(PAGE_HEADERS).type('text/html; charset=utf-8').send(content.value)
}

const sameToken = (a: string, b: string) => {
  const left = Buffer.from(a)
  const right = Buffer.from(b)
  return left.length === right.length && timingSafeEqual(left, right)
}

/** A list page of the Settings pages from `?page=`; anything unreadable is the first page. */
const pagingOf = (query: { page?: string }) => ({
  page: Math.max(1, Number.parseInt(query.page ?? '1', 10) || 1),
  size: CONTACTS_PER_PAGE,
})

const form = (request: FastifyRequest) => (request.body ?? {}) as Record<string, string | undefined>
const text = (request: FastifyRequest, name: string) => String(form(request)[name] ?? '').trim()

export const settingsRoutes: FastifyPluginAsync<SettingsOptions> = async (
  app,
  { db, setup, secureCookies, trashRetentionDays, webhookPolicy, cursors, dialect, imports: importOptions },
) => {
  await app.register(cookie)
  await app.register(formbody, { bodyLimit: 1024 * 1024 })
  await app.register(rateLimit, { global: false })

  const assets = new URL('../../../public/', import.meta.url)
  const stylesheet = await readFile(new URL('settings.css', assets))
  const script = await readFile(new URL('settings.js', assets))
  app.get('/assets/settings.css', (_request, reply) =>
    reply.type('text/css; charset=utf-8').header('cache-control', 'public, max-age=3600').send(stylesheet),
  )
  app.get('/assets/settings.js', (_request, reply) =>
    reply.type('text/javascript; charset=utf-8').header('cache-control', 'public, max-age=3600').send(script),
  )

  const cookieOptions = (request: FastifyRequest) => ({
    path: '/settings',
    httpOnly: true,
    sameSite: 'lax' as const,
    secure: secureCookies || request.protocol === 'https',
  })

  /**
   * CSRF for forms shown before sign-in: a random token both in an http-only cookie and in the
   * form (double submit). Signed-in forms carry the session's own token instead.
   */
  const preSessionToken = (request: FastifyRequest, reply: FastifyReply) => {
    const existing = request.cookies[CSRF_COOKIE]
    if (existing && existing.length >= 32) return existing
    const token = randomBytes(24).toString('base64url')
    reply.setCookie(CSRF_COOKIE, token, cookieOptions(request))
    return token
  }

  const startSession = async (
    request: FastifyRequest,
    reply: FastifyReply,
    userId: string,
    orgId: string | null,
  ) => {
    const token = await sessions.createSession(db, userId, orgId)
    reply.setCookie(SESSION_COOKIE, token, {
      ...cookieOptions(request),
      maxAge: sessions.SESSION_LIFETIME_MS / 1000,
    })
    reply.clearCookie(CSRF_COOKIE, { path: '/settings' })
  }

  app.decorateRequest('settingsSession', null)
  app.decorateRequest('page', null)

  app.addHook('onRequest', async (request) => {
    const token = request.cookies[SESSION_COOKIE]
    if (token) request.settingsSession = await sessions.findSession(db, token)
  })

  // Every state-changing request must carry the token of its session (or, before sign-in, of its
  // cookie); SameSite=Lax cookies are a second line, not the defence.
  app.addHook('preHandler', async (request) => {
    if (request.method !== 'POST') return
    // A form's token is a field; the import page's script, which sends a file as the body, sends it as a header.
    const header = request.headers['x-csrf-token']
    const presented = typeof header === 'string' ? header : text(request, '_csrf')
    const expected = request.settingsSession?.csrfToken ?? request.cookies[CSRF_COOKIE]
    if (!expected || !presented || !sameToken(presented, expected)) {
      throw Object.assign(
        new Error('The form has expired or did not come from this site. Reload the page and try again.'),
        {
          statusCode: 403,
        },
      )
    }
  })

  app.setErrorHandler(async (error: Error & { statusCode?: number }, request, reply) => {
    const status = error.statusCode ?? 500
    if (status === 429) {
      return send(
        reply,
        views.loginPage(
          preSessionToken(request, reply),
          'Too many sign-in attempts. Wait a minute and try again.',
        ),
        429,
      )
    }
    if (status >= 500) {
      request.log.error({ err: error }, 'settings page failed')
      return send(
        reply,
        views.messagePage('Something went wrong', 'The page could not be shown. Try again.'),
        500,
      )
    }
    return send(reply, views.messagePage('Not allowed', error.message), status)
  })

  app.get('/', async (request, reply) => {
    if ((await users.countUsers(db)) === 0) return reply.redirect('/settings/setup', 303)
    return reply.redirect(request.settingsSession ? '/settings/contacts' : '/settings/login', 303)
  })

  app.get('/setup', async (request, reply) => {
    if ((await users.countUsers(db)) > 0 || setup.token === null)
      return reply.redirect('/settings/login', 303)
    return send(reply, views.setupPage(preSessionToken(request, reply)))
  })

  app.post('/setup', { config: { rateLimit: { max: 10, timeWindow: 60_000 } } }, async (request, reply) => {
    if ((await users.countUsers(db)) > 0 || setup.token === null)
      return reply.redirect('/settings/login', 303)
    const values = {
      org_name: text(request, 'org_name'),
      name: text(request, 'name'),
      email: text(request, 'email'),
    }
    const retry = (message: string) =>
      send(reply, views.setupPage(preSessionToken(request, reply), message, values), 422)
    if (!sameToken(text(request, 'setup_token'), setup.token))
      return retry('The setup token is not the one in the server log.')
    const password = String(form(request).password ?? '')
    const problem =
      users.checkNewUser({ ...values, password }) ??
      (values.org_name === '' ? 'Name the organization.' : null)
    if (problem) return retry(problem)
    const org = await organizations.createOrganization(db, values.org_name)
    const { user } = await users.addMember(db, org.id, { ...values, password, role: 'owner' })
    setup.token = null
    request.log.info({ userId: user.id, orgId: org.id }, 'owner account created')
    await startSession(request, reply, user.id, org.id)
    return reply.redirect('/settings/keys', 303)
  })

  app.get('/login', async (request, reply) => {
    if (request.settingsSession) return reply.redirect('/settings/contacts', 303)
    if ((await users.countUsers(db)) === 0) return reply.redirect('/settings/setup', 303)
    return send(reply, views.loginPage(preSessionToken(request, reply)))
  })

  app.post('/login', { config: { rateLimit: { max: 10, timeWindow: 60_000 } } }, async (request, reply) => {
    const email = text(request, 'email')
    const user = await users.authenticateUser(db, email, String(form(request).password ?? ''))
    if (!user) {
      return send(
        reply,
        views.loginPage(preSessionToken(request, reply), 'Email or password is incorrect.', email),
        401,
      )
    }
    const [first] = await users.membershipsOf(db, user.id)
    await startSession(request, reply, user.id, first?.org_id ?? null)
    return reply.redirect('/settings/contacts', 303)
  })

  app.post('/logout', async (request, reply) => {
    if (request.settingsSession) await sessions.deleteSession(db, request.settingsSession.tokenHash)
    reply.clearCookie(SESSION_COOKIE, { path: '/settings' })
    return reply.redirect('/settings/login', 303)
  })

  await app.register(async (pages) =>
    authenticatedPages(pages, db, trashRetentionDays, webhookPolicy, cursors, { dialect, ...importOptions }),
  )
}

/** Pages for a signed-in member of the current organization. */
async function authenticatedPages(
  app: FastifyInstance,
  db: Kysely<Database>,
  trashRetentionDays: number,
  webhookPolicy: TargetPolicy,
  cursors: () => Promise<CursorCodec>,
  transfers: { dialect: DialectName; maxBytes: number; jobQueued: () => void },
) {
  app.addHook('preHandler', async (request, reply) => {
    const session = request.settingsSession
    if (!session) return reply.redirect('/settings/login', 303)
    const memberships = await users.membershipsOf(db, session.userId)
    const current = memberships.find((m) => m.org_id === session.orgId) ?? memberships[0]
    if (!current)
      return send(
        reply,
        views.messagePage('No organization', 'Your account is not a member of any organization yet.'),
        403,
      )
    if (current.org_id !== session.orgId)
      await sessions.switchOrganization(db, session.tokenHash, current.org_id)
    const section = request.routeOptions.config.section ?? 'contacts'
    request.page = {
      session,
      role: current.role,
      principal: { actorType: 'user', actorId: session.userId, orgId: current.org_id, role: 'full_access' },
      chrome: {
        user: { name: session.name, email: session.email },
        csrf: session.csrfToken,
        orgId: current.org_id,
        role: current.role,
        organizations: memberships,
        section,
      },
    }
  })
  const pageOf = (request: FastifyRequest) => request.page as PageContext
  const managesOrganization = (role: MembershipRole) => role === 'owner' || role === 'admin'

  app.post('/org', async (request, reply) => {
    const { session, chrome } = pageOf(request)
    const orgId = text(request, 'org_id').toLowerCase()
    if (chrome.organizations.some((o) => o.org_id === orgId))
      await sessions.switchOrganization(db, session.tokenHash, orgId)
    return reply.redirect('/settings/contacts', 303)
  })

  // API keys
  const keysView = async (page: PageContext) => {
    const seesAllKeys = managesOrganization(page.role)
    const keys = await apiKeys.listApiKeys(db, page.principal.orgId, {
      activeOnly: true,
      ...(seesAllKeys ? {} : { createdBy: page.session.userId }),
    })
    const names = new Map((await users.membersOf(db, page.principal.orgId)).map((m) => [m.id, m.name]))
    return {
      seesAllKeys,
      keys: keys.map((k) => ({
        ...k,
        owner: k.created_by_user_id ? (names.get(k.created_by_user_id) ?? 'former member') : null,
      })),
    }
  }

  app.get('/keys', { config: { section: 'keys' } }, async (request, reply) => {
    const page = pageOf(request)
    return send(reply, views.keysPage(page.chrome, await keysView(page)))
  })

  app.post('/keys', { config: { section: 'keys' } }, async (request, reply) => {
    const page = pageOf(request)
    const values = {
      name: text(request, 'name'),
      role: text(request, 'role'),
      description: text(request, 'description'),
    }
    const missing = Object.entries(values).find(([, value]) => value === '')
    const role = values.role as 'full_access' | 'read_only'
    if (missing || !apiKeys.API_KEY_ROLES.includes(role)) {
      const error = missing ? `Enter a ${missing[0]} for the key.` : 'Choose a role for the key.'
      return send(reply, views.keysPage(page.chrome, { ...(await keysView(page)), error, values }), 422)
    }
    const created = await apiKeys.createApiKey(db, {
      orgId: page.principal.orgId,
      name: values.name,
      role,
      description: values.description,
      createdByUserId: page.session.userId,
    })
    request.log.info({ keyId: created.id, orgId: created.org_id }, 'API key created in the settings page')
    return send(reply, views.keysPage(page.chrome, { ...(await keysView(page)), created }), 201)
  })

  app.get<{ Params: { id: string } }>(
    '/keys/:id/revoke',
    { config: { section: 'keys' } },
    async (request, reply) => {
      const page = pageOf(request)
      const key = (await keysView(page)).keys.find((k) => k.id === request.params.id.toLowerCase())
      if (!key)
        return send(reply, views.messagePage('Not found', 'There is no such key in this organization.'), 404)
      return send(
        reply,
        views.confirmPage(
          page.chrome,
          'Delete API key',
          `Delete the key “${key.name}” (${key.prefix}…)? Requests made with it are refused from the next one on. This cannot be undone.`,
          `/settings/keys/${key.id}/revoke`,
          'Delete key',
          '/settings/keys',
        ),
      )
    },
  )

  app.post<{ Params: { id: string } }>('/keys/:id/revoke', async (request, reply) => {
    const page = pageOf(request)
    try {
      await apiKeys.revokeApiKeyInOrganization(
        db,
        page.principal.orgId,
        request.params.id,
        managesOrganization(page.role) ? {} : { createdBy: page.session.userId },
      )
    } catch (error) {
      if (error instanceof AppError && error.code === 'api_key_not_found') {
        return send(reply, views.messagePage('Not found', 'There is no such key in this organization.'), 404)
      }
      throw error
    }
    request.log.info(
      { keyId: request.params.id, orgId: page.principal.orgId },
      'API key revoked in the settings page',
    )
    return reply.redirect('/settings/keys', 303)
  })

  /** Who the ids in a history are: members by name, keys by name. */
  const actorNames = async (orgId: string) =>
    new Map([
      ...(await users.membersOf(db, orgId)).map((m) => [m.id, m.name] as const),
      ...(await apiKeys.listApiKeys(db, orgId)).map((k) => [k.id, `“${k.name}”`] as const),
    ])

  // Import and export, through the API's services. The page's script sends the file as the body
  // and follows the job; answers to it are JSON, in the API's error shape.
  app.addContentTypeParser(['text/csv', 'application/octet-stream'], (_request, payload, done) =>
    done(null, payload),
  )
  app.get('/import', { config: { section: 'import' } }, async (request, reply) => {
    const page = pageOf(request)
    const jobs = await imports.listImportJobs(db, cursors, page.principal.orgId, { limit: 10 })
    return send(reply, views.importPage(page.chrome, jobs.items))
  })
  app.post('/import', { config: { section: 'import' } }, async (request, reply) => {
    const page = pageOf(request)
    const query = request.query as Record<string, string | undefined>
    try {
      if (!(request.body instanceof Readable)) {
        throw new AppError('unsupported_media_type', 'Send the file as text/csv')
      }
      const job = await imports.receiveImport(
        db,
        page.principal,
        request.body,
        {
          ...(query.delimiter ? { delimiter: query.delimiter.slice(0, 1) } : {}),
          dry_run: query.dry_run === 'true',
          ...(query.file_name ? { file_name: query.file_name.slice(0, 255) } : {}),
        },
        { maxBytes: transfers.maxBytes },
      )
      transfers.jobQueued()
      return reply.code(202).headers(PAGE_HEADERS).send({ job })
    } catch (error) {
      const { status, body } = toHttpError(error)
      if (status >= 500) request.log.error({ err: error }, 'import from the settings page failed')
      return reply.code(status).headers(PAGE_HEADERS).send(body)
    }
  })
  app.get<{ Params: { id: string } }>(
    '/import/:id',
    { config: { section: 'import' } },
    async (request, reply) => {
      try {
        const job = await imports.getImportJob(db, pageOf(request).principal.orgId, request.params.id)
        return reply.headers(PAGE_HEADERS).send({ job })
      } catch (error) {
        const { status, body } = toHttpError(error)
        return reply.code(status).headers(PAGE_HEADERS).send(body)
      }
    },
  )
  app.get<{ Params: { id: string } }>(
    '/import/:id/failures',
    { config: { section: 'import' } },
    async (request, reply) => {
      const { orgId } = pageOf(request).principal
      const job = await imports.getImportJob(db, orgId, request.params.id).catch(() => null)
      if (!job) return send(reply, views.messagePage('Not found', 'No such import.'), 404)
      return reply
        .headers(PAGE_HEADERS)
        .type('text/csv; charset=utf-8')
        .header('content-disposition', `attachment; filename="import-${job.id}-failures.csv"`)
        .send(Readable.from(imports.failedRowsCsv(db, orgId, job.id)))
    },
  )
  app.get('/export', { config: { section: 'import' } }, async (request, reply) => {
    const { orgId } = pageOf(request).principal
    const format = (request.query as { format?: string }).format === 'ndjson' ? 'ndjson' : 'csv'
    const day = new Date().toISOString().slice(0, 10)
    return reply
      .headers(PAGE_HEADERS)
      .type(format === 'csv' ? 'text/csv; charset=utf-8' : 'application/x-ndjson; charset=utf-8')
      .header('content-disposition', `attachment; filename="contacts-${day}.${format}"`)
      .send(Readable.from(exportContacts({ db, dialect: transfers.dialect }, orgId, {}, format)))
  })

  // Webhooks, through the API's service (and its checks of the endpoint)
  const webhookList = async (orgId: string) =>
    (await webhooks.listWebhooks(db, cursors, orgId, { limit: 1000 })).items
  const webhookForm = (request: FastifyRequest) => {
    const events = form(request).events as string | string[] | undefined
    return {
      name: text(request, 'name'),
      endpoint: text(request, 'endpoint'),
      events: [events ?? []]
        .flat()
        .filter((e): e is (typeof EVENT_TYPES)[number] => (EVENT_TYPES as readonly string[]).includes(e)),
    }
  }
  const refusal = (error: unknown) => {
    if (error instanceof ValidationFailedError) return error.issues.map((issue) => issue.msg).join('; ')
    throw error
  }
  const requireManager = (page: PageContext, reply: FastifyReply) =>
    managesOrganization(page.role)
      ? null
      : send(reply, views.messagePage('Not allowed', 'Only owners and admins change webhooks.'), 403)

  app.get('/webhooks', { config: { section: 'webhooks' } }, async (request, reply) => {
    const page = pageOf(request)
    return send(
      reply,
      views.webhooksPage(page.chrome, {
        webhooks: await webhookList(page.principal.orgId),
        manages: managesOrganization(page.role),
      }),
    )
  })

  app.post('/webhooks', { config: { section: 'webhooks' } }, async (request, reply) => {
    const page = pageOf(request)
    const refused = requireManager(page, reply)
    if (refused) return refused
    const values = webhookForm(request)
    const view = { manages: true, values: { ...values, events: values.events.join(',') } }
    if (values.events.length === 0) {
      const webhooks = await webhookList(page.principal.orgId)
      return send(
        reply,
        views.webhooksPage(page.chrome, { ...view, webhooks, error: 'Choose at least one event.' }),
        422,
      )
    }
    try {
      const created = await webhooks.createWebhook(db, webhookPolicy, page.principal, {
        endpoint: values.endpoint,
        events: values.events,
        ...(values.name ? { name: values.name.slice(0, 200) } : {}),
      })
      request.log.info(
        { webhookId: created.id, orgId: created.org_id },
        'webhook created in the settings page',
      )
      const list = await webhookList(page.principal.orgId)
      return send(reply, views.webhooksPage(page.chrome, { webhooks: list, manages: true, created }), 201)
    } catch (error) {
      const message = refusal(error)
      const list = await webhookList(page.principal.orgId)
      return send(reply, views.webhooksPage(page.chrome, { ...view, webhooks: list, error: message }), 422)
    }
  })

  const webhookView = async (
    page: PageContext,
    id: string,
    options: { error?: string; notice?: string; secret?: string } = {},
  ) => {
    if (!isUuid(id)) return null
    let webhook: Awaited<ReturnType<typeof webhooks.getWebhook>>
    try {
      webhook = await webhooks.getWebhook(db, page.principal.orgId, id)
    } catch (error) {
      if (error instanceof AppError && error.code === 'webhook_not_found') return null
      throw error
    }
    const log = await webhooks.listDeliveries(db, cursors, page.principal.orgId, webhook.id, { limit: 50 })
    return views.webhookPage(page.chrome, webhook, log.items, {
      manages: managesOrganization(page.role),
      ...options,
    })
  }
  const webhookNotFound = (reply: FastifyReply) =>
    send(reply, views.messagePage('Not found', 'There is no such webhook in this organization.'), 404)

  app.get<{ Params: { id: string } }>(
    '/webhooks/:id',
    { config: { section: 'webhooks' } },
    async (request, reply) => {
      const view = await webhookView(pageOf(request), request.params.id, {
        ...('saved' in (request.query as object) ? { notice: 'Saved.' } : {}),
        ...('redelivered' in (request.query as object) ? { notice: 'Queued for delivery again.' } : {}),
      })
      return view ? send(reply, view) : webhookNotFound(reply)
    },
  )

  app.post<{ Params: { id: string } }>(
    '/webhooks/:id',
    { config: { section: 'webhooks' } },
    async (request, reply) => {
      const page = pageOf(request)
      const refused = requireManager(page, reply)
      if (refused) return refused
      if (!isUuid(request.params.id)) return webhookNotFound(reply)
      const values = webhookForm(request)
      try {
        if (values.events.length === 0)
          throw new ValidationFailedError([
            { loc: ['body', 'events'], msg: 'Choose at least one event.', type: 'value_error' },
          ])
        await webhooks.updateWebhook(db, webhookPolicy, page.principal, request.params.id, {
          endpoint: values.endpoint,
          name: values.name.slice(0, 200) || new URL(values.endpoint).host,
          events: values.events,
          enabled: text(request, 'enabled') === 'on',
        })
        return reply.redirect(`/settings/webhooks/${request.params.id}?saved`, 303)
      } catch (error) {
        if (error instanceof AppError && error.code === 'webhook_not_found') return webhookNotFound(reply)
        const view = await webhookView(page, request.params.id, { error: refusal(error) })
        return view ? send(reply, view, 422) : webhookNotFound(reply)
      }
    },
  )

  app.post<{ Params: { id: string } }>(
    '/webhooks/:id/rotate',
    { config: { section: 'webhooks' } },
    async (request, reply) => {
      const page = pageOf(request)
      const refused = requireManager(page, reply)
      if (refused) return refused
      if (!isUuid(request.params.id)) return webhookNotFound(reply)
      try {
        const rotated = await webhooks.rotateWebhookSecret(db, page.principal.orgId, request.params.id)
        const view = await webhookView(page, rotated.id, {
          secret: rotated.secret,
          notice: 'New secret made.',
        })
        return view ? send(reply, view) : webhookNotFound(reply)
      } catch (error) {
        if (error instanceof AppError && error.code === 'webhook_not_found') return webhookNotFound(reply)
        throw error
      }
    },
  )

  app.get<{ Params: { id: string } }>(
    '/webhooks/:id/delete',
    { config: { section: 'webhooks' } },
    async (request, reply) => {
      const page = pageOf(request)
      const refused = requireManager(page, reply)
      if (refused) return refused
      if (!isUuid(request.params.id)) return webhookNotFound(reply)
      const webhook = (await webhookList(page.principal.orgId)).find(
        (w) => w.id === request.params.id.toLowerCase(),
      )
      if (!webhook) return webhookNotFound(reply)
      return send(
        reply,
        views.confirmPage(
          page.chrome,
          'Delete webhook',
          `Delete the webhook “${webhook.name}”? Deliveries to ${webhook.endpoint} stop at once and its delivery log is removed.`,
          `/settings/webhooks/${webhook.id}/delete`,
          'Delete webhook',
          `/settings/webhooks/${webhook.id}`,
        ),
      )
    },
  )

  app.post<{ Params: { id: string } }>('/webhooks/:id/delete', async (request, reply) => {
    const page = pageOf(request)
    const refused = requireManager(page, reply)
    if (refused) return refused
    if (!isUuid(request.params.id)) return webhookNotFound(reply)
    try {
      await webhooks.deleteWebhook(db, page.principal.orgId, request.params.id)
    } catch (error) {
      if (error instanceof AppError && error.code === 'webhook_not_found') return webhookNotFound(reply)
      throw error
    }
    return reply.redirect('/settings/webhooks', 303)
  })

  app.post<{ Params: { id: string; deliveryId: string } }>(
    '/webhooks/:id/deliveries/:deliveryId/redeliver',
    async (request, reply) => {
      const page = pageOf(request)
      const refused = requireManager(page, reply)
      if (refused) return refused
      if (!isUuid(request.params.id) || !isUuid(request.params.deliveryId)) return webhookNotFound(reply)
      try {
        await webhooks.redeliver(db, page.principal.orgId, request.params.id, request.params.deliveryId)
      } catch (error) {
        if (error instanceof AppError && error.code === 'delivery_not_found') return webhookNotFound(reply)
        if (error instanceof AppError && error.code === 'delivery_pending') {
          const view = await webhookView(page, request.params.id, { error: error.message })
          return view ? send(reply, view, 409) : webhookNotFound(reply)
        }
        throw error
      }
      return reply.redirect(`/settings/webhooks/${request.params.id}?redelivered`, 303)
    },
  )

  // Contacts, through the same services (and the same validation) as the API
  app.get<{ Querystring: { page?: string } }>(
    '/contacts',
    { config: { section: 'contacts' } },
    async (request, reply) => {
      const page = pageOf(request)
      const list = await contacts.listContacts(db, page.principal.orgId, pagingOf(request.query))
      return send(reply, views.contactsPage(page.chrome, list))
    },
  )

  const contactNotFound = (reply: FastifyReply) =>
    send(reply, views.messagePage('Not found', 'There is no such contact in this organization.'), 404)

  const findContact = async (page: PageContext, id: string) => {
    if (!isUuid(id)) return null
    try {
      return await contacts.getContact(db, page.principal.orgId, id)
    } catch (error) {
      if (error instanceof AppError && error.code === 'contact_not_found') return null
      throw error
    }
  }

  app.get<{ Params: { id: string } }>(
    '/contacts/:id',
    { config: { section: 'contacts' } },
    async (request, reply) => {
      const page = pageOf(request)
      const contact = await findContact(page, request.params.id)
      if (!contact) return contactNotFound(reply)
      const duplicates = await findDuplicates(db, page.principal.orgId, contact.id)
      const query = request.query as Record<string, string>
      const notice = query.merged
        ? 'Merged: this contact now holds the duplicate’s data and identities.'
        : undefined
      const history = views.historySection(
        (await listContactEvents(db, page.principal.orgId, contact.id, 20, null)).map(toContactEvent),
        await actorNames(page.principal.orgId),
      )
      return send(
        reply,
        views.contactPage(page.chrome, contact, { saved: 'saved' in query, duplicates, notice, history }),
      )
    },
  )

  app.post<{ Params: { id: string } }>(
    '/contacts/:id/merge',
    { config: { section: 'contacts' } },
    async (request, reply) => {
      const page = pageOf(request)
      const contact = await findContact(page, request.params.id)
      if (!contact) return contactNotFound(reply)
      const duplicateId = text(request, 'duplicate_id')
      try {
        if (!isUuid(duplicateId)) throw new AppError('contact_not_found', 'That duplicate no longer exists.')
        await mergeContacts(db, page.principal, { primary_id: contact.id, duplicate_ids: [duplicateId] })
      } catch (error) {
        if (!(error instanceof AppError)) throw error
        const duplicates = await findDuplicates(db, page.principal.orgId, contact.id)
        return send(
          reply,
          views.contactPage(page.chrome, contact, { duplicates, error: error.message }),
          error.status,
        )
      }
      return reply.redirect(`/settings/contacts/${contact.id}?merged=1`, 303)
    },
  )

  app.get<{ Querystring: { page?: string; restored?: string } }>(
    '/trash',
    { config: { section: 'trash' } },
    async (request, reply) => {
      const page = pageOf(request)
      const trash = await contacts.listTrash(db, page.principal.orgId, pagingOf(request.query))
      const notice = request.query.restored ? 'Restored.' : undefined
      return send(reply, views.trashPage(page.chrome, trash, trashRetentionDays, notice))
    },
  )

  app.post<{ Params: { id: string } }>(
    '/trash/:id/restore',
    { config: { section: 'trash' } },
    async (request, reply) => {
      const page = pageOf(request)
      try {
        if (!isUuid(request.params.id))
          throw new AppError('contact_not_found', 'There is no such contact in the trash.')
        await contacts.restoreContact(db, page.principal, request.params.id)
      } catch (error) {
        if (!(error instanceof AppError)) throw error
        const trash = await contacts.listTrash(db, page.principal.orgId, pagingOf({}))
        const message =
          error.code === 'identity_conflict'
            ? 'It cannot be restored: another contact now has its email, phone number or external id.'
            : error.message
        return send(
          reply,
          views.trashPage(page.chrome, trash, trashRetentionDays, undefined, message),
          error.status,
        )
      }
      return reply.redirect('/settings/trash?restored=1', 303)
    },
  )

  app.post<{ Params: { id: string } }>(
    '/contacts/:id',
    { config: { section: 'contacts' } },
    async (request, reply) => {
      const page = pageOf(request)
      const contact = await findContact(page, request.params.id)
      if (!contact) return contactNotFound(reply)
      const values: Record<string, string> = {}
      const body: Record<string, unknown> = {}
      const issues: ValidationIssue[] = []
      for (const [name] of views.CONTACT_TEXT_FIELDS) {
        values[name] = text(request, name)
        body[name] = values[name] === '' ? null : values[name]
      }
      for (const [name] of views.CONTACT_JSON_FIELDS) {
        values[name] = text(request, name)
        try {
          body[name] = values[name] === '' ? {} : JSON.parse(values[name])
        } catch {
          issues.push({ loc: ['body', name], msg: 'This is not valid JSON.', type: 'json_invalid' })
        }
      }
      issues.push(...validateBody(ContactUpdateBody, body))
      if (issues.length === 0) {
        try {
          await contacts.updateContact(db, page.principal, contact.id, body as ContactUpdateBody)
          return reply.redirect(`/settings/contacts/${contact.id}?saved`, 303)
        } catch (error) {
          if (error instanceof ValidationFailedError) issues.push(...error.issues)
          else if (error instanceof AppError && error.code === 'identity_conflict') {
            const conflict = `${error.message} (${error.details.existing_id}): merge the two contacts instead.`
            return send(reply, views.contactPage(page.chrome, contact, { values, error: conflict }), 409)
          } else throw error
        }
      }
      return send(reply, views.contactPage(page.chrome, contact, { values, issues }), 422)
    },
  )

  app.get<{ Params: { id: string } }>(
    '/contacts/:id/delete',
    { config: { section: 'contacts' } },
    async (request, reply) => {
      const page = pageOf(request)
      const contact = await findContact(page, request.params.id)
      if (!contact) return contactNotFound(reply)
      const name = [contact.first_name, contact.last_name].filter(Boolean).join(' ') || contact.id
      return send(
        reply,
        views.confirmPage(
          page.chrome,
          'Delete contact',
          `Delete the contact ${name}? It goes to the trash, from which it can be restored for ${trashRetentionDays} days.`,
          `/settings/contacts/${contact.id}/delete`,
          'Delete contact',
          `/settings/contacts/${contact.id}`,
        ),
      )
    },
  )

  app.post<{ Params: { id: string } }>('/contacts/:id/delete', async (request, reply) => {
    const page = pageOf(request)
    const contact = await findContact(page, request.params.id)
    if (!contact) return contactNotFound(reply)
    await contacts.deleteContact(db, page.principal, contact.id)
    return reply.redirect('/settings/contacts', 303)
  })

  // Members and organizations
  const membersView = async (page: PageContext) => ({
    members: await users.membersOf(db, page.principal.orgId),
    canManage: managesOrganization(page.role),
  })

  app.get('/members', { config: { section: 'members' } }, async (request, reply) => {
    const page = pageOf(request)
    return send(reply, views.membersPage(page.chrome, await membersView(page)))
  })

  app.post('/members', { config: { section: 'members' } }, async (request, reply) => {
    const page = pageOf(request)
    if (!managesOrganization(page.role)) {
      return send(reply, views.messagePage('Not allowed', 'Only owners and admins add members.'), 403)
    }
    const role = text(request, 'role')
    if (role === 'owner' && page.role !== 'owner') {
      return send(reply, views.messagePage('Not allowed', 'Only owners make other owners.'), 403)
    }
    try {
      const { user, created } = await users.addMember(db, page.principal.orgId, {
        email: text(request, 'email'),
        name: text(request, 'name'),
        password: String(form(request).password ?? ''),
        role,
      })
      const notice = created
        ? `${user.name} can now sign in as ${user.email}.`
        : `${user.name} is now ${role} here.`
      return send(reply, views.membersPage(page.chrome, { ...(await membersView(page)), notice }))
    } catch (error) {
      if (!(error instanceof AppError)) throw error
      return send(
        reply,
        views.membersPage(page.chrome, { ...(await membersView(page)), error: error.message }),
        422,
      )
    }
  })

  app.get('/organizations', { config: { section: 'organizations' } }, async (request, reply) =>
    send(reply, views.organizationsPage(pageOf(request).chrome)),
  )

  app.post('/organizations', { config: { section: 'organizations' } }, async (request, reply) => {
    const page = pageOf(request)
    try {
      const org = await organizations.createOrganization(db, text(request, 'name'))
      await users.grantRole(db, org.id, page.session.userId, 'owner')
      await sessions.switchOrganization(db, page.session.tokenHash, org.id)
      return reply.redirect('/settings/contacts', 303)
    } catch (error) {
      if (!(error instanceof AppError)) throw error
      return send(reply, views.organizationsPage(page.chrome, error.message), 422)
    }
  })
}
