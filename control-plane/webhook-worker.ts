import type { Logger } from "pino";
import type { Webhook } from "../gen/admission/v1/policy_pb.js";
import { WebhookFormat } from "../gen/admission/v1/policy_pb.js";
import type { Metrics } from "./metrics.js";
import type { PolicySnapshot } from "./policy/policy-snapshot.js";
import type { AuditLog } from "./store/audit-log.js";
import type { ClaimedDelivery, WebhookOutbox } from "./store/webhook-outbox.js";
import { sendWebhook, type WebhookSendResult } from "./webhook-sender.js";
import { webhookSignature } from "./webhook-signing.js";
import { timestampMs } from "./timestamps.js";

export interface WebhookWorkerSettings {
  /** The first retry's delay; each later one doubles (ADMISSION_WEBHOOK_RETRY_MIN_MS). */
  readonly retryMinMs: number;
  /** An event still undelivered this long after it was raised is given up (ADMISSION_WEBHOOK_RETRY_MAX_AGE_MS). */
  readonly retryMaxAgeMs: number;
  /** One attempt's whole duration at most. */
  readonly timeoutMs: number;
  /** How often the outbox is polled for due deliveries (events raised here wake it at once); 0: no timer (tests call runOnce). */
  readonly pollIntervalMs: number;
  readonly allowPrivateNetworks: boolean;
  /** Deliveries attempted at once by this worker. */
  readonly concurrency: number;
}

export interface WebhookWorkerDeps {
  readonly outbox: WebhookOutbox;
  readonly policy: () => PolicySnapshot;
  /** Disables an endpoint that answered 410 Gone (a config change, so every replica stops). */
  readonly disable: (webhook: Webhook, reason: string) => Promise<void>;
  readonly audit: Pick<AuditLog, "record">;
  /** Before each poll: writes events spooled while the database was away, raises those due with time (key.expiring). */
  readonly raiseDue?: () => Promise<unknown>;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly settings: WebhookWorkerSettings;
  readonly clock?: () => number;
  /** [0, 1): the jitter of retry delays. */
  readonly random?: () => number;
}

/** No single retry waits longer than this, however many came before. */
const maxRetryDelayMs = 3_600_000;
/** A claim outlives the attempt's timeout by this much before another worker may take the delivery. */
const claimSlackMs = 30_000;

/**
 * The delivery worker, one per replica: claims due deliveries from the outbox (one
 * worker per delivery at a time), signs and sends each, and records the attempt:
 * 2xx delivered; 410 Gone fails it and disables the endpoint; anything else retries
 * with exponential backoff and jitter until the event is retryMaxAgeMs old.
 */
export class WebhookWorker {
  private readonly clock: () => number;
  private readonly random: () => number;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<number> | undefined;
  private again = false;
  private stopped = false;

  constructor(private readonly deps: WebhookWorkerDeps) {
    this.clock = deps.clock ?? Date.now;
    this.random = deps.random ?? Math.random;
  }

