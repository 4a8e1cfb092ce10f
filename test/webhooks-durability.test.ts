import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { generateWebhookSecret } from "../control-plane/webhook-signing.js";
import { testBundle } from "./support/bundles.js";
import { admin } from "./support/control-plane.js";
import { scratchDatabase } from "./support/databases.js";
import { freePort } from "./support/free-port.js";
import { metricValue } from "./support/metric-value.js";
import { startReplica, type Replica } from "./support/replicas.js";
import { missingService } from "./support/services.js";
import { startWebhookReceiver, type WebhookReceiver } from "./support/webhook-receiver.js";

const skip = missingService("PostgreSQL", "DATABASE_URL");
const users = Array.from({ length: 12 }, (_, i) => `u${i}`);
const keySecret = (user: string) => `durable-webhook-key-${user}-0123456789abcdef`;

/** Each user may use 1000 tokens a day (SOFT): an Admit of 800 raises that user's 80 % alert. */
function bundle(url: string, secret: string) {
  return testBundle({
    plans: [{
      code: "PRO", features: ["DRAFTING"], taskAccess: [{ task: "DRAFT", modelClasses: ["PRO_M"] }],
      limits: [{ kind: "TOKENS", window: "DAY", per: "USER", value: 1000 }],
    }],
    tenants: [{ id: "acme", atiToken: "ati-1", status: "ACTIVE", mode: "SOFT" }],
    users: users.map((id) => ({ id, tenant: "acme" })),
    apiKeys: users.map((id) => ({ id: `k-${id}`, tenant: "acme", user: id, secret: keySecret(id) })),
    webhooks: [{ id: "acme-hook", tenant: "acme", url, secret, events: ["alert.threshold"] }],
  });
}

