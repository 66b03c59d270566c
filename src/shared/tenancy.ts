import { AppError } from '../errors.js'

/**
 * Bodies may name an org_id (the original documents it). Naming the key's own organization, or
 * null, is accepted and changes nothing; naming any other is refused rather than ignored, so a
 * client with a mixed-up key learns of it.
 */
export function assertOwnOrganization(principal: { orgId: string }, orgId: string | null | undefined): void {
  if (orgId !== undefined && orgId !== null && orgId.toLowerCase() !== principal.orgId) {
    throw new AppError('organization_mismatch', 'org_id does not match the organization of the API key')
  }
}
