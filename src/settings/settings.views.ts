import type { ApiKeySummary } from '../api-keys/api-keys.service.js'
import type { Contact, Duplicate, TrashedContact } from '../contacts/contacts.schemas.js'
import type { MembershipRole } from '../db/schema.js'
import type { ValidationIssue } from '../errors.js'
import type { ContactEvent } from '../events/events.schemas.js'
import type { ImportJob } from '../imports/imports.schemas.js'
import type { PageOf } from '../shared/schemas.js'
import type { Delivery, Webhook } from '../webhooks/webhooks.schemas.js'
import { html, type SafeHtml } from './html.js'

export interface Chrome {
  user: { name: string; email: string }
  csrf: string
  orgId: string
  role: MembershipRole
  organizations: { org_id: string; org_name: string; role: MembershipRole }[]
  section: 'contacts' | 'trash' | 'import' | 'keys' | 'webhooks' | 'members' | 'organizations'
}

const date = (value: string | null) =>
  value ? html`<time datetime="${value}">${value.slice(0, 16).replace('T', ' ')} UTC</time>` : '—'

function document(title: string, body: SafeHtml): SafeHtml {
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>${title} · Contacts</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/settings/assets/settings.css">
<script src="/settings/assets/settings.js" defer></script>
</head>
<body>
${body}
</body>
</html>`
}

const csrfField = (csrf: string) => html`<input type="hidden" name="_csrf" value="${csrf}">`

function page(chrome: Chrome, title: string, content: SafeHtml): SafeHtml {
  const link = (section: Chrome['section'], href: string, label: string) =>
    html`<a href="${href}"${chrome.section === section ? html` aria-current="page"` : ''}>${label}</a>`
  return document(
    title,
    html`<a class="skip-link" href="#main">Skip to content</a>
<header class="topbar">
  <div class="brand" aria-hidden="true">◎</div>
  <span class="brand-name">Contacts</span>
  <nav aria-label="Sections">
    ${link('contacts', '/settings/contacts', 'Contacts')}
    ${link('trash', '/settings/trash', 'Trash')}
    ${link('import', '/settings/import', 'Import & export')}
    ${link('keys', '/settings/keys', 'API keys')}
    ${link('webhooks', '/settings/webhooks', 'Webhooks')}
    ${link('members', '/settings/members', 'Members')}
    ${link('organizations', '/settings/organizations', 'Organizations')}
  </nav>
  <form class="org-switch" method="post" action="/settings/org">
    ${csrfField(chrome.csrf)}
    <label for="org-select" class="visually-hidden">Organization</label>
    <select id="org-select" name="org_id">
      ${chrome.organizations.map(
        (o) =>
          html`<option value="${o.org_id}"${o.org_id === chrome.orgId ? html` selected` : ''}>${o.org_name}</option>`,
      )}
    </select>
    <button type="submit" class="secondary">Switch</button>
  </form>
  <form method="post" action="/settings/logout" class="signout">
    ${csrfField(chrome.csrf)}
    <span class="who" title="${chrome.user.email}">${chrome.user.name} · ${chrome.role}</span>
    <button type="submit" class="link">Sign out</button>
  </form>
</header>
<main id="main" tabindex="-1">
<h1>${title}</h1>
${content}
</main>`,
  )
}

const errorBox = (message: string | null | undefined) =>
  message ? html`<p class="alert" role="alert">${message}</p>` : ''

function field(
  name: string,
  label: string,
  options: { type?: string; value?: string; required?: boolean; autocomplete?: string; hint?: string } = {},
) {
  return html`<div class="field">
  <label for="${name}">${label}</label>
  <input id="${name}" name="${name}" type="${options.type ?? 'text'}" value="${options.value ?? ''}"${options.required ? html` required` : ''}${options.autocomplete ? html` autocomplete="${options.autocomplete}"` : ''}>
  ${options.hint ? html`<small>${options.hint}</small>` : ''}
</div>`
}

function standalone(title: string, content: SafeHtml): SafeHtml {
  return document(
    title,
    html`<main id="main" class="narrow"><div class="card"><div class="brand big" aria-hidden="true">◎</div><h1>${title}</h1>${content}</div></main>`,
  )
}

export function setupPage(csrf: string, error?: string, values: Record<string, string> = {}) {
  return standalone(
    'Set up Contacts',
    html`<p>No one has signed in yet. Create the owner account and the first organization. The setup token is printed in the server's log when it starts.</p>
${errorBox(error)}
<form method="post" action="/settings/setup">
  ${csrfField(csrf)}
  ${field('setup_token', 'Setup token', { required: true, autocomplete: 'off' })}
  ${field('org_name', 'Organization name', { required: true, value: values.org_name })}
  ${field('name', 'Your name', { required: true, value: values.name, autocomplete: 'name' })}
  ${field('email', 'Email', { type: 'email', required: true, value: values.email, autocomplete: 'email' })}
  ${field('password', 'Password', { type: 'password', required: true, autocomplete: 'new-password', hint: 'At least 10 characters.' })}
  <button type="submit">Create owner account</button>
</form>`,
  )
}

export function loginPage(csrf: string, error?: string, email = '') {
  return standalone(
    'Sign in',
    html`${errorBox(error)}
<form method="post" action="/settings/login">
  ${csrfField(csrf)}
  ${field('email', 'Email', { type: 'email', required: true, value: email, autocomplete: 'username' })}
  ${field('password', 'Password', { type: 'password', required: true, autocomplete: 'current-password' })}
  <button type="submit">Sign in</button>
</form>`,
  )
}

export function messagePage(title: string, message: string) {
  return standalone(title, html`<p>${message}</p><p><a href="/settings">Back to the settings</a></p>`)
}

export interface KeysView {
  keys: (ApiKeySummary & { owner: string | null })[]
  seesAllKeys: boolean
  created?: { key: string; name: string }
  error?: string
  values?: Record<string, string>
}

export function keysPage(chrome: Chrome, view: KeysView) {
  const values = view.values ?? {}
  const roleOption = (role: string, label: string) =>
    html`<option value="${role}"${values.role === role ? html` selected` : ''}>${label}</option>`
  return page(
    chrome,
    'API keys',
    html`<p class="lead">Keys authenticate scripts and integrations against <code>/api/v1</code>. ${
      view.seesAllKeys
        ? 'As an owner or admin you see every key of this organization.'
        : 'You see the keys you made.'
    }</p>
${
  view.created
    ? html`<dialog id="new-key" class="key-dialog" open data-modal aria-labelledby="new-key-title">
  <h2 id="new-key-title">Your new key “${view.created.name}”</h2>
  <p>Copy it now. It is shown only this once; afterwards only its prefix is visible.</p>
  <div class="key-box"><code id="new-key-value">${view.created.key}</code>
  <button type="button" class="secondary" data-copy="new-key-value">Copy</button></div>
  <p class="copied" role="status" aria-live="polite"></p>
  <form method="dialog"><button type="submit" autofocus>Done</button></form>
</dialog>`
    : ''
}
<section class="card">
<h2>Create key</h2>
${errorBox(view.error)}
<form method="post" action="/settings/keys" class="inline-form">
  ${csrfField(chrome.csrf)}
  ${field('name', 'Name', { required: true, value: values.name })}
  <div class="field">
    <label for="role">Role</label>
    <select id="role" name="role" required>
      ${roleOption('full_access', 'Full access')}
      ${roleOption('read_only', 'Read only')}
    </select>
  </div>
  ${field('description', 'Description', { required: true, value: values.description })}
  <button type="submit">Create key</button>
</form>
</section>
<section class="card">
<h2>Keys</h2>
${
  view.keys.length === 0
    ? html`<p class="empty">No keys yet.</p>`
    : html`<table id="keys-table">
<thead><tr><th scope="col">Name</th><th scope="col">Role</th><th scope="col">Description</th><th scope="col">Prefix</th>${
        view.seesAllKeys ? html`<th scope="col">Made by</th>` : ''
      }<th scope="col">Created</th><th scope="col">Last used</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
<tbody>
${view.keys.map(
  (k) => html`<tr>
  <td>${k.name}</td>
  <td><span class="badge ${k.role}">${k.role === 'full_access' ? 'Full access' : 'Read only'}</span></td>
  <td>${k.description ?? ''}</td>
  <td><code>${k.prefix}…</code></td>
  ${view.seesAllKeys ? html`<td>${k.owner ?? 'CLI'}</td>` : ''}
  <td>${date(k.created_at)}</td>
  <td>${date(k.last_used_at)}</td>
  <td><a class="danger-link" href="/settings/keys/${k.id}/revoke">Delete<span class="visually-hidden"> key ${k.name}</span></a></td>
</tr>`,
)}
</tbody></table>`
}
</section>`,
  )
}

export function confirmPage(
  chrome: Chrome,
  title: string,
  message: string,
  action: string,
  confirmLabel: string,
  back: string,
) {
  return page(
    chrome,
    title,
    html`<section class="card">
<p>${message}</p>
<form method="post" action="${action}" class="actions">
  ${csrfField(chrome.csrf)}
  <button type="submit" class="danger" autofocus>${confirmLabel}</button>
  <a class="button secondary" href="${back}">Cancel</a>
</form>
</section>`,
  )
}

const fullName = (c: Contact) => [c.first_name, c.last_name].filter(Boolean).join(' ') || '(no name)'

export function contactsPage(chrome: Chrome, contacts: PageOf<Contact>) {
  const pager = (label: string, target: number | null, rel: string) =>
    target === null
      ? html`<span class="button secondary disabled" aria-disabled="true">${label}</span>`
      : html`<a class="button secondary" rel="${rel}" href="/settings/contacts?page=${target}">${label}</a>`
  return page(
    chrome,
    'Contacts',
    html`<section class="card">
${
  contacts.items.length === 0
    ? html`<p class="empty">No contacts on this page.</p>`
    : html`<table id="contacts-table">
<thead><tr><th scope="col">Name</th><th scope="col">Email</th><th scope="col">Channels</th><th scope="col">Last seen</th><th scope="col">Created</th></tr></thead>
<tbody>
${contacts.items.map(
  (c) => html`<tr>
  <td><a href="/settings/contacts/${c.id}">${fullName(c)}</a></td>
  <td>${c.email ?? ''}</td>
  <td>${Object.keys(c.channels).join(', ')}</td>
  <td>${date(c.last_seen)}</td>
  <td>${date(c.created_at)}</td>
</tr>`,
)}
</tbody></table>`
}
<nav class="pager" aria-label="Pages">
  ${pager('← Previous', contacts.previous_page, 'prev')}
  <span>Page ${contacts.page} of ${Math.max(contacts.pages, 1)} · ${contacts.total} contacts</span>
  ${pager('Next →', contacts.next_page, 'next')}
</nav>
</section>`,
  )
}

export const CONTACT_TEXT_FIELDS = [
  ['first_name', 'First name'],
  ['last_name', 'Last name'],
  ['email', 'Email'],
  ['last_seen', 'Last seen (RFC 3339)'],
  ['last_sent', 'Last sent (RFC 3339)'],
  ['first_assistant_id', 'First assistant id'],
  ['last_assistant_id', 'Last assistant id'],
  ['first_widget_id', 'First widget id'],
  ['last_widget_id', 'Last widget id'],
] as const
export const CONTACT_JSON_FIELDS = [
  ['channels', 'Channels (JSON object)'],
  ['user_attributes', 'User attributes (JSON object)'],
  ['custom_fields', 'Custom fields (JSON object)'],
] as const

export function contactPage(
  chrome: Chrome,
  contact: Contact,
  options: {
    history?: SafeHtml
    values?: Record<string, string>
    issues?: ValidationIssue[]
    saved?: boolean
    error?: string
    duplicates?: Duplicate[]
    notice?: string
  } = {},
) {
  const fieldValue = (name: string) =>
    options.values?.[name] ??
    (CONTACT_JSON_FIELDS.some(([n]) => n === name)
      ? JSON.stringify(contact[name as 'channels'], null, 2)
      : ((contact[name as 'email'] as string | null) ?? ''))
  const issueFor = (name: string) =>
    options.issues
      ?.filter((issue) => issue.loc[1] === name)
      .map((issue) => issue.msg)
      .join('; ')
  const invalid = (name: string) =>
    issueFor(name) ? html` aria-invalid="true" aria-describedby="${name}-error"` : ''
  const errorText = (name: string) =>
    issueFor(name) ? html`<small id="${name}-error" class="error">${issueFor(name)}</small>` : ''
  return page(
    chrome,
    fullName(contact),
    html`<p class="lead"><a href="/settings/contacts">← All contacts</a> · id <code>${contact.id}</code> · created ${date(contact.created_at)} · updated ${date(contact.updated_at)}</p>
${options.saved ? html`<p class="notice" role="status">Saved.</p>` : ''}
${options.notice ? html`<p class="notice" role="status">${options.notice}</p>` : ''}
${options.issues?.length ? errorBox('Some fields need attention; nothing was saved.') : ''}
${errorBox(options.error)}
<form method="post" action="/settings/contacts/${contact.id}" class="card grid-form" id="contact-form">
  ${csrfField(chrome.csrf)}
  ${CONTACT_TEXT_FIELDS.map(
    ([name, label]) => html`<div class="field">
    <label for="${name}">${label}</label>
    <input id="${name}" name="${name}" type="text" value="${fieldValue(name)}"${invalid(name)}>
    ${errorText(name)}
  </div>`,
  )}
  ${CONTACT_JSON_FIELDS.map(
    ([name, label]) => html`<div class="field wide">
    <label for="${name}">${label}</label>
    <textarea id="${name}" name="${name}" rows="4" spellcheck="false"${invalid(name)}>${fieldValue(name)}</textarea>
    ${errorText(name)}
  </div>`,
  )}
  <div class="actions wide">
    <button type="submit">Save changes</button>
    <a class="button danger-outline" href="/settings/contacts/${contact.id}/delete">Delete contact</a>
  </div>
</form>
${duplicatesSection(chrome, contact, options.duplicates ?? [])}
${options.history ?? ''}`,
  )
}

const MATCH_LABELS: Record<string, string> = {
  email: 'same email',
  phone: 'same phone number',
  name_and_channel: 'same name and channel',
}

function duplicatesSection(chrome: Chrome, contact: Contact, duplicates: Duplicate[]) {
  return html`<section class="card" id="duplicates">
<h2>Possible duplicates</h2>
${
  duplicates.length === 0
    ? html`<p class="empty">No other contact looks like this person.</p>`
    : html`<p class="lead">Merging keeps this contact and its non-empty fields, fills its empty fields from the duplicate, merges channels, attributes and custom fields, and takes over every email, phone number and external id of the duplicate. The duplicate's id then points here.</p>
<table id="duplicates-table">
<thead><tr><th scope="col">Name</th><th scope="col">Email</th><th scope="col">Why</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
<tbody>
${duplicates.map(
  (d) => html`<tr>
  <td><a href="/settings/contacts/${d.id}">${fullName(d)}</a></td>
  <td>${d.email ?? ''}</td>
  <td>${d.matched_on.map((m) => MATCH_LABELS[m] ?? m).join(', ')}</td>
  <td><form method="post" action="/settings/contacts/${contact.id}/merge">
    ${csrfField(chrome.csrf)}
    <input type="hidden" name="duplicate_id" value="${d.id}">
    <button type="submit" class="secondary">Merge into this contact<span class="visually-hidden"> (${fullName(d)})</span></button>
  </form></td>
</tr>`,
)}
</tbody></table>`
}
</section>`
}

export function trashPage(
  chrome: Chrome,
  trash: PageOf<TrashedContact>,
  retentionDays: number,
  notice?: string,
  error?: string,
) {
  return page(
    chrome,
    'Trash',
    html`<p class="lead">Deleted contacts are kept here for ${retentionDays} days, then erased for good. Restoring brings a contact back exactly as it was.</p>
${notice ? html`<p class="notice" role="status">${notice}</p>` : ''}
${errorBox(error)}
<section class="card">
${
  trash.items.length === 0
    ? html`<p class="empty">The trash is empty.</p>`
    : html`<table id="trash-table">
<thead><tr><th scope="col">Name</th><th scope="col">Email</th><th scope="col">Deleted</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
<tbody>
${trash.items.map(
  (c) => html`<tr>
  <td>${fullName(c)}</td>
  <td>${c.email ?? ''}</td>
  <td>${date(c.deleted_at)}</td>
  <td><form method="post" action="/settings/trash/${c.id}/restore">
    ${csrfField(chrome.csrf)}
    <button type="submit" class="secondary">Restore<span class="visually-hidden"> ${fullName(c)}</span></button>
  </form></td>
</tr>`,
)}
</tbody></table>`
}
</section>`,
  )
}

export interface MembersView {
  members: { id: string; email: string; name: string; role: MembershipRole }[]
  canManage: boolean
  error?: string
  notice?: string
}

export function membersPage(chrome: Chrome, view: MembersView) {
  return page(
    chrome,
    'Members',
    html`${view.notice ? html`<p class="notice" role="status">${view.notice}</p>` : ''}
<section class="card">
<table id="members-table">
<thead><tr><th scope="col">Name</th><th scope="col">Email</th><th scope="col">Role</th></tr></thead>
<tbody>${view.members.map((m) => html`<tr><td>${m.name}</td><td>${m.email}</td><td><span class="badge">${m.role}</span></td></tr>`)}</tbody>
</table>
</section>
${
  view.canManage
    ? html`<section class="card">
<h2>Add a member</h2>
<p class="lead">A person who already has an account keeps their password and is only given a role here.</p>
${errorBox(view.error)}
<form method="post" action="/settings/members" class="inline-form">
  ${csrfField(chrome.csrf)}
  ${field('name', 'Name', { required: true })}
  ${field('email', 'Email', { type: 'email', required: true })}
  ${field('password', 'Initial password', { type: 'password', autocomplete: 'new-password', hint: 'For a new account: at least 10 characters.' })}
  <div class="field"><label for="member-role">Role</label>
    <select id="member-role" name="role">
      <option value="member">Member</option><option value="admin">Admin</option>${chrome.role === 'owner' ? html`<option value="owner">Owner</option>` : ''}
    </select></div>
  <button type="submit">Add member</button>
</form>
</section>`
    : ''
}`,
  )
}

export function organizationsPage(chrome: Chrome, error?: string) {
  return page(
    chrome,
    'Organizations',
    html`<section class="card">
<table id="organizations-table">
<thead><tr><th scope="col">Organization</th><th scope="col">Your role</th><th scope="col">Id</th></tr></thead>
<tbody>${chrome.organizations.map((o) => html`<tr><td>${o.org_name}</td><td><span class="badge">${o.role}</span></td><td><code>${o.org_id}</code></td></tr>`)}</tbody>
</table>
</section>
<section class="card">
<h2>New organization</h2>
${errorBox(error)}
<form method="post" action="/settings/organizations" class="inline-form">
  ${csrfField(chrome.csrf)}
  ${field('name', 'Name', { required: true })}
  <button type="submit">Create organization</button>
</form>
</section>`,
  )
}

const EVENT_LABELS: Record<string, string> = {
  'contact.created': 'Created',
  'contact.updated': 'Updated',
  'contact.deleted': 'Deleted',
  'contact.restored': 'Restored',
  'contact.merged': 'Merged',
  'contact.erased': 'Erased',
}

const actorLabel = (actor: { type: string; id: string | null }, names: Map<string, string>) =>
  actor.type === 'system'
    ? 'the service'
    : actor.type === 'user'
      ? (names.get(actor.id ?? '') ?? 'a former member')
      : `API key ${names.get(actor.id ?? '') ?? (actor.id ?? '').slice(0, 8)}`

const shown = (value: unknown) => (value === null || value === undefined ? '—' : JSON.stringify(value))

/** The contact's latest events: what changed, from what to what, and who changed it. */
export function historySection(events: ContactEvent[], names: Map<string, string>) {
  return html`<section class="card" aria-labelledby="history-title">
<h2 id="history-title">History</h2>
${
  events.length === 0
    ? html`<p class="empty">No changes recorded yet.</p>`
    : html`<ol class="history">
${events.map((event) => {
  const changes = ((event.data as { changes?: unknown }).changes ?? {}) as Record<
    string,
    { previous: unknown; current: unknown }
  >
  return html`<li>
  <strong>${EVENT_LABELS[event.event] ?? event.event}</strong> by ${actorLabel(event.data.actor, names)} · ${date(event.created_at)}
  ${
    Object.keys(changes).length > 0
      ? html`<ul>${Object.entries(changes).map(
          ([field, change]) =>
            html`<li><code>${field}</code>: ${shown(change.previous)} → ${shown(change.current)}</li>`,
        )}</ul>`
      : ''
  }
</li>`
})}
</ol>`
}
</section>`
}

const eventChoices = (selected: readonly string[]) =>
  html`<fieldset class="field wide"><legend>Events to send</legend>${Object.entries(EVENT_LABELS).map(
    ([type, label]) =>
      html`<label class="check"><input type="checkbox" name="events" value="${type}"${selected.includes(type) ? html` checked` : ''}> ${label} <code>${type}</code></label>`,
  )}</fieldset>`

function webhookStatus(webhook: Webhook) {
  if (!webhook.enabled && webhook.disabled_reason)
    return html`<span class="badge danger">Disabled for failing</span>`
  if (!webhook.enabled) return html`<span class="badge">Off</span>`
  if (webhook.failing_since)
    return html`<span class="badge warning">Failing since ${date(webhook.failing_since)}</span>`
  return html`<span class="badge full_access">On</span>`
}

export interface WebhooksView {
  webhooks: Webhook[]
  manages: boolean
  created?: Webhook & { secret: string }
  error?: string
  values?: Record<string, string>
}

export function webhooksPage(chrome: Chrome, view: WebhooksView) {
  const values = view.values ?? {}
  return page(
    chrome,
    'Webhooks',
    html`<p class="lead">Webhooks receive every change to this organization's contacts, signed with the webhook's secret, retried for 24 hours, in order per contact.</p>
${
  view.created
    ? html`<dialog id="new-secret" class="key-dialog" open data-modal aria-labelledby="new-secret-title">
  <h2 id="new-secret-title">Signing secret of “${view.created.name}”</h2>
  <p>Copy it now and keep it with your receiver. It is shown only this once.</p>
  <div class="key-box"><code id="new-secret-value">${view.created.secret}</code>
  <button type="button" class="secondary" data-copy="new-secret-value">Copy</button></div>
  <p class="copied" role="status" aria-live="polite"></p>
  <form method="dialog"><button type="submit" autofocus>Done</button></form>
</dialog>`
    : ''
}
${
  view.manages
    ? html`<section class="card">
<h2>Add webhook</h2>
${errorBox(view.error)}
<form method="post" action="/settings/webhooks" class="grid-form">
  ${csrfField(chrome.csrf)}
  ${field('name', 'Name', { value: values.name, hint: 'Defaults to the endpoint’s host.' })}
  ${field('endpoint', 'Endpoint URL', { type: 'url', required: true, value: values.endpoint })}
  ${eventChoices(values.events ? values.events.split(',') : Object.keys(EVENT_LABELS))}
  <div class="actions wide"><button type="submit">Add webhook</button></div>
</form>
</section>`
    : html`<p>Owners and admins add and change webhooks.</p>`
}
<section class="card">
<h2>Webhooks</h2>
${
  view.webhooks.length === 0
    ? html`<p class="empty">No webhooks yet.</p>`
    : html`<table id="webhooks-table">
<thead><tr><th scope="col">Name</th><th scope="col">Endpoint</th><th scope="col">Status</th><th scope="col">Events</th></tr></thead>
<tbody>
${view.webhooks.map(
  (w) => html`<tr>
  <td><a href="/settings/webhooks/${w.id}">${w.name}</a></td>
  <td><code>${w.endpoint}</code></td>
  <td>${webhookStatus(w)}</td>
  <td>${w.events.length === 6 ? 'All' : w.events.map((e) => EVENT_LABELS[e] ?? e).join(', ')}</td>
</tr>`,
)}
</tbody></table>`
}
</section>`,
  )
}

export function webhookPage(
  chrome: Chrome,
  webhook: Webhook,
  deliveries: Delivery[],
  options: { manages: boolean; error?: string; notice?: string; secret?: string },
) {
  return page(
    chrome,
    webhook.name,
    html`<p class="lead"><a href="/settings/webhooks">← All webhooks</a> · ${webhookStatus(webhook)} · secret <code>${webhook.secret_hint}</code></p>
${webhook.disabled_reason ? html`<p class="alert" role="alert">${webhook.disabled_reason}</p>` : ''}
${
  webhook.fields
    ? html`<p id="webhook-fields">Updates are sent only when they change ${webhook.fields.join(', ')} (chosen through the API’s <code>fields</code>).</p>`
    : ''
}
${options.notice ? html`<p class="notice" role="status">${options.notice}</p>` : ''}
${
  options.secret
    ? html`<div class="card"><p>The new signing secret, shown only now:</p><div class="key-box"><code id="rotated-secret">${options.secret}</code>
  <button type="button" class="secondary" data-copy="rotated-secret">Copy</button></div><p class="copied" role="status" aria-live="polite"></p></div>`
    : ''
}
${errorBox(options.error)}
${
  options.manages
    ? html`<form method="post" action="/settings/webhooks/${webhook.id}" class="card grid-form">
  ${csrfField(chrome.csrf)}
  ${field('name', 'Name', { required: true, value: webhook.name })}
  ${field('endpoint', 'Endpoint URL', { type: 'url', required: true, value: webhook.endpoint })}
  ${eventChoices(webhook.events)}
  <label class="check wide"><input type="checkbox" name="enabled" value="on"${webhook.enabled ? html` checked` : ''}> Send events to this webhook</label>
  <div class="actions wide">
    <button type="submit">Save changes</button>
    <button type="submit" class="secondary" formaction="/settings/webhooks/${webhook.id}/rotate">New secret</button>
    <a class="button danger-outline" href="/settings/webhooks/${webhook.id}/delete">Delete webhook</a>
  </div>
</form>`
    : ''
}
<section class="card">
<h2>Deliveries</h2>
${
  deliveries.length === 0
    ? html`<p class="empty">Nothing delivered yet.</p>`
    : html`<table id="deliveries-table">
<thead><tr><th scope="col">Event</th><th scope="col">Status</th><th scope="col">Attempts</th><th scope="col">Last answer</th><th scope="col">Created</th><th scope="col"><span class="visually-hidden">Actions</span></th></tr></thead>
<tbody>
${deliveries.map(
  (d) => html`<tr>
  <td>${EVENT_LABELS[d.event] ?? d.event} <code>${d.contact_id.slice(0, 8)}…</code></td>
  <td><span class="badge ${d.status === 'succeeded' ? 'full_access' : d.status === 'failed' ? 'danger' : ''}">${d.status}</span>${
    d.next_attempt_at ? html` next ${date(d.next_attempt_at)}` : ''
  }</td>
  <td>${d.attempts}</td>
  <td>${d.last_status_code ?? ''} ${d.last_error ?? ''}</td>
  <td>${date(d.created_at)}</td>
  <td>${
    options.manages && d.status !== 'pending'
      ? html`<form method="post" action="/settings/webhooks/${webhook.id}/deliveries/${d.id}/redeliver">${csrfField(chrome.csrf)}<button type="submit" class="link">Redeliver</button></form>`
      : ''
  }</td>
</tr>`,
)}
</tbody></table>`
}
</section>`,
  )
}

const jobCounts = (job: ImportJob) =>
  `${job.rows_read} rows: ${job.created} created, ${job.updated} updated, ${job.unchanged} unchanged, ${job.failed} failed`

function jobRow(job: ImportJob) {
  const fraction = job.bytes > 0 ? job.bytes_read / job.bytes : 0
  return html`<tr>
  <td>${job.file_name ?? 'upload'}${job.dry_run ? html` <span class="badge">dry run</span>` : ''}</td>
  <td>${date(job.created_at)}</td>
  <td>${job.status === 'failed' ? html`failed: ${job.error ?? ''}` : job.status}
    ${job.status === 'running' || job.status === 'queued' ? html`<progress max="1" value="${String(fraction)}"></progress>` : ''}</td>
  <td>${jobCounts(job)}</td>
  <td>${job.failed > 0 ? html`<a href="/settings/import/${job.id}/failures" download>Failed rows</a>` : '—'}</td>
</tr>`
}

/** Import (a file, sent by the page's script, followed live) and export (plain downloads). */
export function importPage(chrome: Chrome, jobs: ImportJob[]) {
  return page(
    chrome,
    'Import & export',
    html`<p class="lead">Import contacts from a CSV file: each row updates the contact with its email, phone number or external id, or creates one. Columns named like the fields (email, first_name, phone, custom_fields.plan…) are mapped by their header; the API and the <code>contacts import</code> command take a mapping for other names.</p>
<section class="card">
<h2>Import a CSV file</h2>
<form id="import-form" class="grid-form" data-csrf="${chrome.csrf}">
  <div class="field wide">
    <label for="import-file">CSV file</label>
    <input id="import-file" name="file" type="file" accept=".csv,text/csv" required>
    <small>UTF-8, with a header line. Empty cells leave a field as it is.</small>
  </div>
  <div class="field">
    <label for="import-delimiter">Delimiter</label>
    <select id="import-delimiter" name="delimiter">
      <option value=",">Comma (,)</option>
      <option value=";">Semicolon (;)</option>
      <option value="	">Tab</option>
    </select>
  </div>
  <div class="field checkbox">
    <label for="import-dry-run"><input id="import-dry-run" name="dry_run" type="checkbox" value="true"> Dry run: report what would happen, change nothing</label>
  </div>
  <div class="actions wide"><button type="submit">Import</button></div>
  <noscript><p class="alert">Uploading from this page needs JavaScript; <code>contacts import FILE</code> and <code>POST /api/v1/contact/import</code> work without it.</p></noscript>
</form>
<div id="import-progress" class="import-progress" hidden>
  <label for="import-bar" id="import-stage">Uploading…</label>
  <progress id="import-bar" max="1" value="0"></progress>
  <p id="import-counts" role="status" aria-live="polite"></p>
  <p id="import-failures" hidden><a href="#" download>Download the rows that failed, with the reason for each</a></p>
</div>
</section>
<section class="card">
<h2>Export</h2>
<p>Every contact of this organization, with custom fields as columns.</p>
<p class="actions"><a class="button" href="/settings/export?format=csv" download>Download CSV</a>
<a class="button secondary" href="/settings/export?format=ndjson" download>Download NDJSON</a></p>
</section>
<section class="card">
<h2>Recent imports</h2>
${
  jobs.length === 0
    ? html`<p class="empty">No imports yet.</p>`
    : html`<table id="imports-table">
<thead><tr><th scope="col">File</th><th scope="col">Started</th><th scope="col">Status</th><th scope="col">Rows</th><th scope="col">Failures</th></tr></thead>
<tbody>${jobs.map(jobRow)}</tbody></table>`
}
</section>`,
  )
}
