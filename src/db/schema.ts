import type { ColumnType, Insertable, Selectable, Updateable } from 'kysely'

/**
 * Date-times are written as ISO strings on both backends. PostgreSQL hands them back as Date
 * (timestamptz), SQLite as the string it stored; the row mappers smooth that over.
 */
export type Timestamp = ColumnType<Date | string, string, string>
/** JSON objects are written as serialized text; PostgreSQL (jsonb) returns them parsed. */
export type JsonObjectColumn = ColumnType<Record<string, unknown> | string, string, string>

export type ApiKeyRole = 'full_access' | 'read_only'
export type CustomFieldType = 'string' | 'number'

export interface OrganizationTable {
  id: string
  name: string
  created_at: Timestamp
}

export interface ApiKeyTable {
  org_id: string
  id: string
  name: string
  description: string | null
  role: ApiKeyRole
  prefix: string
  key_hash: string
  created_at: Timestamp
  last_used_at: Timestamp | null
  revoked_at: Timestamp | null
  /** The person who made the key in the Settings page; null for keys made with the CLI. */
  created_by_user_id: string | null
}

export interface ContactTable {
  org_id: string
  id: string
  first_name: string | null
  last_name: string | null
  email: string | null
  /** lower-cased email, computed in code so both backends agree on what "the same email" is. */
  email_normalized: string | null
  /** Folded copies of the fields the `q` search reads (see contacts/search-document.ts). */
  first_name_folded: ColumnType<string | null, string | null | undefined, string | null>
  last_name_folded: ColumnType<string | null, string | null | undefined, string | null>
  channels_folded: ColumnType<string | null, string | null | undefined, string | null>
  external_id: string | null
  channels: JsonObjectColumn
  user_attributes: JsonObjectColumn
  custom_fields: JsonObjectColumn
  last_seen: Timestamp | null
  last_sent: Timestamp | null
  first_assistant_id: string | null
  last_assistant_id: string | null
  first_widget_id: string | null
  last_widget_id: string | null
  created_at: Timestamp
  updated_at: Timestamp
  /** Set while the contact is in the trash. */
  deleted_at: Timestamp | null
  /** JSON list of the identities the contact held when it was trashed. */
  trashed_identities: string | null
  /** Bumped by every write. */
  version: ColumnType<number, number | undefined, number>
}

export type IdentityKind = 'email' | 'phone' | 'external_id'

export interface ContactIdentityTable {
  org_id: string
  kind: IdentityKind
  value: string
  contact_id: string
  origin: 'field' | 'merged'
}

/**
 * Live contacts per organization: the organization's count is the sum of its rows (migration 016
 * says why there can be several).
 */
export interface ContactCountTable {
  org_id: string
  slot: ColumnType<number, number | bigint, never>
  live: ColumnType<number | string | bigint, number, never>
}

export interface ContactMergeTable {
  org_id: string
  merged_id: string
  survivor_id: string
  merged_at: Timestamp
}

export interface CustomFieldTable {
  org_id: string
  id: string
  custom_field_name: string
  custom_field_type: CustomFieldType
  created_at: Timestamp
}

export type MembershipRole = 'owner' | 'admin' | 'member'

export interface UserTable {
  id: string
  email: string
  email_normalized: string
  name: string
  password_hash: string
  created_at: Timestamp
}

export interface MembershipTable {
  org_id: string
  user_id: string
  role: MembershipRole
  created_at: Timestamp
}

export interface SessionTable {
  token_hash: string
  user_id: string
  org_id: string | null
  csrf_token: string
  created_at: Timestamp
  expires_at: Timestamp
}

/** Secrets the service makes for itself (not tenant data), shared by every process. */
export interface ServiceSecretTable {
  name: string
  value: string
}

export interface IdempotencyKeyTable {
  org_id: string
  key: string
  request_hash: string
  status_code: number | null
  response_body: string | null
  created_at: Timestamp
}

export type ContactEventType =
  | 'contact.created'
  | 'contact.updated'
  | 'contact.deleted'
  | 'contact.restored'
  | 'contact.merged'
  | 'contact.erased'

export type ActorType = 'api_key' | 'user' | 'system'

/** Integers PostgreSQL hands back as text (bigint) and SQLite as a number. */
export type SequenceColumn = ColumnType<number | string, never, never>

export interface ContactEventTable {
  seq: SequenceColumn
  org_id: string
  id: string
  contact_id: string
  type: ContactEventType
  actor_type: ActorType
  actor_id: string | null
  created_at: Timestamp
  /** JSON text: the event's `data` as delivered, without the contact id and actor. */
  data: string
}

