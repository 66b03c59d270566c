// Run against a local service: CONTACTS_URL=http://127.0.0.1:8000 CONTACTS_API_KEY=in-… npx tsx examples/quickstart.ts
import { createContactsClient } from '../src/index.js'

const contacts = createContactsClient({
  baseUrl: process.env.CONTACTS_URL ?? 'http://127.0.0.1:8000',
  apiKey: process.env.CONTACTS_API_KEY ?? '',
})

// Create or update by email, then change one field: every path, body and answer is typed.
const upserted = await contacts.POST('/api/v1/contact/upsert', {
  params: { query: { email: 'ada@example.com' } },
  body: { first_name: 'Ada', custom_fields: { plan: 'pro' } },
})
if (upserted.error) throw new Error(`upsert failed: ${JSON.stringify(upserted.error)}`)
const id = upserted.data.data.id

const updated = await contacts.PUT('/api/v1/contact/{contact_id}', {
  params: { path: { contact_id: id } },
  body: { last_name: 'Lovelace' },
})
console.log(updated.data?.data.last_name)

// Errors are typed by status: a missing contact is a 404 with a stable code.
const missing = await contacts.GET('/api/v1/contact/{contact_id}', {
  params: { path: { contact_id: '00000000-0000-4000-8000-000000000000' } },
})
if (missing.response.status === 404) console.log(missing.error?.code) // "contact_not_found"

// Search with the filter language, a page at a time.
const found = await contacts.POST('/api/v1/contact/search', {
  body: { filter: { field: 'custom_fields.plan', op: 'eq', value: 'pro' }, limit: 50 },
})
for (const contact of found.data?.data.items ?? []) console.log(contact.email)
