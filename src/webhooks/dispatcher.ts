import { isIP } from 'node:net'
import type { FastifyBaseLogger } from 'fastify'
import { type Kysely, sql } from 'kysely'
import type { Agent, Dispatcher as UndiciDispatcher } from 'undici'
import { dialectOf } from '../db/database.js'
import type { Database } from '../db/schema.js'
import { contactEventJson } from '../events/events.service.js'
import { retryDelayMs } from '../shared/backoff.js'
import { uuidv7 } from '../shared/ids.js'
import {
  DELIVERY_ID_HEADER,
  EVENT_ID_HEADER,
  EVENT_TYPE_HEADER,
  SIGNATURE_HEADER,
  signatureHeader,
} from './signature.js'
import { ForbiddenTargetError, guardedLookup, type TargetPolicy } from './targets.js'
import { onDeliveriesQueued, onEventsAppended } from './wakeup.js'
import {
  type ClaimedDelivery,
  claimDueDeliveries,
  completeDeliveries,
  insertAttempts,
  queueFromLog,
} from './webhooks.repository.js'

export interface DispatcherOptions {
  policy: TargetPolicy
  /** Deliveries in flight at once. */
  concurrency: number
  pollIntervalMs: number
  /** Longest wait for an endpoint's answer. */
  timeoutMs: number
  retryBaseMs: number
  retryMaxDelayMs: number
  /** How long after its event a delivery is retried before it is given up. */
  retryWindowMs: number
  /** How long a webhook may fail every delivery before it is disabled. */
  disableAfterMs: number
}

export interface Dispatcher {
  /** Stops claiming, waits for the deliveries in flight and records them. */
  stop(): Promise<void>
}

interface Outcome {
  delivery: ClaimedDelivery
  attemptedAt: Date
  statusCode: number | null
  error: string | null
  durationMs: number
}

const USER_AGENT = 'contacts-webhooks/1'
/**
 * How long wake-ups are gathered before a claim. Each claim is a transaction (on SQLite the
 * queueing from the log, the outcomes, the claim, the lease and a COMMIT on the one writer), so the
 * more deliveries one carries, the less each costs: with 25 ms instead of 10, a PUT owed a delivery
 * went from 0.55-0.58 of a plain PUT's rate to 0.64-0.71 on SQLite (alternated runs, the dispatcher
 * keeping up in both), and PostgreSQL's ratio did not move. A delivery leaves at most that much later,
 * and a dispatcher sends at most `concurrency` deliveries a claim: 2,560 a second with 64.
 */
const CLAIM_DELAY_MS = 25
const MAX_OUTCOMES_PER_TRANSACTION = 500

