import { loadConfig } from './config.js'
import { startServer } from './serve.js'

try {
  await startServer(loadConfig())
} catch (error) {
  process.stderr.write(`contacts: ${error instanceof Error ? error.message : String(error)}\n`)
  process.exit(1)
}
