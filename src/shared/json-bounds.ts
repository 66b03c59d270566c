import { ValidationFailedError } from '../errors.js'

export const MAX_JSON_DEPTH = 8
export const MAX_JSON_NODES = 2_000

/**
 * JSON Schema bounds the number of keys at one level but not nesting or total size, and a
 * client-supplied object is stored and re-served for ever, so each is walked once on the way in.
 */
export function assertJsonBounded(value: unknown, loc: (string | number)[]): void {
  let nodes = 0
  const walk = (node: unknown, depth: number): void => {
    nodes += 1
    if (nodes > MAX_JSON_NODES) {
      throw new ValidationFailedError([
        { loc, msg: `Object has more than ${MAX_JSON_NODES} values in total`, type: 'too_long' },
      ])
    }
    if (node === null || typeof node !== 'object') return
    if (depth > MAX_JSON_DEPTH) {
      throw new ValidationFailedError([
        { loc, msg: `Object is nested more than ${MAX_JSON_DEPTH} levels deep`, type: 'too_deep' },
      ])
    }
    for (const child of Array.isArray(node) ? node : Object.values(node)) walk(child, depth + 1)
  }
  walk(value, 1)
}

/** Deeper than any body a route accepts (a filter of 8 levels is about 20 JSON levels). */
export const MAX_BODY_DEPTH = 32

/**
 * Refuses a request body nested deeper than any route accepts, walking it without recursion.
 * Everything that later reads a body recursively (the validator, hashing for idempotency,
 * merge patches) can then rely on a bounded depth instead of running out of stack.
 */
export function assertBodyNesting(body: unknown): void {
  const pending: [unknown, number][] = [[body, 1]]
  while (pending.length > 0) {
    const [node, depth] = pending.pop() as [unknown, number]
    if (node === null || typeof node !== 'object') continue
    if (depth > MAX_BODY_DEPTH) {
      throw new ValidationFailedError([
        {
          loc: ['body'],
          msg: `The body is nested more than ${MAX_BODY_DEPTH} levels deep`,
          type: 'too_deep',
        },
      ])
    }
    for (const child of Array.isArray(node) ? node : Object.values(node)) pending.push([child, depth + 1])
  }
}

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g
/** A JSON text can carry a lone surrogate only as an escape (UTF-8 cannot encode one). */
const SURROGATE_ESCAPE = /\\u[dD][89a-fA-F]/

/**
 * A parsed JSON body with every lone UTF-16 surrogate (`"\ud800"` alone, which is not Unicode
 * text) replaced by U+FFFD, the replacement character, in values and keys. Left as they are, such
 * strings were stored in one form by SQLite, in another by PostgreSQL as text, and refused by
 * PostgreSQL inside JSON columns (a 500). Only a body whose text holds such an escape is walked.
 */
export function withoutLoneSurrogates(text: string, value: unknown): unknown {
  if (!SURROGATE_ESCAPE.test(text)) return value
  const clean = (node: unknown, depth: number): unknown => {
    if (typeof node === 'string') return node.replace(LONE_SURROGATE, '\ufffd')
    // A body nested deeper than any route accepts is refused whole (assertBodyNesting) after
    // parsing; walking all of it here could exhaust the stack first.
    if (node === null || typeof node !== 'object' || depth > MAX_BODY_DEPTH) return node
    if (Array.isArray(node)) return node.map((child) => clean(child, depth + 1))
    return Object.fromEntries(
      Object.entries(node).map(([key, child]) => [clean(key, depth), clean(child, depth + 1)]),
    )
  }
  return clean(value, 1)
}
