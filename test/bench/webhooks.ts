/** The webhook outbox worker on PostgreSQL against bare signed POSTs to the same receiver. */
import { randomBytes } from "node:crypto";
import { createServer } from "node:http";
import pino from "pino";
import { createMetrics } from "../../control-plane/metrics.js";
import { PolicySnapshot } from "../../control-plane/policy/policy-snapshot.js";
import { openDatabase } from "../../control-plane/store/database.js";
import { insertOutboxEvents, WebhookOutbox, type OutboxEvent } from "../../control-plane/store/webhook-outbox.js";
import { sendWebhook } from "../../control-plane/webhook-sender.js";
import { generateWebhookSecret, webhookSignature } from "../../control-plane/webhook-signing.js";
import { WebhookWorker } from "../../control-plane/webhook-worker.js";
import { testBundle } from "../support/bundles.js";
import { scratchDatabase } from "../support/databases.js";
import type { Bench } from "./report.js";

const concurrency = 8;

/**
 * Deliveries/s: the worker (claim with SKIP LOCKED, sign, POST, record the attempt and the
 * outcome) draining an outbox of N events, against N signed POSTs of the same bodies sent
 * 8 at a time straight to the same receiver (a Node server in this process answering 204).
 */
export async function webhooks(bench: Bench): Promise<void> {
  const section = "Webhooks (outbox on PostgreSQL)";
  if (!bench.databaseUrl) {
    bench.report.add({ section, scenario: "webhook deliveries", skipped: "DATABASE_URL not set" });
    return;
  }
  const n = bench.smoke ? 40 : 2_000;
  const logger = pino({ level: "silent" });
  const receiver = createServer((req, res) => {
    req.resume();
    req.on("end", () => res.writeHead(204).end());
  });
  await new Promise<void>((r) => receiver.listen(0, "127.0.0.1", r));
  const url = `http://127.0.0.1:${(receiver.address() as { port: number }).port}/hook`;
  const secret = generateWebhookSecret();
  const scratch = await scratchDatabase();
  const db = await openDatabase({ url: scratch.url, logger });
  try {
    const snapshot = PolicySnapshot.compile(testBundle({ webhooks: [{ id: "bench", tenant: "acme", url, secret, events: ["alert.threshold"] }] }), 1);
    const run = randomBytes(4).toString("hex");
    const events: OutboxEvent[] = Array.from({ length: n }, (_, i) => ({
      id: `evt_${run}_${i}`, type: "alert.threshold", tenant: "acme", atMs: Date.now(), webhooks: ["bench"],
      data: { tenant: "acme", meter: { kind: "TOKENS", window: "DAY", per: "TENANT", subject: "acme" }, threshold: 0.8, used: 800, limit: 1000 },
    }));

    const bareStarted = performance.now();
    let next = 0;
    await Promise.all(Array.from({ length: concurrency }, async () => {
      while (next < n) {
        const e = events[next++]!;
        const body = JSON.stringify({ type: e.type, timestamp: new Date(e.atMs).toISOString(), data: e.data });
        const ts = Math.floor(Date.now() / 1000);
        const r = await sendWebhook({ url, body, headers: { "webhook-id": e.id, "webhook-timestamp": String(ts), "webhook-signature": webhookSignature([secret], e.id, ts, body) } }, { timeoutMs: 10_000, allowPrivateNetworks: true });
        if (r.httpStatus !== 204) throw new Error(`bare POST: ${r.httpStatus} ${r.error}`);
      }
    }));
    const bare = n / ((performance.now() - bareStarted) / 1000);
    const bareRow = bench.report.add({ section, scenario: `signed POST straight to the receiver, ${concurrency} at a time`, opsPerSec: bare, note: `${n} POSTs` });

    await db.transaction((tx) => insertOutboxEvents(tx, events));
    const worker = new WebhookWorker({
      outbox: new WebhookOutbox(db), policy: () => snapshot, disable: async () => undefined, audit: { record: () => undefined }, metrics: createMetrics(), logger,
      settings: { retryMinMs: 5_000, retryMaxAgeMs: 86_400_000, timeoutMs: 10_000, pollIntervalMs: 0, allowPrivateNetworks: true, concurrency },
    });
    const started = performance.now();
    const attempted = await worker.runOnce();
    const seconds = (performance.now() - started) / 1000;
    if (attempted !== n) throw new Error(`worker attempted ${attempted} of ${n}`);
    const { rows } = await db.query<{ n: string | number }>("SELECT count(*) AS n FROM webhook_deliveries WHERE state = 'delivered'");
    if (Number(rows[0]!.n) !== n) throw new Error(`only ${rows[0]!.n} of ${n} delivered`);
    const rate = n / seconds;
    bench.report.add({
      section, scenario: `outbox worker: claim, sign, POST, record (${concurrency} at a time)`, opsPerSec: rate, baseline: bareRow.scenario, ratio: rate / bare,
      note: `${n} events drained by one worker; each attempt is a claim (batch of ${concurrency}) and its own transaction recording the attempt and outcome`,
    });
  } finally {
    await db.close();
    await scratch.drop();
    receiver.close();
  }
}
