// Compile-time tests of the SDK's types: each line after a @ts-expect-error must fail to
// type-check (the compiler reports an unused directive otherwise), so `tsc --noEmit`, run by CI,
// fails if the generated types ever loosen.
import { type ContactUpdate, createContactsClient } from '../src/index.js'

const contacts = createContactsClient({ baseUrl: 'http://127.0.0.1:8000', apiKey: 'in-x' })
const contact_id = '00000000-0000-4000-8000-000000000000'

export async function wrongCalls() {
  // A misspelled field in a contact update.
  // @ts-expect-error frist_name is not a field of the contact update
  const misspelled: ContactUpdate = { frist_name: 'Ada' }
  await contacts.PUT('/api/v1/contact/{contact_id}', {
    params: { path: { contact_id } },
    // @ts-expect-error first_name is a string
    body: { first_name: 42 },
  })
  // @ts-expect-error no such path
  await contacts.GET('/api/v1/contacts/{contact_id}', { params: { path: { contact_id } } })
  // @ts-expect-error contact_id is required
  await contacts.GET('/api/v1/contact/{contact_id}', { params: { path: {} } })
  const { data, error } = await contacts.GET('/api/v1/contact/{contact_id}', {
    params: { path: { contact_id } },
  })
  // @ts-expect-error a misspelled field of the answer
  data?.data.frist_name
  // @ts-expect-error errors carry the contract's detail and code, nothing else
  error?.stack
  return misspelled
}
