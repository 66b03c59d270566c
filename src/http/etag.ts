/** A precondition from If-Match: any current version ('*'), or one of the versions listed. */
export type VersionCondition = '*' | number[]

/** The ETag of a contact: its version, which every write bumps. */
export const etagOf = (version: number) => `"${version}"`

/**
 * Reads If-Match. Entity tags this service never issued (weak ones included, since a weak
 * comparison is not allowed for If-Match) match nothing, so the write is refused with 412.
 */
export function parseIfMatch(header: string | undefined): VersionCondition | undefined {
  if (header === undefined) return undefined
  if (header.trim() === '*') return '*'
  const versions: number[] = []
  for (const tag of header.split(',')) {
    const match = /^\s*"(\d{1,15})"\s*$/.exec(tag)
    if (match?.[1]) versions.push(Number(match[1]))
  }
  return versions
}
