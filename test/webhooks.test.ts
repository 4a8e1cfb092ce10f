import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createServer as createNetServer } from "node:net";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { toJson } from "@bufbuild/protobuf";
import { BundleSchema } from "../gen/admission/v1/policy_pb.js";
import { WebhookDeliveryState } from "../gen/admission/v1/policy_service_pb.js";
import { parseProtoJson } from "../control-plane/policy/proto-json.js";
import { generateWebhookSecret } from "../control-plane/webhook-signing.js";
import { testBundle } from "./support/bundles.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { metricValue } from "./support/metric-value.js";
import { startWebhookReceiver, type WebhookReceiver } from "./support/webhook-receiver.js";

const keySecret = "webhook-test-key-secret-0123456789abcdef";
const slackSecret = generateWebhookSecret();

/** acme: 1000 tokens a day; every Admit of 500 + 300 tokens crosses 80 % first, then 100 %... */
function bundle(webhooks: unknown[]) {
  return testBundle({
    tenants: [
      { id: "acme", atiToken: "ati-1", status: "ACTIVE", mode: "SOFT", limits: [{ kind: "TOKENS", window: "DAY", per: "TENANT", value: 1000 }] },
      { id: "globex", atiToken: "ati-1", status: "ACTIVE", mode: "SOFT", limits: [{ kind: "TOKENS", window: "DAY", per: "TENANT", value: 1000 }] },
    ],
    users: [{ id: "alice", tenant: "acme" }, { id: "gus", tenant: "globex" }],
    apiKeys: [
      { id: "k-alice", tenant: "acme", user: "alice", secret: keySecret },
      { id: "k-gus", tenant: "globex", user: "gus", secret: `${keySecret}-globex` },
    ],
    webhooks,
  });
}

async function applyWebhooks(t: TestControlPlane, webhooks: unknown[]) {
  return t.policy.applyBundle({ bundle: parseProtoJson(BundleSchema, { webhooks }) }, admin);
}

