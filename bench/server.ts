/**
 * The server the benchmark drives: the production server (the same start-up, options, plugins,
 * hooks, logger at info, key authentication, rate limits and webhook dispatcher), plus one route
 * that answers fixed JSON through the same server, logger and global hooks, but outside /api/v1
 * and so without its rate limits and key check: the HTTP ceiling every other route is measured
 * against in the same round.
 */
import { loadConfig } from '../src/config.js'
import { startServer } from '../src/serve.js'

const CEILING_BODY = {
  message: 'Data retrieved successfully',
  meta: {},
  data: {
    first_name: 'Ada',
    last_name: 'Lovelace',
    email: 'ada@example.com',
    channels: { telephone: '+15551234567', whatsapp: '+15551234567' },
    user_attributes: { plan: 'pro', source: 'widget' },
    last_seen: '2023-11-07T05:31:56Z',
    last_sent: '2023-11-07T05:31:56Z',
    org_id: '3c90c3cc-0d44-4b50-8888-8dd25736052a',
    first_assistant_id: '3c90c3cc-0d44-4b50-8888-8dd25736052a',
    last_assistant_id: '3c90c3cc-0d44-4b50-8888-8dd25736052a',
    first_widget_id: '3c90c3cc-0d44-4b50-8888-8dd25736052a',
    last_widget_id: '3c90c3cc-0d44-4b50-8888-8dd25736052a',
    custom_fields: {},
    id: '3c90c3cc-0d44-4b50-8888-8dd25736052a',
  },
}

// The production start-up (migrations, webhook dispatcher, trash purge, graceful shutdown), plus the ceiling.
await startServer(loadConfig(), {
  extraRoutes: (app) => app.get('/bench/ceiling', async () => CEILING_BODY),
})
