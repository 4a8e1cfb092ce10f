import assert from "node:assert/strict";
import { describe, test } from "node:test";
import OpenAI from "openai";
import { secret, Stack, waitFor } from "./support/stack.js";

const ask = (client: OpenAI, model = "gpt-a") => client.chat.completions.create({ model, messages: [{ role: "user", content: "hello" }] }).withResponse();

/** The status of a chat request with this Authorization header, and its error code when it failed. */
async function statusWith(stack: Stack, authorization: string, model = "gpt-a"): Promise<{ status: number; code?: string; retryAfter: string | null }> {
  const res = await fetch(`${stack.url}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization, "x-llm-task": "DRAFT", "content-type": "application/json" },
    body: JSON.stringify({ model, messages: [{ role: "user", content: "hello" }] }),
  });
  const body = (await res.json()) as { error?: { code: string } };
  return { status: res.status, code: body.error?.code, retryAfter: res.headers.get("retry-after") };
}

const unavailable = { status: 503, code: "unavailable", retryAfter: "1" };

async function outage(stack: Stack): Promise<void> {
  await stack.cp.stop();
  await waitFor(() => !stack.dp.controlPlane.connected(), "the link to go down");
}

/** The key's request during the outage is refused like FAIL_CLOSED and reaches neither provider. */
async function assertRefusedUnserved(stack: Stack, key: string): Promise<void> {
  const before = stack.upA.received.length + stack.upB.received.length;
  assert.deepEqual(await statusWith(stack, `Bearer ${secret(key)}`), unavailable, key);
  assert.equal(stack.upA.received.length + stack.upB.received.length, before, `${key} reached no provider`);
}

describe("data plane: FAIL_OPEN serves only credentials admitted here recently", () => {
  test("during an outage an unknown, a revoked and a garbage credential get 503 and reach no provider; a known one is served on its own routes, until its admission is older than PROXY_FAIL_OPEN_TTL_MS", async () => {
    const clock = { nowMs: Date.now() };
    const ttlMs = 60_000;
    const stack = await Stack.start({
      tenants: [{ id: "acme", keys: [{ id: "k-acme" }, { id: "k-revoked" }, { id: "k-idle" }, { id: "k-never" }] }, { id: "globex" }],
      persistent: true,
      dataPlane: { failurePolicy: "FAIL_OPEN", failOpenTtlMs: ttlMs },
      clock: () => clock.nowMs,
    });
    const reached = () => stack.upA.received.length + stack.upB.received.length;
    try {
      // While the link is up: each credential admitted once (globex for another model than acme).
      await ask(stack.client("k-acme"));
      await ask(stack.client("k-globex"), "small");
      await ask(stack.client("k-revoked"));
      await ask(stack.client("k-idle"));
      // Revoked through the PolicyService; k-revoked is used once more (denied 401: this is how the data plane learns),
      // k-idle is not used between its revocation and the outage.
      await stack.revokeKey("k-revoked");
      await stack.revokeKey("k-idle");
      await assert.rejects(ask(stack.client("k-revoked")), (e: unknown) => e instanceof OpenAI.AuthenticationError);

      await outage(stack);

      const before = reached();
      assert.deepEqual(await statusWith(stack, "Bearer garbage-not-a-key"), unavailable, "garbage");
      assert.deepEqual(await statusWith(stack, `Bearer ${secret("k-never")}`), unavailable, "a valid key never admitted here");
      assert.deepEqual(await statusWith(stack, `Bearer ${secret("k-revoked")}`), unavailable, "revoked, and denied since, before the outage");
      assert.deepEqual(await statusWith(stack, `Bearer ${secret("k-acme")}`, "small"), unavailable, "a model acme's key was never admitted for (globex's key was)");
      assert.deepEqual(await statusWith(stack, `Bearer ${secret("k-globex")}`), unavailable, "a model globex's key was never admitted for (acme's key was)");
      assert.equal(reached(), before, "none of them reached a provider");
      assert.equal(stack.dp.failOpen.size(), 0, "nothing held for them");

      // The known credential, on what it was admitted for: its own routes, unmetered.
      stack.upA.usage = { prompt_tokens: 70, completion_tokens: 7 };
      const served = await ask(stack.client("k-acme"));
      assert.match(served.response.headers.get("x-admission-warnings")!, /FAIL_OPEN/);
      assert.equal(stack.upA.received.at(-1)!.body.model, "gpt-a-2024", "acme's admitted route");
      // The exposure the data plane cannot see: revoked with no request between the revocation and the outage.
      const idle = await ask(stack.client("k-idle"));
      assert.equal(reached(), before + 2);

      // Past the TTL since their last admission, nothing is served (serving during the outage does not renew it).
      clock.nowMs += ttlMs;
      for (const key of ["k-acme", "k-idle"]) await assertRefusedUnserved(stack, key);

      // The link comes back: acme's usage is recorded against acme; the revoked key's is refused (and counted lost).
      await stack.startControlPlane();
      const row = await stack.row("acme", served.response.headers.get("x-request-id")!);
      assert.deepEqual([row.input_tokens, row.output_tokens, row.model], [70, 7, "gpt-a"]);
      await waitFor(() => stack.dp.failOpen.size() === 0, "the held usage to be handled");
      const ids = (await stack.ledger("acme")).map((r) => r.request_id);
      assert.ok(!ids.includes(idle.response.headers.get("x-request-id")!), "the revoked key's usage is not recorded");
      assert.ok(!(await stack.ledger("globex")).some((r) => r.request_id === served.response.headers.get("x-request-id")), "nothing charged to another tenant");
      const metrics = await (await fetch(stack.metricsUrl)).text();
      assert.match(metrics, /^proxy_fail_open_total\{result="recorded"\} 1$/m);
      assert.match(metrics, /^proxy_fail_open_total\{result="lost"\} 1$/m);
      assert.match(metrics, /^proxy_tokens_total\{tenant="acme",model="gpt-a",direction="input"\} /m, "the served request carries its remembered tenant");
    } finally {
      stack.upA.reset();
      await stack.stop();
    }
  });

  test("any denial while the link is up forgets the credential: a rate-limited key is not served unmetered during the outage", async () => {
    const stack = await Stack.start({
      tenants: [{ id: "acme", limits: [{ kind: "REQUESTS", window: "MINUTE", per: "TENANT", value: 1 }] }],
      dataPlane: { failurePolicy: "FAIL_OPEN" },
    });
    try {
      await ask(stack.client("k-acme"));
      await assert.rejects(ask(stack.client("k-acme")), (e: unknown) => e instanceof OpenAI.RateLimitError);
      await outage(stack);
      await assertRefusedUnserved(stack, "k-acme");
    } finally {
      await stack.stop();
    }
  });

  test("FAIL_CLOSED remembers nothing: a credential admitted a moment ago gets 503 during an outage", async () => {
    const stack = await Stack.start({ tenants: [{ id: "acme" }] });
    try {
      await ask(stack.client("k-acme"));
      await outage(stack);
      await assertRefusedUnserved(stack, "k-acme");
    } finally {
      await stack.stop();
    }
  });
});
