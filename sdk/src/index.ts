import createClient, { type ClientOptions } from 'openapi-fetch'
import type { components, paths } from './schema.js'

export type { components, paths }

/** The error body of every non-422 failure: a message and a stable `code` (see docs/ERRORS.md). */
export type ApiError = components['schemas']['ErrorResponse']
/** A 422: every problem with the request, each with `loc`, `msg` and `type`. */
export type ValidationError = components['schemas']['HTTPValidationError']

type JsonOf<T> = T extends { content: { 'application/json': infer Body } } ? Body : never
/** A contact, as the API returns it. */
export type Contact = JsonOf<paths['/api/v1/contact/{contact_id}']['get']['responses'][200]>['data']
/** The body of `PUT /contact/{contact_id}` (every field optional). */
export type ContactUpdate = NonNullable<
  paths['/api/v1/contact/{contact_id}']['put']['requestBody']
>['content']['application/json']
/** An import job, with its progress. */
export type ImportJob = JsonOf<paths['/api/v1/contact/import/{job_id}']['get']['responses'][200]>['data']

export interface ContactsClientOptions extends Omit<ClientOptions, 'baseUrl'> {
  /** Where the service runs, for example `https://contacts.example.com`. */
  baseUrl: string
  /** An API key (`in-…`), sent as the X-API-Key header. */
  apiKey: string
}

/**
 * A client for every route of the Contacts API, typed from the OpenAPI document the service
 * serves: paths, parameters, bodies and answers (errors included) are checked by the compiler.
 * Each call resolves to `{ data }` on success or `{ error }` (typed by status) otherwise.
 */
export function createContactsClient({ baseUrl, apiKey, ...options }: ContactsClientOptions) {
  const client = createClient<paths>({ ...options, baseUrl: baseUrl.replace(/\/+$/, '') })
  client.use({
    onRequest({ request }) {
      request.headers.set('x-api-key', apiKey)
      return request
    },
  })
  return client
}

export type ContactsClient = ReturnType<typeof createContactsClient>