export interface WebhookTable {
  org_id: string
  id: string
  name: string
  endpoint: string
  /** 1 or 0 (an integer on both backends). */
  enabled: number
  /** JSON list of ContactEventType. */
  events: string
  /** JSON list of tracked contact fields: only updates changing one of them are sent; null: every update. */
  fields: string | null
  secret: string
  created_at: Timestamp
  updated_at: Timestamp
  failing_since: Timestamp | null
  disabled_at: Timestamp | null
  disabled_reason: string | null
  /**
   * SQLite only: the seq of the last event looked at for this webhook. There the dispatcher
   * queues deliveries from the event log after the write; on PostgreSQL the writing statement
   * queues them itself and this stays null.
   */
  queued_through_seq: number | string | null
}

export type DeliveryStatus = 'pending' | 'succeeded' | 'failed'

export interface WebhookDeliveryTable {
  org_id: string
  id: string
  webhook_id: string
  event_seq: ColumnType<number | string, number | string, number | string>
  contact_id: string
  status: DeliveryStatus
  attempts: number
  next_attempt_at: Timestamp
  lease_until: Timestamp | null
  lease_token: string | null
  last_status_code: number | null
  last_error: string | null
  created_at: Timestamp
  completed_at: Timestamp | null
  redelivery_of: string | null
}

export interface WebhookDeliveryAttemptTable {
  org_id: string
  delivery_id: string
  attempt: number
  webhook_id: string
  attempted_at: Timestamp
  status_code: number | null
  error: string | null
  duration_ms: number
}

export type ImportJobStatus = 'receiving' | 'queued' | 'running' | 'completed' | 'failed'

export interface ImportJobTable {
  org_id: string
  id: string
  status: ImportJobStatus
  /** 1 or 0: a dry run reports what would happen and writes no contact. */
  dry_run: number
  file_name: string | null
  delimiter: string
  /** JSON object: column header → target field (null to skip the column). */
  mapping: string
  bytes: ColumnType<number | string, number | string, number | string>
  bytes_read: ColumnType<number | string, number | string, number | string>
  /** The last line of the file whose row is accounted for; a resumed job goes on after it. */
  lines_done: number
  created: number
  updated: number
  unchanged: number
  failed: number
  error: string | null
  actor_type: ActorType
  actor_id: string | null
  created_at: Timestamp
  started_at: Timestamp | null
  finished_at: Timestamp | null
  /** The runner holding the job keeps it until lease_until; a crashed runner's job is taken over. */
  lease_until: Timestamp | null
  lease_token: string | null
}

export interface ImportChunkTable {
  org_id: string
  job_id: string
  seq: number
  data: Uint8Array
}

export interface ImportFailureTable {
  org_id: string
  job_id: string
  /** The line of the file where the row starts (the header is line 1). */
  line: number
  /** JSON list of the row's cells; null when the row could not be read as CSV. */
  cells: string | null
  reason: string
}

export interface Database {
  organizations: OrganizationTable
  api_keys: ApiKeyTable
  contacts: ContactTable
  service_secrets: ServiceSecretTable
  contact_custom_fields: CustomFieldTable
  contact_identities: ContactIdentityTable
  contact_merges: ContactMergeTable
  contact_counts: ContactCountTable
  idempotency_keys: IdempotencyKeyTable
  users: UserTable
  memberships: MembershipTable
  sessions: SessionTable
  contact_events: ContactEventTable
  webhooks: WebhookTable
  webhook_deliveries: WebhookDeliveryTable
  webhook_delivery_attempts: WebhookDeliveryAttemptTable
  import_jobs: ImportJobTable
  import_chunks: ImportChunkTable
  import_failures: ImportFailureTable
}

export type OrganizationRow = Selectable<OrganizationTable>
export type InsertableOrganizationRow = Insertable<OrganizationTable>
export type ApiKeyRow = Selectable<ApiKeyTable>
export type InsertableApiKeyRow = Insertable<ApiKeyTable>
export type ContactRow = Selectable<ContactTable>
export type InsertableContactRow = Insertable<ContactTable>
export type UpdateableContactRow = Updateable<ContactTable>
export type CustomFieldRow = Selectable<CustomFieldTable>
export type InsertableCustomFieldRow = Insertable<CustomFieldTable>
export type ContactEventRow = Selectable<ContactEventTable>
export type WebhookRow = Selectable<WebhookTable>
export type WebhookDeliveryRow = Selectable<WebhookDeliveryTable>
export type ImportJobRow = Selectable<ImportJobTable>
