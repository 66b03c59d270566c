import { lookup as dnsLookup, type LookupAddress } from 'node:dns'
import { BlockList, isIP } from 'node:net'

/**
 * Where webhooks may not point: this host, its neighbours and the cloud metadata service are
 * reachable from the server but not from whoever sets up a webhook, so a webhook aimed there
 * would let an API key probe or call them (server-side request forgery).
 */
const INTERNAL_NETWORKS: readonly [string, number, 'ipv4' | 'ipv6'][] = [
  ['0.0.0.0', 8, 'ipv4'], // "this network"
  ['10.0.0.0', 8, 'ipv4'], // private
  ['100.64.0.0', 10, 'ipv4'], // carrier-grade NAT
  ['127.0.0.0', 8, 'ipv4'], // loopback
  ['169.254.0.0', 16, 'ipv4'], // link-local, cloud metadata
  ['172.16.0.0', 12, 'ipv4'], // private
  ['192.0.0.0', 24, 'ipv4'], // protocol assignments
  ['192.168.0.0', 16, 'ipv4'], // private
  ['198.18.0.0', 15, 'ipv4'], // benchmarking
  ['224.0.0.0', 4, 'ipv4'], // multicast
  ['240.0.0.0', 4, 'ipv4'], // reserved, broadcast
  ['::', 128, 'ipv6'], // unspecified
  ['::1', 128, 'ipv6'], // loopback
  ['64:ff9b::', 96, 'ipv6'], // NAT64, may lead to any IPv4 address
  ['fc00::', 7, 'ipv6'], // unique local
  ['fe80::', 10, 'ipv6'], // link-local
  ['ff00::', 8, 'ipv6'], // multicast
]

export class TargetPolicyError extends Error {}

/** Which addresses webhooks may reach: public ones, plus the internal networks the operator allows. */
export interface TargetPolicy {
  allows(address: string): boolean
}

function parseCidr(cidr: string): [string, number, 'ipv4' | 'ipv6'] {
  const [address = '', bits] = cidr.trim().split('/')
  const family = isIP(address)
  if (family === 0) throw new TargetPolicyError(`not an IP network: "${cidr}"`)
  const max = family === 4 ? 32 : 128
  const prefix = bits === undefined ? max : Number(bits)
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max)
    throw new TargetPolicyError(`not an IP network: "${cidr}"`)
  return [address, prefix, family === 4 ? 'ipv4' : 'ipv6']
}

/** An IPv4 address written as IPv6 (::ffff:a.b.c.d) is judged as the IPv4 address it is. */
const unmapped = (address: string) => {
  const match = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  return match?.[1] ?? address
}

/** `allowedNetworks`: comma-separated CIDRs (for example "127.0.0.0/8,10.1.0.0/16") exempted. */
export function targetPolicy(allowedNetworks: string): TargetPolicy {
  const internal = new BlockList()
  for (const [address, prefix, family] of INTERNAL_NETWORKS) internal.addSubnet(address, prefix, family)
  const allowed = new BlockList()
  for (const cidr of allowedNetworks.split(',').filter((part) => part.trim() !== '')) {
    const [address, prefix, family] = parseCidr(cidr)
    allowed.addSubnet(address, prefix, family)
  }
  // Every delivery asks about the address it connects to; the answer for an address never changes.
  const known = new Map<string, boolean>()
  return {
    allows(raw) {
      const cached = known.get(raw)
      if (cached !== undefined) return cached
      const address = unmapped(raw)
      const family = isIP(address) === 4 ? 'ipv4' : 'ipv6'
      const verdict = allowed.check(address, family) || !internal.check(address, family)
      if (known.size >= 10_000) known.clear()
      known.set(raw, verdict)
      return verdict
    },
  }
}

export class ForbiddenTargetError extends Error {}

/**
 * A DNS lookup for outgoing requests that refuses internal addresses, so that the check holds
 * for the address actually connected to (a name that resolved to a public address when the
 * webhook was saved may resolve to an internal one later).
 */
export function guardedLookup(policy: TargetPolicy) {
  return (
    hostname: string,
    options: { all?: boolean; family?: number },
    callback: (error: Error | null, address: string | LookupAddress[], family?: number) => void,
  ) => {
    dnsLookup(hostname, { all: true, family: options.family ?? 0 }, (error, addresses) => {
      if (error) return callback(error, [])
      const refused = addresses.find((entry) => !policy.allows(entry.address))
      if (refused) {
        return callback(
          new ForbiddenTargetError(`${hostname} resolves to ${refused.address}, an internal address`),
          [],
        )
      }
      if (options.all) return callback(null, addresses)
      const [first] = addresses
      if (!first) return callback(new Error(`${hostname} has no address`), [])
      callback(null, first.address, first.family)
    })
  }
}

const resolveAll = (hostname: string) =>
  new Promise<LookupAddress[]>((resolve, reject) =>
    dnsLookup(hostname, { all: true }, (error, addresses) => (error ? reject(error) : resolve(addresses))),
  )

/**
 * Why a webhook may not be sent to this URL, or null if it may: only http(s), no credentials in
 * the URL, and a host whose every address is public or allowed by the operator.
 */
export async function targetProblem(endpoint: string, policy: TargetPolicy): Promise<string | null> {
  let url: URL
  try {
    url = new URL(endpoint)
  } catch {
    return 'Input should be an absolute http or https URL'
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    return 'Only http and https endpoints are supported'
  if (url.username !== '' || url.password !== '')
    return 'The URL may not hold credentials; the signature authenticates deliveries'
  const host = url.hostname.replace(/^\[|\]$/g, '')
  let addresses: string[]
  if (isIP(host) !== 0) addresses = [host]
  else {
    try {
      addresses = (await resolveAll(host)).map((entry) => entry.address)
    } catch {
      return `The host ${host} cannot be resolved`
    }
  }
  const internal = addresses.find((address) => !policy.allows(address))
  if (internal !== undefined) {
    return `The endpoint resolves to ${internal}, an internal address (loopback, private or link-local); the operator can allow such networks with WEBHOOK_ALLOWED_NETWORKS`
  }
  return null
}