describe("webhooks: endpoints in the bundle, signed alerts to a real receiver", () => {
  let t: TestControlPlane;
  let receiver: WebhookReceiver;
  let slack: WebhookReceiver;
  let secret: string;

  before(async () => {
    t = await startTestControlPlane({ config: { webhooks: { retryMinMs: 50, retryMaxAgeMs: 60_000, timeoutMs: 2_000, allowPrivateNetworks: true } } });
    // The receiver's secret is only known once the control plane generated it: start with a placeholder, restart below.
    const applied = await t.policy.applyBundle({ bundle: bundle([]) }, admin);
    assert.ok(applied.applied);
    slack = await startWebhookReceiver(slackSecret);
    const created = await applyWebhooks(t, [
      { id: "acme-alerts", tenant: "acme", url: "http://127.0.0.1:1/unused", events: ["alert.threshold"] },
      { id: "ops-slack", url: slack.url, secret: slackSecret, events: ["alert.threshold"], format: "WEBHOOK_FORMAT_SLACK" },
    ]);
    const change = created.changes.find((c) => c.kind === "webhook" && c.id === "acme-alerts")!;
    secret = change.generatedSecret;
    assert.match(secret, /^whsec_[A-Za-z0-9+/]+=*$/, "a webhook created without a secret gets one, returned once");
    assert.equal(created.changes.find((c) => c.id === "ops-slack")!.generatedSecret, "", "a given secret is never echoed");
    receiver = await startWebhookReceiver(secret);
    // Pointing it at the receiver keeps the generated secret (none given: the stored one stays).
    await applyWebhooks(t, [{ id: "acme-alerts", tenant: "acme", url: receiver.url, events: ["alert.threshold"] }]);
  });

  after(async () => {
    await t?.close();
    await receiver?.stop();
    await slack?.stop();
  });

  it("never returns a secret again: Get, List and Export omit it, and re-applying the export keeps it", async () => {
    const got = await t.policy.getWebhook({ id: "acme-alerts" }, admin);
    assert.equal(got.webhook!.secret, "");
    assert.equal(got.webhook!.url, receiver.url);
    const listed = await t.policy.listWebhooks({ tenant: "acme" }, admin);
    assert.deepEqual(listed.webhooks.map((w) => [w.id, w.secret]), [["acme-alerts", ""]]);
    const exported = await t.policy.exportBundle({}, admin);
    assert.ok(exported.bundle!.webhooks.length === 2 && exported.bundle!.webhooks.every((w) => w.secret === ""));
    assert.ok(!JSON.stringify(toJson(BundleSchema, exported.bundle!)).includes(secret.slice(6)));
    const reapplied = await t.policy.applyBundle({ bundle: exported.bundle! }, admin);
    assert.ok(reapplied.changes.filter((c) => c.kind === "webhook").every((c) => c.generatedSecret === "" && c.fields.length === 0), "re-applying the export changes no webhook");
  });

  it("the README's endpoints apply as written", async () => {
    const readme = readFileSync(new URL("../../README.md", import.meta.url), "utf8");
    const section = readme.slice(readme.indexOf("## Webhooks"));
    const json = /```json\n([\s\S]*?)```/.exec(section)![1]!;
    const dry = await t.policy.applyBundle({ bundle: parseProtoJson(BundleSchema, JSON.parse(json)), dryRun: true }, admin);
    assert.deepEqual(dry.changes.map((c) => [c.kind, c.id]), [["webhook", "acme-alerts"], ["webhook", "ops-slack"]]);
  });

  it("refuses bad endpoints naming the entity and field, and changes nothing", async () => {
    const before = await t.policy.exportBundle({}, admin);
    const cases: Array<[Record<string, unknown>, RegExp]> = [
      [{ url: "not a url" }, /webhook "bad": field url: .*is not a URL/],
      [{ url: "ftp://example.com/x" }, /webhook "bad": field url: scheme "ftp" is not allowed/],
      [{ url: "https://user:pw@example.com/x" }, /webhook "bad": field url: must not carry credentials/],
      [{ events: ["alert.threshold", "alert.nope"] }, /webhook "bad": field events: unknown event "alert.nope"/],
      [{ events: [] }, /webhook "bad": field events: is empty/],
      [{ secret: "not-whsec" }, /webhook "bad": field secret: must be "whsec_" followed by base64/],
      [{ secret: "whsec_c2hvcnQ=" }, /webhook "bad": field secret: must hold 24-64 bytes/],
      [{ tenant: "nobody" }, /webhook "bad": field tenant: unknown tenant "nobody"/],
      [{ tenant: "acme", events: ["admin.change"] }, /webhook "bad": field events: admin.change goes to operator endpoints only/],
    ];
    for (const [fields, message] of cases) {
      const err = await applyWebhooks(t, [{ id: "bad", url: "https://example.com/hook", events: ["alert.threshold"], ...fields }]).then(() => undefined, (e: grpc.ServiceError) => e);
      assert.ok(err, `refused: ${JSON.stringify(fields)}`);
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.match(err.details, message);
    }
    const after = await t.policy.exportBundle({}, admin);
    assert.equal(after.version, before.version, "no bad bundle changed the config");
  });

  it("delivers each threshold alert, signed, with the meter's data, to the tenant's endpoint and the operator's Slack endpoint", async () => {
    const admit = () => t.admission.admit({ credential: keySecret, task: "DRAFT", inputTokens: 500n, maxOutputTokens: 300n });
    const first = await admit(); // 800 of 1000: 80 %
    assert.ok(first.allowed);
    await receiver.waitFor((r) => r.some((w) => w.body?.data?.threshold === 0.8));
    const [alert] = receiver.received.filter((w) => w.body?.data?.threshold === 0.8);
    assert.ok(alert!.verified, `verified by standardwebhooks: ${alert!.error}`);
    assert.match(alert!.id, /^evt_/);
    assert.equal(alert!.body.type, "alert.threshold");
    assert.ok(!Number.isNaN(Date.parse(alert!.body.timestamp)));
    const data = alert!.body.data;
    assert.equal(data.tenant, "acme");
    assert.deepEqual(data.meter, { kind: "TOKENS", window: "DAY", per: "TENANT", subject: "acme" });
    assert.equal(data.used, 800);
    assert.equal(data.limit, 1000);
    assert.equal(data.mode, "SOFT");
    const day = Date.parse(data.windowStart);
    assert.equal(Date.parse(data.windowEnd) - day, 86_400_000);
    assert.equal(day % 86_400_000, 0);

    await slack.waitFor((r) => r.length >= 1);
    assert.ok(slack.received[0]!.verified, `Slack body signed the same way: ${slack.received[0]!.error}`);
    assert.match(slack.received[0]!.body.text, /tenant acme: TOKENS\/DAY reached 80% of its limit \(800\/1000\)/);

    const second = await admit(); // 1600 of 1000 (SOFT): 100 %
    assert.ok(second.allowed);
    await receiver.waitFor((r) => r.some((w) => w.body?.data?.threshold === 1));
    const third = await admit(); // past every threshold: nothing new
    assert.ok(third.allowed);
    // A globex alert goes to the operator's endpoint only, never to acme's.
    await t.admission.admit({ credential: `${keySecret}-globex`, task: "DRAFT", inputTokens: 500n, maxOutputTokens: 300n });
    await slack.waitFor((r) => r.some((w) => /tenant globex/.test(w.body.text)));
    await t.cp.webhooks.runOnce();
    const tenants = new Set(receiver.received.map((w) => w.body.data.tenant));
    assert.deepEqual([...tenants], ["acme"]);
    assert.equal(receiver.received.length, 2, "one delivery per alert: 80 % and 100 %");
    assert.equal(new Set(receiver.received.map((w) => w.id)).size, 2);

    const deliveries = await t.policy.listWebhookDeliveries({ webhook: "acme-alerts" }, admin);
    assert.equal(deliveries.deliveries.length, 2);
    for (const d of deliveries.deliveries) {
      assert.equal(d.state, WebhookDeliveryState.DELIVERED);
      assert.equal(d.attempts.length, 1);
      assert.equal(d.attempts[0]!.httpStatus, 204);
      assert.equal(d.tenant, "acme");
    }
    const metrics = `http://127.0.0.1:${t.cp.httpPort}/metrics`;
    assert.equal(await metricValue(metrics, "admission_webhook_deliveries_total", { webhook: "acme-alerts", outcome: "delivered" }), 2);
    assert.equal(await metricValue(metrics, "admission_webhook_attempts_total", { webhook: "acme-alerts", result: "ok" }), 2);
    assert.equal(await metricValue(metrics, "admission_webhook_oldest_undelivered_seconds"), 0);
  });

  it("retries a failing receiver with backoff: each event arrives once per id, acknowledged on its third attempt", async () => {
    await receiver.setBehaviour({ mode: "ok", failFirst: 2 });
    const start = receiver.received.length;
    await t.cp.events.raise(undefined, "alert.threshold", "acme", { tenant: "acme", note: "retry test" });
    await receiver.waitFor((r) => r.slice(start).some((w) => w.status === 204));
    const mine = receiver.received.slice(start);
    assert.deepEqual(mine.map((w) => [w.attempt, w.status]), [[1, 500], [2, 500], [3, 204]]);
    assert.equal(new Set(mine.map((w) => w.id)).size, 1, "every attempt carries the same webhook-id");
    assert.ok(mine.every((w) => w.verified));
    // The receiver reports the request as it answers: the worker records the answer right after.
    const latest = async () => (await t.policy.listWebhookDeliveries({ webhook: "acme-alerts", pageSize: 1 }, admin)).deliveries[0]!;
    await waitUntil(async () => (await latest()).state !== WebhookDeliveryState.PENDING);
    const d = await latest();
    assert.equal(d!.state, WebhookDeliveryState.DELIVERED);
    assert.deepEqual(d!.attempts.map((a) => a.httpStatus), [500, 500, 204]);
    assert.equal(d!.attempts[0]!.error, "HTTP 500");
    await receiver.setBehaviour({ mode: "ok" });

    // RedeliverWebhook queues it again: the receiver hears the same id once more.
    const again = await t.policy.redeliverWebhook({ id: d!.id }, admin);
    assert.equal(again.delivery!.state, WebhookDeliveryState.PENDING);
    await receiver.waitFor((r) => r.filter((w) => w.id === d!.eventId).length === 4);
    assert.equal(await grpcStatus(t.policy.redeliverWebhook({ id: 999_999n }, admin)), grpc.status.NOT_FOUND);
  });

  it("a changed secret: both sign for a day, so receivers on the old and on the new one verify", async () => {
    const rotated = generateWebhookSecret();
    const applied = await applyWebhooks(t, [{ id: "acme-alerts", tenant: "acme", url: receiver.url, secret: rotated, events: ["alert.threshold"] }]);
    assert.deepEqual(applied.changes.find((c) => c.id === "acme-alerts")!.fields.sort(), ["previousSecret", "previousSecretExpiresAt", "secret"]);
    const shown = (await t.policy.getWebhook({ id: "acme-alerts" }, admin)).webhook!;
    assert.equal(shown.previousSecret, "");
    assert.ok(Number(shown.previousSecretExpiresAt!.seconds) * 1000 > Date.now() + 23 * 3_600_000);
    const onOld = receiver.received.length;
    await t.cp.events.raise(undefined, "alert.threshold", "acme", { n: "rotation" });
    await receiver.waitFor((r) => r.length > onOld);
    assert.ok(receiver.received[onOld]!.verified, `the old secret still verifies: ${receiver.received[onOld]!.error}`);
    // The receiver switches to the new secret (same address): verified too.
    const port = Number(new URL(receiver.url).port);
    await receiver.stop();
    receiver = await startWebhookReceiver(rotated, { mode: "ok" }, port);
    await t.cp.events.raise(undefined, "alert.threshold", "acme", { n: "rotated" });
    await receiver.waitFor((r) => r.length > 0);
    assert.ok(receiver.received[0]!.verified, `the new secret verifies: ${receiver.received[0]!.error}`);
    // Re-applying the endpoint unchanged keeps the rotation under way.
    const again = await applyWebhooks(t, [{ id: "acme-alerts", tenant: "acme", url: receiver.url, events: ["alert.threshold"] }]);
    assert.deepEqual(again.changes.find((c) => c.id === "acme-alerts")!.fields, []);
  });

  it("a redirect and a hang are failed attempts, never a crash", async () => {
    for (const mode of ["redirect", "hang"] as const) {
      await receiver.setBehaviour({ mode });
      await t.cp.events.raise(undefined, "alert.threshold", "acme", { tenant: "acme", note: mode });
      const [d] = (await t.policy.listWebhookDeliveries({ webhook: "acme-alerts", pageSize: 1 }, admin)).deliveries;
      await waitUntil(async () => ((await t.policy.listWebhookDeliveries({ webhook: "acme-alerts", pageSize: 1 }, admin)).deliveries[0]!.attempts.length > 0));
      const [seen] = (await t.policy.listWebhookDeliveries({ webhook: "acme-alerts", pageSize: 1 }, admin)).deliveries;
      assert.equal(seen!.id, d!.id);
      assert.equal(seen!.state, WebhookDeliveryState.PENDING, "retried later");
      assert.match(seen!.attempts[0]!.error, mode === "redirect" ? /HTTP 302: redirects are not followed/ : /timed out after 2000 ms/);
    }
    await receiver.setBehaviour({ mode: "ok" });
  });
});