  start(): void {
    this.stopped = false;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  /** Events were committed: look for due deliveries now. */
  kick(): void {
    if (this.stopped) return;
    if (this.running) this.again = true;
    else void this.runOnce().catch(() => undefined);
  }

  /** Attempts every delivery due now (in batches); returns how many were attempted. */
  runOnce(): Promise<number> {
    this.running ??= this.drain().finally(() => {
      this.running = undefined;
      if (this.again && !this.stopped) {
        this.again = false;
        this.kick();
      }
    });
    return this.running;
  }

  private schedule(): void {
    const every = this.deps.settings.pollIntervalMs;
    if (every <= 0 || this.stopped) return;
    this.timer = setTimeout(() => {
      void this.runOnce()
        .catch(() => undefined)
        .finally(() => this.schedule());
    }, every);
    this.timer.unref();
  }

  private async drain(): Promise<number> {
    let attempted = 0;
    try {
      const { concurrency, timeoutMs } = this.deps.settings;
      await this.deps.raiseDue?.().catch((err) => this.deps.logger.warn({ err: String(err) }, "could not raise due webhook events"));
      for (;;) {
        const claimed = await this.deps.outbox.claim(this.clock(), timeoutMs + claimSlackMs, concurrency);
        await Promise.all(claimed.map((d) => this.attempt(d)));
        attempted += claimed.length;
        if (claimed.length < concurrency || this.stopped) break;
      }
      const oldest = await this.deps.outbox.oldestPendingMs();
      this.deps.metrics.webhookOldestPendingSeconds.set(oldest === undefined ? 0 : Math.max(0, (this.clock() - oldest) / 1000));
    } catch (err) {
      this.deps.logger.warn({ err: String(err) }, "webhook outbox unavailable; retrying");
    }
    return attempted;
  }

  private async attempt(delivery: ClaimedDelivery): Promise<void> {
    const webhook = this.deps.policy().webhooks.get(delivery.webhook);
    if (!webhook || webhook.disabled) {
      await this.deps.outbox.abandon(delivery, this.clock());
      this.deps.metrics.webhookDeliveries.inc({ webhook: delivery.webhook, outcome: "dropped" });
      return;
    }
    const atMs = this.clock();
    const body = webhookBody(webhook, delivery);
    const timestampSec = Math.floor(atMs / 1000);
    const result = await sendWebhook(
      {
        url: webhook.url,
        body,
        headers: {
          "webhook-id": delivery.eventId,
          "webhook-timestamp": String(timestampSec),
          "webhook-signature": webhookSignature(signingSecrets(webhook, atMs), delivery.eventId, timestampSec, body),
        },
      },
      { timeoutMs: this.deps.settings.timeoutMs, allowPrivateNetworks: this.deps.settings.allowPrivateNetworks },
    );
    const ok = result.error === "" && result.httpStatus >= 200 && result.httpStatus < 300;
    this.deps.metrics.webhookAttempts.inc({ webhook: webhook.id, result: ok ? "ok" : result.httpStatus > 0 ? "http_error" : "error" });
    const next = this.nextStep(delivery, result, ok);
    const current = await this.deps.outbox.complete(delivery, { atMs, ...result }, next);
    if (!current) return;
    if (next.state !== "pending") this.deps.metrics.webhookDeliveries.inc({ webhook: webhook.id, outcome: next.state });
    if (next.state === "failed") {
      this.deps.logger.warn({ webhook: webhook.id, event: delivery.eventId, type: delivery.type, attempts: delivery.attempt, status: result.httpStatus, error: result.error }, "webhook delivery given up");
    }
    if (result.httpStatus === 410) {
      const reason = `endpoint answered 410 Gone to event ${delivery.eventId}`;
      this.deps.audit.record({ kind: "webhook.disabled", actor: "webhooks", tenant: webhook.tenant, message: `disabled webhook "${webhook.id}": ${reason}`, attributes: { webhook: webhook.id } });
      await this.deps.disable(webhook, reason).catch((err) => this.deps.logger.error({ err: String(err), webhook: webhook.id }, "could not disable webhook"));
    }
  }

  private nextStep(delivery: ClaimedDelivery, result: WebhookSendResult, ok: boolean): { state: "delivered" | "failed" | "pending"; nextAttemptAtMs?: number } {
    if (ok) return { state: "delivered" };
    if (result.httpStatus === 410) return { state: "failed" };
    const nowMs = this.clock();
    const nextAttemptAtMs = nowMs + retryDelayMs(delivery.attempt, this.deps.settings.retryMinMs, this.random());
    if (nextAttemptAtMs - delivery.createdAtMs > this.deps.settings.retryMaxAgeMs) return { state: "failed" };
    return { state: "pending", nextAttemptAtMs };
  }
}

/** The delay before retry `attempt` + 1: retryMinMs doubled per attempt made, capped at an hour, ±25 % jitter. */
export function retryDelayMs(attempt: number, retryMinMs: number, random: number): number {
  const base = Math.min(retryMinMs * 2 ** Math.min(Math.max(attempt - 1, 0), 30), maxRetryDelayMs);
  return Math.round(base * (0.75 + 0.5 * random));
}

/** The secrets that sign a message now: the endpoint's, and while a rotation is under way the one it replaced. */
function signingSecrets(webhook: Webhook, nowMs: number): string[] {
  return webhook.previousSecret && timestampMs(webhook.previousSecretExpiresAt) > nowMs ? [webhook.secret, webhook.previousSecret] : [webhook.secret];
}

/** The body an endpoint receives: Standard Webhooks JSON, or Slack's {"text"}. */
export function webhookBody(webhook: Pick<Webhook, "format">, event: Pick<ClaimedDelivery, "type" | "tenant" | "data" | "createdAtMs">): string {
  if (webhook.format === WebhookFormat.SLACK) return JSON.stringify({ text: slackText(event) });
  return JSON.stringify({ type: event.type, timestamp: new Date(event.createdAtMs).toISOString(), data: event.data });
}

function slackText(event: Pick<ClaimedDelivery, "type" | "tenant" | "data">): string {
  const d = event.data as Record<string, any>;
  const who = event.tenant ? `tenant ${event.tenant}` : "admission control";
  if (event.type === "alert.threshold") {
    const m = d.meter ?? {};
    const subject = d.keyId ? ` key ${d.keyId}` : d.user ? ` user ${d.user}` : "";
    return `:warning: ${who}${subject}: ${m.kind}${m.window ? `/${m.window}` : ""}${m.task ? ` for ${m.task}` : ""} reached ${Math.round(Number(d.threshold) * 100)}% of its limit (${d.used}/${d.limit})`;
  }
  const summary = typeof d.message === "string" ? d.message : JSON.stringify(d).slice(0, 500);
  return `${event.type} (${who}): ${summary}`;
}
