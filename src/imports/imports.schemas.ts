import { type Static, Type } from '@sinclair/typebox'
import { CursorPage, CursorPagingQuery, DateTime, Nullable, StringEnum, Uuid } from '../shared/schemas.js'

export const IMPORT_TARGET_DESCRIPTION = `Where a column goes: \`first_name\`, \`last_name\`, \`email\`, \`phone_number\`, \`external_id\`, \`last_seen\`, \`last_sent\`, \`first_assistant_id\`, \`last_assistant_id\`, \`first_widget_id\`, \`last_widget_id\`; \`custom_fields.<name>\`, \`user_attributes.<name>\` or \`channels.<name>\` for one key; \`custom_fields\`, \`user_attributes\` or \`channels\` for a cell holding a JSON object (as exports write them); null to skip the column.`

export const ImportQuery = Type.Object({
  mapping: Type.Optional(
    Type.String({
      maxLength: 20_000,
      description: `A JSON object from column header to target. ${IMPORT_TARGET_DESCRIPTION} Columns left out are mapped by their header when it names a target (case and spaces ignored, \`phone\` for \`phone_number\`) and skipped otherwise; the job lists what each column went to.`,
      examples: ['{"E-mail": "email", "Plan": "custom_fields.plan", "Notes": null}'],
    }),
  ),
  delimiter: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 1,
      description: 'The field delimiter (default `,`; for example `;` or a tab).',
    }),
  ),
  dry_run: Type.Optional(
    Type.Boolean({ description: 'Report what the import would do, and write nothing (default false).' }),
  ),
  file_name: Type.Optional(Type.String({ maxLength: 255, description: 'Shown in the job list.' })),
})
export type ImportQuery = Static<typeof ImportQuery>

export const IMPORT_STATUSES = ['receiving', 'queued', 'running', 'completed', 'failed'] as const

export const ImportJob = Type.Object(
  {
    id: Uuid(),
    status: StringEnum(IMPORT_STATUSES, {
      description:
        '`queued` once the file is received, `running` while rows are applied, then `completed`, or `failed` when the file as a whole cannot be imported (see `error`).',
    }),
    dry_run: Type.Boolean(),
    file_name: Nullable(Type.String()),
    delimiter: Type.String(),
    mapping: Type.Record(Type.String(), Nullable(Type.String()), {
      description: 'Each column of the file and the target it goes to (null: skipped).',
    }),
    bytes: Type.Integer({ description: 'Size of the file.' }),
    bytes_read: Type.Integer({
      description: 'How much of the file has been applied; with `bytes`, the progress.',
    }),
    rows_read: Type.Integer({
      description: 'Rows accounted for so far: created + updated + unchanged + failed.',
    }),
    created: Type.Integer(),
    updated: Type.Integer(),
    unchanged: Type.Integer({ description: 'Rows that matched a contact already holding their values.' }),
    failed: Type.Integer({ description: 'Rows not imported; see `GET /contact/import/{job_id}/failures`.' }),
    error: Nullable(
      Type.String({
        description:
          'Why the job failed as a whole; or, while it is `running`, why it waits for the database (a full disk, an outage): it goes on by itself from its last committed batch, and this is null again.',
      }),
    ),
    created_at: DateTime(),
    started_at: Nullable(DateTime()),
    finished_at: Nullable(DateTime()),
  },
  {
    title: 'ImportJob',
    examples: [
      {
        id: '0193a5a2-6c1e-7b7e-9d4a-3f2b1c0d9e8f',
        status: 'completed',
        dry_run: false,
        file_name: 'contacts.csv',
        delimiter: ',',
        mapping: { Email: 'email', 'First name': 'first_name', Plan: 'custom_fields.plan', Notes: null },
        bytes: 1048576,
        bytes_read: 1048576,
        rows_read: 10000,
        created: 9120,
        updated: 750,
        unchanged: 100,
        failed: 30,
        error: null,
        created_at: '2026-11-27T10:15:00.000Z',
        started_at: '2026-11-27T10:15:00.120Z',
        finished_at: '2026-11-27T10:15:02.480Z',
      },
    ],
  },
)
export type ImportJob = Static<typeof ImportJob>

export const ImportJobParams = Type.Object({ job_id: Uuid({ description: 'The import job id.' }) })

export const ImportListQuery = Type.Object(
  { limit: Type.Integer({ minimum: 1, maximum: 1000, default: 20 }), cursor: CursorPagingQuery.cursor },
  { additionalProperties: false },
)
export type ImportListQuery = Static<typeof ImportListQuery>
export const ImportJobPage = CursorPage(ImportJob)
