import { randomBytes } from 'node:crypto'

/**
 * UUID version 7 (RFC 9562): a millisecond timestamp followed by randomness. Ids created later
 * sort later, so inserts append to the primary-key index instead of scattering across it.
 */
/**
 * Randomness is drawn from the system a few kilobytes at a time: asking for 16 bytes per id was
 * a noticeable share of a bulk insert's time.
 */
const POOL_SIZE = 16 * 256
let pool = randomBytes(POOL_SIZE)
let offset = 0

function sixteenRandomBytes(): Buffer {
  if (offset + 16 > POOL_SIZE) {
    pool = randomBytes(POOL_SIZE)
    offset = 0
  }
  const bytes = Buffer.from(pool.subarray(offset, offset + 16))
  offset += 16
  return bytes
}

export function uuidv7(now: number = Date.now()): string {
  const bytes = sixteenRandomBytes()
  bytes.writeUIntBE(now, 0, 6)
  bytes[6] = ((bytes[6] ?? 0) & 0x0f) | 0x70
  bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80
  const hex = bytes.toString('hex')
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
}

export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
export const isUuid = (value: string) => UUID_PATTERN.test(value)
