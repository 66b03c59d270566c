import { createHmac, randomBytes } from 'node:crypto'

/** The headers of a delivery; documented in the README with a verification snippet. */
export const SIGNATURE_HEADER = 'x-contacts-signature'
export const EVENT_ID_HEADER = 'x-contacts-event-id'
export const EVENT_TYPE_HEADER = 'x-contacts-event'
export const DELIVERY_ID_HEADER = 'x-contacts-delivery-id'

export const newWebhookSecret = () => `whsec_${randomBytes(32).toString('base64url')}`

/** The last characters of a secret, enough to tell secrets apart and useless to an attacker. */
export const secretHint = (secret: string) => `whsec_…${secret.slice(-4)}`

/**
 * `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with the secret>`: the timestamp
 * is signed with the body, so a captured delivery cannot be replayed later with a fresh time.
 */
export function signatureHeader(secret: string, body: string, unixSeconds: number): string {
  const digest = createHmac('sha256', secret).update(`${unixSeconds}.${body}`).digest('hex')
  return `t=${unixSeconds},v1=${digest}`
}
