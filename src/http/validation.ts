import { Ajv, type ErrorObject, type Options } from 'ajv'
import formatsPlugin from 'ajv-formats'
import type { FastifySchemaCompiler } from 'fastify'
import type { ValidationIssue } from '../errors.js'
import { parseDateTime } from '../shared/time.js'

const addFormats = formatsPlugin.default

function createAjv(options: Options) {
  const ajv = new Ajv({
    useDefaults: true,
    removeAdditional: true,
    allErrors: true,
    strict: false,
    ...options,
  })
  addFormats(ajv, ['uuid', 'date', 'time', 'email', 'uri'])
  ajv.addFormat('date-time', { type: 'string', validate: (text: string) => parseDateTime(text) !== null })
  return ajv
}

/**
 * Query strings and path parameters arrive as text and are coerced (`page=2` is an integer);
 * JSON bodies are not, so `{"first_name": 5}` is a 422 as it is in the original, not "5".
 */
const bodyAjv = createAjv({ coerceTypes: false })
const textAjv = createAjv({ coerceTypes: 'array' })

export const validatorCompiler: FastifySchemaCompiler<unknown> = ({ schema, httpPart }) =>
  (httpPart === 'body' ? bodyAjv : textAjv).compile(schema as object)

/** Fastify names the parts of a request as it parses them; FastAPI's `loc` names them so. */
const LOCATION_OF_PART: Record<string, string> = {
  body: 'body',
  querystring: 'query',
  params: 'path',
  headers: 'header',
}

const TYPE_NAMES: Record<string, [type: string, noun: string]> = {
  string: ['string_type', 'a valid string'],
  integer: ['int_parsing', 'a valid integer'],
  number: ['float_parsing', 'a valid number'],
  boolean: ['bool_parsing', 'a valid boolean'],
  object: ['dict_type', 'a valid dictionary'],
  array: ['list_type', 'a valid list'],
}

const FORMAT_NAMES: Record<string, [type: string, noun: string]> = {
  uuid: ['uuid_parsing', 'a valid UUID'],
  'date-time': ['datetime_parsing', 'a valid datetime'],
  date: ['date_parsing', 'a valid date'],
}

function pathSegments(instancePath: string): (string | number)[] {
  if (instancePath === '') return []
  return instancePath
    .split('/')
    .slice(1)
    .map((segment) => segment.replaceAll('~1', '/').replaceAll('~0', '~'))
    .map((segment) => (/^\d+$/.test(segment) ? Number(segment) : segment))
}

/** Ajv's error, told the way FastAPI (pydantic) tells it, so clients written for the original parse it. */
export function issueFromAjv(error: ErrorObject, part: string): ValidationIssue {
  const loc = [LOCATION_OF_PART[part] ?? part, ...pathSegments(error.instancePath)]
  const params = error.params as Record<string, unknown>
  switch (error.keyword) {
    case 'required':
      return { loc: [...loc, String(params.missingProperty)], msg: 'Field required', type: 'missing' }
    case 'type': {
      const expected = [params.type].flat().find((t) => t !== 'null') as string
      const [type, noun] = TYPE_NAMES[expected] ?? ['type_error', `of type ${expected}`]
      return { loc, msg: `Input should be ${noun}`, type }
    }
    case 'format': {
      const [type, noun] = FORMAT_NAMES[String(params.format)] ?? ['value_error', `a valid ${params.format}`]
      return { loc, msg: `Input should be ${noun}`, type }
    }
    case 'maxLength':
      return { loc, msg: `String should have at most ${params.limit} characters`, type: 'string_too_long' }
    case 'minLength':
      return { loc, msg: `String should have at least ${params.limit} characters`, type: 'string_too_short' }
    case 'minimum':
      return {
        loc,
        msg: `Input should be greater than or equal to ${params.limit}`,
        type: 'greater_than_equal',
      }
    case 'maximum':
      return { loc, msg: `Input should be less than or equal to ${params.limit}`, type: 'less_than_equal' }
    case 'minItems':
      return { loc, msg: `List should have at least ${params.limit} items`, type: 'too_short' }
    case 'maxItems':
      return { loc, msg: `List should have at most ${params.limit} items`, type: 'too_long' }
    case 'maxProperties':
      return { loc, msg: `Object should have at most ${params.limit} keys`, type: 'too_long' }
    case 'enum': {
      const allowed = (params.allowedValues as unknown[]).map((v) => `'${v}'`).join(' or ')
      return { loc, msg: `Input should be ${allowed}`, type: 'enum' }
    }
    default:
      return { loc, msg: error.message ?? 'Invalid value', type: 'value_error' }
  }
}

const compiledBodies = new WeakMap<object, ReturnType<typeof bodyAjv.compile>>()

/**
 * Validates data against a route's body schema with the very validator the API uses, for input
 * that arrives another way (the Settings page's forms): one set of rules, one wording of errors.
 */
export function validateBody(schema: object, data: unknown): ValidationIssue[] {
  let validate = compiledBodies.get(schema)
  if (!validate) {
    validate = bodyAjv.compile(schema)
    compiledBodies.set(schema, validate)
  }
  if (validate(data)) return []
  return (validate.errors ?? []).map((error) => issueFromAjv(error, 'body'))
}
