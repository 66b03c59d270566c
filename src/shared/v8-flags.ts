import { setFlagsFromString } from 'node:v8'

/** Whether node's command line sets this V8 flag either way (`--x` or `--no-x`). */
export const givenOnCommandLine = (name: string): boolean =>
  process.execArgv.some((arg) => arg.startsWith(`--${name}`) || arg.startsWith(`--no-${name}`))

/** A V8 flag, set now unless the command line sets it; V8 reads these flags when it next uses them. */
export function setV8FlagUnlessGiven(flag: string): void {
  if (!givenOnCommandLine((flag.split('=')[0] as string).slice(2))) setFlagsFromString(flag)
}