describe("webhooks: 410 Gone and the private-network guard", () => {
  it("410 disables the endpoint (audited) and nothing more is sent to it", async () => {
    const t = await startTestControlPlane({ config: { webhooks: { retryMinMs: 50, retryMaxAgeMs: 60_000, timeoutMs: 2_000, allowPrivateNetworks: true } } });
    const secret = generateWebhookSecret();
    const receiver = await startWebhookReceiver(secret, { mode: "gone" });
    try {
      await t.policy.applyBundle({ bundle: bundle([{ id: "gone", tenant: "acme", url: receiver.url, secret, events: ["alert.threshold"] }]) }, admin);
      await t.cp.events.raise(undefined, "alert.threshold", "acme", { n: 1 });
      await receiver.waitFor((r) => r.length === 1);
      await waitUntil(async () => (await t.policy.getWebhook({ id: "gone" }, admin)).webhook!.disabled);
      const [d] = (await t.policy.listWebhookDeliveries({ webhook: "gone" }, admin)).deliveries;
      assert.equal(d!.state, WebhookDeliveryState.FAILED);
      assert.deepEqual(d!.attempts.map((a) => a.httpStatus), [410]);
      await t.cp.audit.flush();
      const audit = await t.policy.listAuditEvents({ kind: "webhook.disabled" }, admin);
      assert.equal(audit.events.length, 1);
      assert.match(audit.events[0]!.message, /disabled webhook "gone": endpoint answered 410 Gone/);
      await t.cp.events.raise(undefined, "alert.threshold", "acme", { n: 2 });
      await t.cp.webhooks.runOnce();
      assert.equal(receiver.received.length, 1, "a disabled endpoint is sent nothing");
      // The disabled endpoint keeps its secret: enabling it again needs none.
      await applyWebhooks(t, [{ id: "gone", tenant: "acme", url: receiver.url, events: ["alert.threshold"], disabled: false }]);
      assert.equal((await t.policy.getWebhook({ id: "gone" }, admin)).webhook!.disabled, false);
    } finally {
      await t.close();
      await receiver.stop();
    }
  });

  it("an endpoint answering garbage or failing for longer than the retry age: failed attempts, then given up", async () => {
    const t = await startTestControlPlane({ config: { webhooks: { retryMinMs: 50, retryMaxAgeMs: 400, timeoutMs: 2_000, allowPrivateNetworks: true } } });
    const garbage = createNetServer((socket) => socket.end("this is not HTTP\r\n\r\n"));
    await new Promise<void>((r) => garbage.listen(0, "127.0.0.1", r));
    const secret = generateWebhookSecret();
    const failing = await startWebhookReceiver(secret, { mode: "fail" });
    try {
      const garbageUrl = `http://127.0.0.1:${(garbage.address() as { port: number }).port}/hook`;
      await t.policy.applyBundle({
        bundle: bundle([
          { id: "garbage", tenant: "acme", url: garbageUrl, secret, events: ["alert.threshold"] },
          { id: "failing", tenant: "acme", url: failing.url, secret, events: ["alert.threshold"] },
        ]),
      }, admin);
      await t.cp.events.raise(undefined, "alert.threshold", "acme", { n: 1 });
      const states = async () => (await t.policy.listWebhookDeliveries({ tenant: "acme" }, admin)).deliveries;
      await waitUntil(async () => (await states()).every((d) => d.state === WebhookDeliveryState.FAILED));
      for (const d of await states()) {
        assert.ok(d.attempts.length >= 2, `${d.webhook}: retried before it was given up (${d.attempts.length} attempts)`);
        if (d.webhook === "garbage") assert.ok(d.attempts.every((a) => a.httpStatus === 0 && /HPE_|Parse Error/.test(a.error)), d.attempts.map((a) => `${a.httpStatus} ${a.error}`).join("; "));
        else assert.ok(d.attempts.every((a) => a.httpStatus === 500 && a.error === "HTTP 500"));
      }
      assert.ok(failing.received.every((w) => w.verified));
      const metrics = `http://127.0.0.1:${t.cp.httpPort}/metrics`;
      assert.equal(await metricValue(metrics, "admission_webhook_deliveries_total", { outcome: "failed" }), 2);
      assert.equal((await t.policy.getWebhook({ id: "failing" }, admin)).webhook!.disabled, false, "only 410 disables");
      assert.equal(await grpcStatus(t.policy.getWebhook({ id: "nope" }, admin)), grpc.status.NOT_FOUND);
      assert.equal(await grpcStatus(t.policy.listWebhookDeliveries({ pageSize: 501 }, admin)), grpc.status.INVALID_ARGUMENT);
      assert.equal(await grpcStatus(t.policy.listWebhookDeliveries({ pageToken: "%%%" }, admin)), grpc.status.INVALID_ARGUMENT);
      assert.equal(await grpcStatus(t.policy.listWebhooks({}, {})), grpc.status.UNAUTHENTICATED);
    } finally {
      await t.close();
      await failing.stop();
      garbage.close();
    }
  });

  it("refuses loopback targets without ADMISSION_WEBHOOK_ALLOW_PRIVATE_NETWORKS", async () => {
    const t = await startTestControlPlane({ config: { webhooks: { retryMinMs: 60_000, retryMaxAgeMs: 60_000, timeoutMs: 2_000, allowPrivateNetworks: false } } });
    const secret = generateWebhookSecret();
    const receiver = await startWebhookReceiver(secret);
    try {
      const byName = receiver.url.replace("127.0.0.1", "localhost");
      const mapped = receiver.url.replace("127.0.0.1", "[::ffff:127.0.0.1]");
      await t.policy.applyBundle({
        bundle: bundle([
          { id: "by-ip", tenant: "acme", url: receiver.url, secret, events: ["alert.threshold"] },
          { id: "by-name", tenant: "acme", url: byName, secret, events: ["alert.threshold"] },
          { id: "mapped", tenant: "acme", url: mapped, secret, events: ["alert.threshold"] },
          { id: "metadata", tenant: "acme", url: "http://169.254.169.254/latest/meta-data/", secret, events: ["alert.threshold"] },
        ]),
      }, admin);
      await t.cp.events.raise(undefined, "alert.threshold", "acme", { n: 1 });
      await t.cp.webhooks.runOnce();
      const { deliveries } = await t.policy.listWebhookDeliveries({ tenant: "acme" }, admin);
      assert.equal(deliveries.length, 4);
      for (const d of deliveries) {
        assert.equal(d.attempts.length, 1, d.webhook);
        assert.equal(d.attempts[0]!.httpStatus, 0);
        assert.match(d.attempts[0]!.error, /refused target: .*(private or reserved address)/, d.webhook);
      }
      assert.equal(receiver.received.length, 0, "nothing reached the loopback receiver");
    } finally {
      await t.close();
      await receiver.stop();
    }
  });
});