/** The agent's own timeouts (connect, headers, body) bound every attempt. */
const TIMEOUT_CODES = new Set(['UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])
const isTimeout = (error: unknown) => TIMEOUT_CODES.has(String((error as { code?: string }).code))

/** An answer's body is read this far (so that its connection can be reused), then cut off. */
const MAX_ANSWER_BODY_BYTES = 128 * 1024

/**
 * One request through undici's dispatch interface, which the request API is built on: only the
 * status code and a redirect's location are kept and the answer's body is dropped as it arrives,
 * without the response stream the request API makes for every call. A body longer than
 * MAX_ANSWER_BODY_BYTES (or endless) ends the connection; the status already counts.
 */
function answerTo(
  agent: Agent,
  options: UndiciDispatcher.DispatchOptions,
): Promise<{ statusCode: number; location: string | undefined }> {
  return new Promise((resolve, reject) => {
    let statusCode = 0
    let location: string | undefined
    let bodyBytes = 0
    let abort: (error?: Error) => void = () => {}
    agent.dispatch(options, {
      onConnect(abortRequest) {
        abort = abortRequest
      },
      onHeaders(status, rawHeaders) {
        // 1xx answers come before the final one.
        if (status < 200) return true
        statusCode = status
        if (status >= 300 && status < 400) {
          for (let i = 0; i + 1 < rawHeaders.length; i += 2) {
            if (String(rawHeaders[i]).toLowerCase() === 'location') location = String(rawHeaders[i + 1])
          }
        }
        return true
      },
      onData(chunk) {
        bodyBytes += chunk.length
        if (bodyBytes <= MAX_ANSWER_BODY_BYTES) return true
        resolve({ statusCode, location })
        abort()
        return false
      },
      onComplete: () => resolve({ statusCode, location }),
      onError: reject,
    })
  })
}

/** Sends one body; resolves with the status code or the reason there was none. Never rejects. */
async function post(
  agent: Agent,
  endpoint: string,
  body: string,
  headers: Record<string, string>,
  options: { timeoutMs: number; policy: TargetPolicy },
): Promise<{ statusCode: number | null; error: string | null }> {
  let url: URL
  try {
    url = new URL(endpoint)
  } catch {
    return { statusCode: null, error: 'the endpoint is not a valid URL' }
  }
  const host = url.hostname.replace(/^\[|\]$/g, '')
  // A literal address skips DNS, where the guard sits, so it is judged here.
  if (isIP(host) !== 0 && !options.policy.allows(host)) {
    return { statusCode: null, error: `${host} is an internal address` }
  }
  try {
    const { statusCode, location } = await answerTo(agent, {
      origin: url.origin,
      path: `${url.pathname}${url.search}`,
      method: 'POST',
      headers,
      body,
    })
    if (statusCode >= 200 && statusCode < 300) return { statusCode, error: null }
    return {
      statusCode,
      error:
        statusCode >= 300 && statusCode < 400
          ? `redirect to ${location ?? '(no location)'} not followed`
          : `HTTP ${statusCode}`,
    }
  } catch (error) {
    if (isTimeout(error)) return { statusCode: null, error: `no answer within ${options.timeoutMs} ms` }
    const cause = (error as { cause?: unknown }).cause
    const reason =
      error instanceof ForbiddenTargetError ? error : cause instanceof ForbiddenTargetError ? cause : error
    return { statusCode: null, error: (reason as Error).message || 'connection failed' }
  }
}

/**
 * Delivers queued events to webhooks, at least once and in order per contact and webhook. Claims
 * due deliveries (leased, so that several processes can run dispatchers on one PostgreSQL),
 * sends each one signed, and records outcomes in batches: a success completes the delivery, a
 * failure schedules a retry with backoff until the retry window has passed, and a webhook whose
 * deliveries have all failed for `disableAfterMs` is disabled with the reason.
 */
export function startDispatcher(
  db: Kysely<Database>,
  options: DispatcherOptions,
  log: FastifyBaseLogger,
  /** Told of every recorded attempt (the metrics). */
  onAttempt?: (outcome: AttemptOutcome) => void,
): Dispatcher {
  // undici rather than node:http: a delivery is sent while the API serves requests on the same
  // thread, and undici's client costs about half as much CPU per request. It is loaded by the
  // first delivery: a server without webhooks is spared its 3.5 MB of heap.
  let agent: Promise<Agent> | null = null
  const agentForDeliveries = () => {
    agent ??= import('undici').then(
      ({ Agent }) =>
        new Agent({
          connections: options.concurrency,
          connect: { lookup: guardedLookup(options.policy) as never, timeout: options.timeoutMs },
          headersTimeout: options.timeoutMs,
          bodyTimeout: options.timeoutMs,
        }),
    )
    return agent
  }
  // A lease outlasts the longest attempt (connecting, waiting for the answer's head, reading its
  // body: each bounded by the timeout), so nobody else takes a delivery while it is in flight.
  const leaseMs = options.timeoutMs * 3 + 1_000
  let stopped = false
  let inFlight = 0
  let pumping = false
  /** The organization whose deliveries were claimed last; the next claim starts after it. */
  let lastOrg: string | null = null
  let pumpAgain = false
  const outcomes: Outcome[] = []
  const inFlightDone = new Set<Promise<void>>()

  // Wake-ups (one per write, one per finished delivery) are coalesced into one claim a few
  // milliseconds later, so that a busy dispatcher claims deliveries by the dozen, not one by one.
  let pumpTimer: NodeJS.Timeout | null = null
  const schedulePump = () => {
    if (stopped || pumpTimer) return
    pumpTimer = setTimeout(() => {
      pumpTimer = null
      void pump()
    }, CLAIM_DELAY_MS)
    pumpTimer.unref()
  }
  const pollTimer = setInterval(() => void pump(), options.pollIntervalMs)
  pollTimer.unref()
  const sqlite = dialectOf(db) === 'sqlite'
  /** Whether the last look found an enabled webhook; while none is, appended events need no look. */
  let anyEnabled = true
  const unsubscribe = onDeliveriesQueued(schedulePump)
  const unsubscribeAppended = sqlite
    ? onEventsAppended(() => {
        if (anyEnabled) schedulePump()
      })
    : () => {}

  async function pump(): Promise<void> {
    if (stopped) return
    if (pumping) {
      pumpAgain = true
      return
    }
    pumping = true
    try {
      do {
        pumpAgain = false
        const free = options.concurrency - inFlight
        const finished = outcomes.splice(0, MAX_OUTCOMES_PER_TRANSACTION)
        if (free <= 0 && finished.length === 0) break
        // One transaction records what finished and claims what is due: half the commits of
        // doing each on its own.
        let counted: AttemptOutcome[] = []
        const claimed = await db.transaction().execute(async (trx) => {
          // First, so that a webhook disabled below has been sent every event written before.
          if (sqlite) anyEnabled = await queueFromLog(trx)
          if (finished.length > 0) counted = await recordOutcomes(trx, finished, options)
          if (free <= 0) return []
          const now = new Date()
          return claimDueDeliveries(
            trx,
            now.toISOString(),
            new Date(now.getTime() + leaseMs).toISOString(),
            uuidv7(),
            free,
            lastOrg,
          )
        })
        for (const outcome of counted) onAttempt?.(outcome)
        // Only a full claim leaves deliveries behind, where fairness between organizations
        // matters: the next claim then starts after the last one served. Otherwise it starts
        // at the beginning, in one query.
        lastOrg = claimed.length === free ? (claimed.at(-1)?.org_id ?? null) : null
        startDeliveries(claimed)
        if (claimed.length === free || outcomes.length > 0) pumpAgain = true
      } while (pumpAgain && !stopped)
    } catch (err) {
      // Outcomes not recorded are not lost: their leases run out and the deliveries are sent
      // again (at least once).
      log.error({ err }, 'webhook dispatcher could not record outcomes or claim deliveries')
    } finally {
      pumping = false
    }
  }

  function startDeliveries(claimed: ClaimedDelivery[]) {
    for (const delivery of claimed) {
      const { event } = delivery
      inFlight += 1
      const done = send(delivery, contactEventJson(event), event.id, event.type).finally(() => {
        inFlight -= 1
        inFlightDone.delete(done)
        schedulePump()
      })
      inFlightDone.add(done)
    }
  }

  async function send(delivery: ClaimedDelivery, body: string, eventId: string, eventType: string) {
    const client = await agentForDeliveries()
    const attemptedAt = new Date()
    const started = performance.now()
    const result = await post(
      client,
      delivery.endpoint,
      body,
      {
        'content-type': 'application/json',
        'user-agent': USER_AGENT,
        [SIGNATURE_HEADER]: signatureHeader(delivery.secret, body, Math.floor(attemptedAt.getTime() / 1000)),
        [EVENT_ID_HEADER]: eventId,
        [EVENT_TYPE_HEADER]: eventType,
        [DELIVERY_ID_HEADER]: delivery.id,
      },
      { timeoutMs: options.timeoutMs, policy: options.policy },
    )
    outcomes.push({ delivery, attemptedAt, ...result, durationMs: Math.round(performance.now() - started) })
  }

  void pump()
  return {
    async stop() {
      stopped = true
      clearInterval(pollTimer)
      if (pumpTimer) clearTimeout(pumpTimer)
      unsubscribe()
      unsubscribeAppended()
      await Promise.allSettled([...inFlightDone])
      while (pumping) await new Promise((resolve) => setTimeout(resolve, 5))
      while (outcomes.length > 0) {
        const finished = outcomes.splice(0, MAX_OUTCOMES_PER_TRANSACTION)
        await db
          .transaction()
          .execute((trx) => recordOutcomes(trx, finished, options))
          .then((counted) => {
            for (const outcome of counted) onAttempt?.(outcome)
          })
          .catch((err) => log.error({ err }, 'webhook dispatcher could not record outcomes'))
      }
      await (await agent)?.close()
    },
  }
}

const SUCCEEDED = (statusCode: number | null) => statusCode !== null && statusCode >= 200 && statusCode < 300

/** Records a batch of attempts and what follows from them, inside the caller's transaction. */
export type AttemptOutcome = 'succeeded' | 'failed' | 'given_up'

async function recordOutcomes(
  trx: Kysely<Database>,
  batch: readonly Outcome[],
  options: DispatcherOptions,
): Promise<AttemptOutcome[]> {
  const counted: AttemptOutcome[] = batch.filter((o) => SUCCEEDED(o.statusCode)).map(() => 'succeeded')
  const now = new Date()
  const nowIso = now.toISOString()
  {
    await insertAttempts(
      trx,
      batch.map((outcome) => ({
        org_id: outcome.delivery.org_id,
        delivery_id: outcome.delivery.id,
        attempt: outcome.delivery.attempts + 1,
        webhook_id: outcome.delivery.webhook_id,
        attempted_at: outcome.attemptedAt.toISOString(),
        status_code: outcome.statusCode,
        error: outcome.error,
        duration_ms: outcome.durationMs,
      })),
    )
    await completeDeliveries(
      trx,
      batch
        .filter((o) => SUCCEEDED(o.statusCode))
        .map(({ delivery, statusCode }) => ({
          org_id: delivery.org_id,
          id: delivery.id,
          lease_token: delivery.lease_token,
          last_status_code: statusCode as number,
        })),
      nowIso,
    )
    const healthy = new Map<string, Set<string>>()
    // Only webhooks that were failing when their delivery was claimed need their clock reset.
    for (const outcome of batch.filter((o) => SUCCEEDED(o.statusCode) && o.delivery.failing)) {
      const ids = healthy.get(outcome.delivery.org_id) ?? new Set<string>()
      ids.add(outcome.delivery.webhook_id)
      healthy.set(outcome.delivery.org_id, ids)
    }
    for (const [orgId, webhookIds] of healthy) {
      await trx
        .updateTable('webhooks')
        .set({ failing_since: null })
        .where('org_id', '=', orgId)
        .where('id', 'in', [...webhookIds])
        .where('failing_since', 'is not', null)
        .execute()
    }

    for (const outcome of batch.filter((o) => !SUCCEEDED(o.statusCode))) {
      const { delivery } = outcome
      const attempts = delivery.attempts + 1
      const giveUp = now.getTime() >= new Date(delivery.created_at).getTime() + options.retryWindowMs
      counted.push(giveUp ? 'given_up' : 'failed')
      const next = new Date(
        now.getTime() + retryDelayMs(attempts, options.retryBaseMs, options.retryMaxDelayMs),
      ).toISOString()
      await trx
        .updateTable('webhook_deliveries')
        .set({
          status: giveUp ? 'failed' : 'pending',
          attempts,
          last_status_code: outcome.statusCode,
          last_error: outcome.error,
          next_attempt_at: giveUp ? nowIso : next,
          completed_at: giveUp ? nowIso : null,
          lease_until: null,
          lease_token: null,
        })
        .where('org_id', '=', delivery.org_id)
        .where('id', '=', delivery.id)
        .where('lease_token', '=', delivery.lease_token)
        .execute()
      const webhook = await trx
        .updateTable('webhooks')
        .set({ failing_since: sql<string>`coalesce(failing_since, ${nowIso})` })
        .where('org_id', '=', delivery.org_id)
        .where('id', '=', delivery.webhook_id)
        .returning(['failing_since', 'enabled'])
        .executeTakeFirst()
      if (
        webhook &&
        webhook.enabled === 1 &&
        webhook.failing_since !== null &&
        now.getTime() - new Date(webhook.failing_since).getTime() >= options.disableAfterMs
      ) {
        const hours = Math.round((options.disableAfterMs / 3_600_000) * 10) / 10
        await trx
          .updateTable('webhooks')
          .set({
            enabled: 0,
            disabled_at: nowIso,
            disabled_reason: `Disabled after every delivery failed for ${hours} hours (since ${new Date(webhook.failing_since).toISOString()}); the last attempt: ${outcome.error ?? 'no answer'}. Fix the endpoint, then enable the webhook again; pending deliveries resume.`,
          })
          .where('org_id', '=', delivery.org_id)
          .where('id', '=', delivery.webhook_id)
          .execute()
      }
    }
  }
  return counted
}
