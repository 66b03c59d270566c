import type { ApiKeySummary } from '../api-keys/api-keys.service.js'
import type { Contact, Duplicate, TrashedContact } from '../contacts/contacts.schemas.js'
import type { MembershipRole } from '../db/schema.js'
import type { ValidationIssue } from '../errors.js'
import type { PageOf } from '../shared/schemas.js'
import { html, type SafeHtml } from './html.js'

export interface Chrome {
  user: { name: string; email: string }
  csrf: string
  orgId: string
  role: MembershipRole
  organizations: { org_id: string; org_name: string; role: MembershipRole }[]
  section: 'contacts' | 'trash' | 'keys' | 'members' | 'organizations'
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
    ${link('keys', '/settings/keys', 'API keys')}
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
${duplicatesSection(chrome, contact, options.duplicates ?? [])}`,
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