describe("webhooks on PostgreSQL control-plane processes", { skip }, () => {
  let db: { url: string; drop(): Promise<void> };
  let dir: string;
  const started: Replica[] = [];
  const receivers: WebhookReceiver[] = [];

  before(async () => {
    db = await scratchDatabase();
    dir = mkdtempSync(join(tmpdir(), "adm-webhooks-"));
  });

  after(async () => {
    await Promise.all(started.map((r) => r.stop("SIGKILL").catch(() => undefined)));
    await Promise.all(receivers.map((r) => r.stop()));
    await db?.drop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** A replica on the scratch database with in-process counters: nothing inherited from the test's own environment. */
  async function replica(name: string): Promise<Replica> {
    const r = await startReplica({
      DATABASE_URL: db.url, REDIS_URL: "", REDIS_CLUSTER_NODES: "", ADMISSION_SPOOL_DIR: join(dir, name),
      ADMISSION_WEBHOOK_ALLOW_PRIVATE_NETWORKS: "1", ADMISSION_WEBHOOK_RETRY_MIN_MS: "200", ADMISSION_WEBHOOK_TIMEOUT_MS: "5000", LOG_LEVEL: "info",
    });
    started.push(r);
    return r;
  }

  it("an alert raised by an acknowledged Settle survives SIGKILL while the receiver is down, and is delivered after the restart", async () => {
    const secret = generateWebhookSecret();
    const port = await freePort(); // nothing listens there yet: every attempt is refused
    const a = await replica("crash-a");
    await a.policy.applyBundle({ bundle: bundle(`http://127.0.0.1:${port}/hook`, secret) }, admin);
    // Logs go out at least every second: the apply's lines (where a secret could leak) are out before the kill.
    await new Promise((r) => setTimeout(r, 1_500));
    // 100 + 100 reserved (20 %): no alert at Admit; the Settle's 100 + 800 crosses 80 %.
    const d = await a.admission.admit({ credential: keySecret("u0"), task: "DRAFT", inputTokens: 100n, maxOutputTokens: 100n });
    assert.ok(d.allowed);
    assert.equal(d.warnings.length, 0);
    const settled = await a.admission.settle({ reservationId: d.reservationId, inputTokens: 100n, outputTokens: 800n });
    assert.equal(settled.duplicate, false);
    // Killed once its first attempt (refused) is over: a kill during an attempt would leave the delivery claimed
    // for the attempt's timeout and slack (35 s), which the restart would then only wait out.
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      await waitFor(async () => (await client.query("SELECT 1 FROM webhook_deliveries WHERE attempts >= 1 AND claimed_until IS NULL")).rowCount === 1);
      a.process.kill("SIGKILL");
      await new Promise((r) => a.process.once("exit", r));
      const { rows } = await client.query("SELECT e.type, d.state FROM webhook_deliveries d JOIN webhook_events e ON e.id = d.event_id");
      assert.deepEqual(rows, [{ type: "alert.threshold", state: "pending" }], "committed with the Settle's ledger row, before it was acknowledged");
    } finally {
      await client.end();
    }

    const receiver = await startWebhookReceiver(secret, { mode: "ok" }, port);
    receivers.push(receiver);
    const b = await replica("crash-b");
    await receiver.waitFor((r) => r.some((w) => w.status === 204));
    const [alert] = receiver.received;
    assert.ok(alert!.verified, alert!.error);
    assert.equal(alert!.body.type, "alert.threshold");
    assert.equal(alert!.body.data.user, "u0");
    assert.equal(alert!.body.data.threshold, 0.8);
    assert.equal(alert!.body.data.used, 900);
    assert.deepEqual(alert!.body.data.meter, { kind: "TOKENS", window: "DAY", per: "USER", subject: "u0" });
    assert.equal(receiver.received.length, 1);
    await b.stop();
    for (const r of [a, b]) assert.ok(!r.output().includes(secret.slice("whsec_".length)), "the webhook secret is in no log line");
    assert.match(a.output(), /admin\.apply/, "the logs were captured (the apply's audit line)");
  });

  it("two replicas share the outbox and never send one delivery in parallel", async () => {
    const secret = generateWebhookSecret();
    // Every first attempt fails, so retries are up for grabs by either replica; each request is held a while.
    const receiver = await startWebhookReceiver(secret, { mode: "ok", failFirst: 1, delayMs: 300 });
    receivers.push(receiver);
    const [a, b] = [await replica("pair-a"), await replica("pair-b")];
    await a.policy.applyBundle({ bundle: bundle(receiver.url, secret) }, admin);
    await waitFor(async () => (await b.policy.getWebhook({ id: "acme-hook" }, admin)).webhook?.url === receiver.url);
    // u0's alert came from the first test; u1… each raise one, half of them on each replica.
    const fresh = users.slice(1);
    await Promise.all(fresh.map((user, i) => (i % 2 === 0 ? a : b).admission.admit({ credential: keySecret(user), task: "DRAFT", inputTokens: 500n, maxOutputTokens: 300n })));
    await receiver.waitFor((r) => new Set(r.filter((w) => w.status === 204).map((w) => w.body.data.user)).size === fresh.length, 90_000);
    const byId = new Map<string, number[]>();
    for (const w of receiver.received) byId.set(w.id, [...(byId.get(w.id) ?? []), w.status]);
    assert.equal(byId.size, fresh.length);
    for (const [id, statuses] of byId) assert.deepEqual(statuses, [500, 204], `event ${id}: one failed attempt, then one delivery`);
    assert.ok(receiver.received.every((w) => w.concurrent === 1 && w.verified), "no webhook-id was ever in flight twice at once");
    // The receiver reports a request as it answers it: the replicas count each attempt once they have the answer.
    const attemptsOf = () => Promise.all([a, b].map((r) => metricValue(`http://127.0.0.1:${r.httpPort}/metrics`, "admission_webhook_attempts_total", { webhook: "acme-hook" })));
    await waitFor(async () => (await attemptsOf()).reduce((x, y) => x + y) >= 2 * fresh.length);
    const delivered = await Promise.all([a, b].map((r) => metricValue(`http://127.0.0.1:${r.httpPort}/metrics`, "admission_webhook_deliveries_total", { webhook: "acme-hook", outcome: "delivered" })));
    const attempts = await attemptsOf();
    assert.equal(attempts[0]! + attempts[1]!, 2 * fresh.length, `attempts per replica: ${attempts}`);
    assert.ok(delivered[0]! + delivered[1]! <= fresh.length, `deliveries per replica: ${delivered}`);
    assert.ok(attempts.every((n) => n > 0), `both replicas delivered: ${attempts}`);
  });
});

async function waitFor(check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 25));
  }
}
