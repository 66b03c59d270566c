/**
 * Reduces a phone number to `+` and its digits, the E.164 form the original stores in
 * `channels.telephone`: `+1 (650) 111-1234`, `0016501111234` and `16501111234` (the original's
 * own format, country code without `+`) all become `+16501111234`. Returns null for text that
 * cannot be a phone number (E.164 allows at most 15 digits).
 */
export function normalizePhone(raw: string): string | null {
  const trimmed = raw.trim()
  if (!/^\+?[\d\s().\-/]+$/.test(trimmed)) return null
  let digits = trimmed.replace(/\D/g, '')
  if (!trimmed.startsWith('+') && digits.startsWith('00')) digits = digits.slice(2)
  if (digits.length < 4 || digits.length > 15) return null
  return `+${digits}`
}

/** The phone a contact is matched on: its telephone channel, else its WhatsApp number. */
export function phoneOfChannels(channels: Record<string, unknown>): string | null {
  for (const channel of ['telephone', 'whatsapp']) {
    const value = channels[channel]
    if (typeof value === 'string') {
      const phone = normalizePhone(value)
      if (phone) return phone
    }
  }
  return null
}
