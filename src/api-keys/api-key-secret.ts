import { hash, randomBytes, timingSafeEqual } from 'node:crypto'

/** `in-` followed by 43 characters of base64url: 32 random bytes, as the original issues them. */
export const API_KEY_PATTERN = /^in-[A-Za-z0-9_-]{43}$/
const PREFIX_LENGTH = 10

export function generateApiKey(): { key: string; prefix: string; hash: string } {
  const key = `in-${randomBytes(32).toString('base64url')}`
  return { key, prefix: key.slice(0, PREFIX_LENGTH), hash: hashApiKey(key) }
}

/**
 * A key carries 256 random bits, so a fast hash cannot be brute-forced and a slow one would only
 * tax every request. Only the hash is stored; the key itself exists in the creator's response.
 */
export function hashApiKey(key: string): string {
  // One call, without a Hash object: about 0.3 µs against 0.9 for createHash on every request.
  return hash('sha256', key, 'hex')
}

export function hashesMatch(a: string, b: string): boolean {
  const left = Buffer.from(a, 'hex')
  const right = Buffer.from(b, 'hex')
  return left.length === right.length && timingSafeEqual(left, right)
}
