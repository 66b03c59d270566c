import { UpsertBody } from '../contacts/contacts.schemas.js'
import type { CustomFieldType } from '../db/schema.js'
import type { ValidationIssue } from '../errors.js'

const OBJECT_FIELDS = ['channels', 'user_attributes', 'custom_fields'] as const
type ObjectField = (typeof OBJECT_FIELDS)[number]
/**
 * The fields a column can fill one-to-one: the upsert body's own, but for the objects (filled key
 * by key, or from JSON) and org_id (always the importing organization).
 */
const SCALAR_FIELDS: readonly string[] = Object.keys(UpsertBody.properties).filter(
  (field) => field !== 'org_id' && !(OBJECT_FIELDS as readonly string[]).includes(field),
)
type Target =
  | { kind: 'scalar'; field: string }
  | { kind: 'object'; field: ObjectField }
  | { kind: 'key'; field: ObjectField; key: string }

const isScalar = (name: string): boolean => SCALAR_FIELDS.includes(name)
const isObject = (name: string): name is ObjectField => (OBJECT_FIELDS as readonly string[]).includes(name)

/** A target name (`email`, `custom_fields.plan`, `channels`) read, or null when it names nothing. */
function parseTarget(name: string): Target | null {
  if (isScalar(name)) return { kind: 'scalar', field: name }
  if (isObject(name)) return { kind: 'object', field: name }
  const dot = name.indexOf('.')
  if (dot < 0) return null
  const field = name.slice(0, dot)
  const key = name.slice(dot + 1)
  if (!isObject(field) || key.length === 0 || key.length > 255) return null
  return { kind: 'key', field, key }
}

// Headers people write for the fields, beyond the field names themselves.
const ALIASES: Record<string, string> = {
  phone: 'phone_number',
  telephone: 'phone_number',
  mobile: 'phone_number',
  e_mail: 'email',
  email_address: 'email',
}

/** The target a header names by itself, for columns the mapping leaves out. */
function targetOfHeader(header: string): string | null {
  const trimmed = header.trim()
  if (parseTarget(trimmed)?.kind === 'key') return trimmed
  const name = trimmed.toLowerCase().replace(/[\s-]+/g, '_')
  const aliased = ALIASES[name] ?? name
  return parseTarget(aliased) ? aliased : null
}

export type MappingSpec = Record<string, string | null>

/** Problems with a mapping given by the caller, before any file is read. */
export function mappingIssues(spec: unknown, loc: (string | number)[]): ValidationIssue[] {
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    return [{ loc, msg: 'Input should be a JSON object of column header to target', type: 'value_error' }]
  }
  const issues: ValidationIssue[] = []
  for (const [header, target] of Object.entries(spec)) {
    if (target === null || target === '') continue
    if (typeof target !== 'string' || parseTarget(target) === null) {
      issues.push({
        loc: [...loc, header],
        msg: `Unknown target ${JSON.stringify(target)}`,
        type: 'value_error',
      })
    }
  }
  return issues
}

/**
 * Every column of the file with the target it goes to (null: skipped): the caller's mapping
 * first, then the header itself. Refuses a mapping that names a column the file lacks, a column
 * that appears twice, or two columns for one target.
 */
export function resolveMapping(headers: readonly string[], spec: MappingSpec): MappingSpec | string {
  const resolved: MappingSpec = {}
  const missing = Object.keys(spec).filter((header) => !headers.includes(header))
  if (missing.length > 0) return `The mapping names columns the file does not have: ${missing.join(', ')}`
  const seenTargets = new Map<string, string>()
  for (const header of headers) {
    if (header in resolved) return `The column "${header}" appears twice in the header`
    const given = spec[header]
    const target = given === undefined ? targetOfHeader(header) : given === '' ? null : given
    resolved[header] = target
    if (target === null) continue
    const other = seenTargets.get(target)
    if (other !== undefined) return `The columns "${other}" and "${header}" both go to ${target}`
    seenTargets.set(target, header)
  }
  if (
    !Object.values(resolved).some(
      (target) => target === 'email' || target === 'phone_number' || target === 'external_id',
    )
  ) {
    return 'No column goes to email, phone_number or external_id, so no row could be matched or created'
  }
  return resolved
}

const NUMBER = /^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/

export interface RowPlan {
  columns: { index: number; header: string; target: Target }[]
  customFieldTypes: ReadonlyMap<string, CustomFieldType>
}

export function rowPlan(
  headers: readonly string[],
  mapping: MappingSpec,
  customFieldTypes: ReadonlyMap<string, CustomFieldType>,
): RowPlan {
  const columns: RowPlan['columns'] = []
  for (const [index, header] of headers.entries()) {
    const name = mapping[header]
    const target = name ? parseTarget(name) : null
    if (target) columns.push({ index, header, target })
  }
  // Whole objects first, so that a column for one key refines the object a JSON column gave.
  columns.sort((a, b) => Number(a.target.kind !== 'object') - Number(b.target.kind !== 'object'))
  return { columns, customFieldTypes }
}

/**
 * One row as an upsert body. Empty cells are left out (they neither clear nor overwrite a value);
 * a custom field defined as a number takes the cell as a number. Problems name the column.
 */
export function bodyOfRow(
  plan: RowPlan,
  cells: readonly string[],
): { body: Record<string, unknown> } | { problem: string } {
  const body: Record<string, unknown> = {}
  const problems: string[] = []
  for (const { index, header, target } of plan.columns) {
    const cell = (cells[index] ?? '').trim()
    if (cell === '') continue
    if (target.kind === 'scalar') {
      body[target.field] = cell
    } else if (target.kind === 'object') {
      let value: unknown
      try {
        value = JSON.parse(cell)
      } catch {
        value = undefined
      }
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        problems.push(`${header}: Input should be a JSON object`)
        continue
      }
      body[target.field] = value
    } else {
      body[target.field] ??= {}
      const object = body[target.field] as Record<string, unknown>
      if (target.field === 'custom_fields' && plan.customFieldTypes.get(target.key) === 'number') {
        if (!NUMBER.test(cell)) {
          problems.push(`${header}: Input should be a valid number`)
          continue
        }
        object[target.key] = Number(cell)
      } else object[target.key] = cell
    }
  }
  return problems.length > 0 ? { problem: problems.join('; ') } : { body }
}

/** The header of the column an upsert's problem points at (`loc` inside the item), if any. */
export function headerOfLocation(plan: RowPlan, loc: readonly (string | number)[]): string | null {
  const [field, key] = loc
  const column =
    plan.columns.find(
      ({ target }) => target.kind === 'key' && target.field === field && target.key === key,
    ) ??
    plan.columns.find(({ target }) => target.field === field) ??
    // A phone number read from the channels as the telephone.
    (field === 'phone_number'
      ? plan.columns.find(({ target }) => target.kind !== 'scalar' && target.field === 'channels')
      : undefined)
  return column?.header ?? null
}
