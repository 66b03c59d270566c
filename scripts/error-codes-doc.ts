import { writeFileSync } from 'node:fs'
import { ERROR_CATALOGUE } from '../src/errors.js'

/** Writes docs/ERRORS.md from the catalogue, so the table is never edited by hand. */
const rows = Object.entries(ERROR_CATALOGUE)
  .map(([code, { status, description }]) => `| \`${code}\` | ${status} | ${description} |`)
  .join('\n')

writeFileSync(
  new URL('../../docs/ERRORS.md', import.meta.url),
  `# Error codes

Every error response carries a stable \`code\` beside its \`detail\`. Codes keep their meaning for ever;
a retired code stays listed here, marked retired, and is never reused. This file is generated from
the catalogue in \`src/errors.ts\` by \`npm run docs:errors\` (a test checks that the two agree).

| code | HTTP status | meaning |
| --- | --- | --- |
${rows}

Some errors carry a field that points at the data involved: \`identity_conflict\` has \`existing_id\`
(the contact that holds the email, phone number or external id), \`contact_merged\` has
\`merged_into\` (the contact it was merged into).

Validation errors (\`validation_failed\`) carry a list in \`detail\`, each entry \`{"loc", "msg", "type"}\` as
FastAPI writes them: \`loc\` starts with \`body\`, \`query\`, \`path\` or \`header\`, and \`type\` is one of
pydantic's (\`missing\`, \`string_type\`, \`uuid_parsing\`, \`datetime_parsing\`, \`json_invalid\`,
\`string_too_long\`, …).
`,
)