describe("webhooks: lease.expired, key.expiring and admin.change", () => {
  let t: TestControlPlane;
  let receiver: WebhookReceiver;
  const secret = generateWebhookSecret();

  before(async () => {
    t = await startTestControlPlane({ config: { leaseTtlMs: 1_000, maxLeaseTtlMs: 1_000, webhooks: { retryMinMs: 50, retryMaxAgeMs: 60_000, timeoutMs: 2_000, allowPrivateNetworks: true } } });
    receiver = await startWebhookReceiver(secret);
  });

  after(async () => {
    await t?.close();
    await receiver?.stop();
  });

  it("admin.change tells operator endpoints who changed what (names, never values), committed with the change", async () => {
    const applied = await t.policy.applyBundle({
      bundle: bundle([
        { id: "ops", url: receiver.url, secret, events: ["admin.change", "lease.expired", "key.expiring"] },
        { id: "acme-new", tenant: "acme", url: "https://hooks.example.com/acme", events: ["alert.threshold"] },
      ]),
    }, { ...admin, "x-admission-actor": "jane" });
    const generated = applied.changes.find((c) => c.id === "acme-new")!.generatedSecret;
    assert.ok(generated);
    await receiver.waitFor((r) => r.some((w) => w.body.type === "admin.change"));
    const [change] = receiver.received.filter((w) => w.body.type === "admin.change");
    assert.ok(change!.verified, change!.error);
    assert.equal(change!.body.data.actor, "admin:jane");
    assert.equal(change!.body.data.version, Number(applied.version));
    assert.deepEqual(change!.body.data.changes.find((c: any) => c.id === "acme-new"), { kind: "webhook", id: "acme-new", action: "CREATE", fields: [] });
    assert.ok(!JSON.stringify(change!.body).includes(generated.slice(6)) && !JSON.stringify(change!.body).includes(keySecret), "no secret in the event");
    await t.policy.deleteWebhook({ id: "acme-new" }, admin);
    await receiver.waitFor((r) => r.some((w) => w.body.type === "admin.change" && w.body.data.changes[0]?.action === "DELETE"));
  });

  it("lease.expired is raised once when the sweeper charges an unsettled lease its estimate", async () => {
    const d = await t.admission.admit({ credential: keySecret, task: "DRAFT", inputTokens: 10n, maxOutputTokens: 20n, requestId: "req-expiring" });
    assert.ok(d.allowed);
    await new Promise((r) => setTimeout(r, 1_200));
    await t.cp.settlement.sweep();
    await receiver.waitFor((r) => r.some((w) => w.body.type === "lease.expired"));
    await t.cp.settlement.sweep();
    await t.cp.webhooks.runOnce();
    const expired = receiver.received.filter((w) => w.body.type === "lease.expired");
    assert.equal(expired.length, 1);
    assert.ok(expired[0]!.verified);
    assert.deepEqual(
      { ...expired[0]!.body.data, reservedAt: undefined, expiredAt: undefined },
      { tenant: "acme", user: "alice", keyId: "k-alice", requestId: "req-expiring", task: "DRAFT", model: "m-pro", inputTokens: 10, outputTokens: 20, costMicros: expired[0]!.body.data.costMicros, reservedAt: undefined, expiredAt: undefined },
    );
    assert.ok(expired[0]!.body.data.costMicros > 0);
  });

  it("key.expiring is raised once for a key within 7 days of its expiry, whatever the scans and replicas", async () => {
    const inThreeDays = new Date(Date.now() + 3 * 86_400_000).toISOString();
    const inMonth = new Date(Date.now() + 30 * 86_400_000).toISOString();
    await t.policy.applyBundle({
      bundle: parseProtoJson(BundleSchema, {
        apiKeys: [
          { id: "k-soon", tenant: "acme", user: "alice", secret: `${keySecret}-soon`, expiresAt: inThreeDays, description: "CI key" },
          { id: "k-later", tenant: "acme", user: "alice", secret: `${keySecret}-later`, expiresAt: inMonth },
        ],
      }),
    }, admin);
    await t.cp.webhooks.runOnce();
    await receiver.waitFor((r) => r.some((w) => w.body.type === "key.expiring"));
    // Another snapshot makes the next poll scan again: the same event, nothing sent twice.
    await t.policy.applyBundle({ bundle: parseProtoJson(BundleSchema, { users: [{ id: "carol", tenant: "acme" }] }) }, admin);
    await t.cp.webhooks.runOnce();
    await t.cp.webhooks.runOnce();
    const expiring = receiver.received.filter((w) => w.body.type === "key.expiring");
    assert.equal(expiring.length, 1);
    assert.deepEqual(expiring[0]!.body.data, { tenant: "acme", keyId: "k-soon", user: "alice", expiresAt: inThreeDays, description: "CI key" });
  });
});

async function grpcStatus(p: Promise<unknown>): Promise<number> {
  return p.then(() => 0, (e: grpc.ServiceError) => e.code);
}

async function waitUntil(condition: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 25));
  }
}
