import { randomBytes } from 'node:crypto'

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

const COUNTER_MAX = 0xfff

/**
 * UUID version 7 (RFC 9562): a millisecond timestamp followed by randomness. Ids created later
 * sort later, so inserts append to the primary-key index instead of scattering across it.
 *
 * Within one millisecond the 12 bits after the version are a counter (RFC 9562 §6.2, method 1),
 * so ids made one after another in this process sort in the order they were made: lists order
 * rows of the same millisecond by id, and "newest first" must hold for them too. The counter
 * starts at a random value below half its range, leaving at least 2,048 ids per millisecond; past
 * that, and when the clock steps back, the timestamp moves on from the last one used instead.
 */
export function createUuidv7Generator(clock: () => number = Date.now): () => string {
  let lastMs = -1
  let counter = 0
  return () => {
    const bytes = sixteenRandomBytes()
    const now = clock()
    if (now > lastMs) {
      lastMs = now
      counter = (((bytes[6] ?? 0) & 0x07) << 8) | (bytes[7] ?? 0)
    } else if (counter < COUNTER_MAX) {
      counter += 1
    } else {
      lastMs += 1
      counter = 0
    }
    bytes.writeUIntBE(lastMs, 0, 6)
    bytes[6] = 0x70 | (counter >> 8)
    bytes[7] = counter & 0xff
    bytes[8] = ((bytes[8] ?? 0) & 0x3f) | 0x80
    const hex = bytes.toString('hex')
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`
  }
}

export const uuidv7 = createUuidv7Generator()

export const UUID_PATTERN = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
export const isUuid = (value: string) => UUID_PATTERN.test(value)
