import { parsePhoneNumberFromString } from 'libphonenumber-js'

/**
 * A phone number in E.164 (`+16501111234`), the form the original stores in `channels.telephone`,
 * parsed by libphonenumber: `+1 (650) 111-1234`, `0016501111234` and `16501111234` (the original's
 * own format: country code without `+`) are one number. Without a `+` the digits are read as
 * starting with the country code, since a contact carries no country to read them against.
 * Returns null for text that cannot be a phone number.
 */
export function normalizePhone(raw: string): string | null {
  const known = recentlyNormalized.get(raw)
  if (known !== undefined) return known
  const phone = parsePhone(raw)
  // Bounded: emptied when full rather than tracked entry by entry.
  if (recentlyNormalized.size >= 10_000) recentlyNormalized.clear()
  recentlyNormalized.set(raw, phone)
  return phone
}

/**
 * Parsing is the costly part of a write that carries a phone number (for +1 numbers the library
 * tries each country that shares the code), and one import row reads its number several times:
 * the last results are kept.
 */
const recentlyNormalized = new Map<string, string | null>()

function parsePhone(raw: string): string | null {
  const trimmed = raw.trim()
  if (!/^\+?[\d\s().\-/]+$/.test(trimmed)) return null
  let text = trimmed
  if (!text.startsWith('+')) {
    const digits = text.replace(/\D/g, '')
    text = `+${digits.startsWith('00') ? digits.slice(2) : digits}`
  }
  const parsed = parsePhoneNumberFromString(text)
  return parsed?.isPossible() ? parsed.number : null
}

/** The channels that hold phone numbers in the original's `channels` object. */
export const PHONE_CHANNELS = ['telephone', 'whatsapp'] as const

/** Every phone number a contact's channels hold, normalized and without repeats. */
export function phonesOfChannels(channels: Record<string, unknown>): string[] {
  const phones = new Set<string>()
  for (const channel of PHONE_CHANNELS) {
    const value = channels[channel]
    const phone = typeof value === 'string' ? normalizePhone(value) : null
    if (phone) phones.add(phone)
  }
  return [...phones]
}
