import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { timestampMs } from "@bufbuild/protobuf/wkt";
import type OpenAI from "openai";
import { Outcome, RenewRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { ConfigError, loadControlPlaneConfig } from "../control-plane/config.js";
import { ControlPlaneClient, ControlPlaneError } from "../data-plane/control-plane-client.js";
import { startTestControlPlane, admin, type TestControlPlane } from "./support/control-plane.js";
import { scenario, secretOf } from "./support/scenario.js";
import { Stack, waitFor } from "./data-plane/support/stack.js";

const leaseTtlMs = 300_000;
const maxLeaseTtlMs = 600_000;

/**
 * A lease lives at most ADMISSION_MAX_LEASE_TTL_MS from its Admit, however
 * often it is renewed: Renew clamps to that end of life and is refused once it
 * is reached; the lease then expires there and is charged its estimate.
 */
describe("lease lifetime: ADMISSION_MAX_LEASE_TTL_MS counted from the Admit", () => {
  let t: TestControlPlane;
  let session: ControlPlaneClient;
  const start = Date.UTC(2026, 10, 23, 12, 0, 0);
  let now = start;

  before(async () => {
    t = await startTestControlPlane({ deps: { clock: () => now }, config: { leaseTtlMs, maxLeaseTtlMs } });
    await t.policy.applyBundle({ bundle: scenario({ id: "acme", keys: [{ id: "k-acme" }] }) }, admin);
    session = new ControlPlaneClient({ address: t.address });
    await waitFor(() => session.connected(), "the Session stream");
  });
  after(async () => {
    session.close();
    await t.close();
  });

  /** A sweep that starts now: one the periodic timer began earlier (with an earlier clock) is let finish first. */
  const sweepNow = async () => {
    await t.cp.settlement.sweep();
    await t.cp.settlement.sweep();
  };
  const admit = () => t.admission.admit({ credential: secretOf("k-acme"), task: "DRAFT", inputTokens: 100n, maxOutputTokens: 50n });
  const expiry = (r: { leaseExpiresAt?: Parameters<typeof timestampMs>[0] }) => timestampMs(r.leaseExpiresAt!) - start;

  test("Renew extends within the lifetime, is clamped at its end, and is refused (FAILED_PRECONDITION) once it is reached, on every transport", async () => {
    now = start;
    const d = await admit();
    assert.equal(expiry(d), leaseTtlMs);

    now = start + 250_000;
    assert.equal(expiry(await t.admission.renew({ reservationId: d.reservationId })), 550_000, "now + the default TTL");
    now = start + 500_000;
    assert.equal(expiry(await t.admission.renew({ reservationId: d.reservationId })), maxLeaseTtlMs, "clamped to the Admit + the maximum lifetime, not now + TTL");
    assert.equal(expiry(await session.renew(create(RenewRequestSchema, { reservationId: d.reservationId, ttlMs: 400_000n }))), maxLeaseTtlMs, "over Session too");

    now = start + maxLeaseTtlMs;
    await assert.rejects(t.admission.renew({ reservationId: d.reservationId }), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.FAILED_PRECONDITION);
      assert.match(err.details, /reached its maximum lifetime \(600000 ms from its Admit, at 2026-11-23T12:10:00.000Z\) and cannot be renewed/);
      return true;
    });
    await assert.rejects(session.renew(create(RenewRequestSchema, { reservationId: d.reservationId })), (err: ControlPlaneError) => err.code === grpc.status.FAILED_PRECONDITION);
    const connect = await fetch(`http://127.0.0.1:${t.cp.httpPort}/admission.v1.AdmissionService/Renew`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ reservationId: d.reservationId }),
    });
    assert.equal(((await connect.json()) as { code: string }).code, "failed_precondition");

    // It expires at its end of life and is charged its estimate; the Settle that comes later finds that.
    now = start + maxLeaseTtlMs + 1;
    await sweepNow();
    const late = await t.admission.settle({ reservationId: d.reservationId, inputTokens: 100n, outputTokens: 7n });
    assert.deepEqual([late.duplicate, late.outcome, late.estimated, late.inputTokens, late.outputTokens], [true, Outcome.EXPIRED, true, 100n, 50n]);
  });

  test("a shorter Renew near the end of life shortens the lease, and the store expires it then", async () => {
    now = start + 1_000_000;
    const d = await admit();
    now += maxLeaseTtlMs - 10_000;
    assert.equal(timestampMs((await t.admission.renew({ reservationId: d.reservationId, ttlMs: 5_000n })).leaseExpiresAt!), now + 5_000);
    now += 5_001;
    await sweepNow();
    const settled = await t.admission.settle({ reservationId: d.reservationId, inputTokens: 1n, outputTokens: 1n });
    assert.equal(settled.outcome, Outcome.EXPIRED);
  });

  test("ADMISSION_LEASE_TTL_MS may not exceed ADMISSION_MAX_LEASE_TTL_MS; the maximum lifetime defaults to an hour", () => {
    assert.throws(() => loadControlPlaneConfig({ ADMISSION_LEASE_TTL_MS: "600000", ADMISSION_MAX_LEASE_TTL_MS: "300000" }), (err: Error) => err instanceof ConfigError && /must not exceed ADMISSION_MAX_LEASE_TTL_MS/.test(err.message));
    assert.equal(loadControlPlaneConfig({}).maxLeaseTtlMs, 3_600_000);
  });
});

describe("lease lifetime through the data plane: a stream running past it", () => {
  test("the renewer stops at the end of life, the stream goes on to the end, and the lease is charged its estimate", async () => {
    const lines: string[] = [];
    const stack = await Stack.start({
      tenants: [{ id: "acme" }],
      controlPlane: { leaseTtlMs: 1_000, maxLeaseTtlMs: 2_500 },
      logs: { write: (chunk: string) => void lines.push(...chunk.split("\n").filter(Boolean)) },
    });
    try {
      stack.upA.behaviour = "stall";
      stack.upA.usage = { prompt_tokens: 31, completion_tokens: 9 };
      const client: OpenAI = stack.client("k-acme");
      const running = (async () => {
        const { data, response } = await client.chat.completions.create({ model: "gpt-a", stream: true, messages: [{ role: "user", content: "a very long one" }] }).withResponse();
        let text = "";
        for await (const chunk of data) text += chunk.choices[0]?.delta?.content ?? "";
        return { id: response.headers.get("x-request-id")!, text };
      })();
      running.catch(() => undefined); // awaited below; a failure before that must not surface as an unhandled rejection
      await waitFor(() => stack.upA.waiting() === 1, "the stream to be under way");
      await waitFor(async () => (await stack.ledger("acme")).some((r) => r.outcome === "EXPIRED"), "the lease to expire at its end of life");
      const { rows } = await stack.cp.database.query<{ lived_ms: number }>("SELECT (extract(epoch FROM settled_at - reserved_at) * 1000)::int AS lived_ms FROM usage_ledger WHERE tenant = 'acme'");
      assert.ok(rows[0]!.lived_ms >= 2_500, `renewed past its 1 s TTL up to its 2.5 s lifetime (lived ${rows[0]!.lived_ms} ms)`);
      assert.ok(lines.some((l) => l.includes("lease reached its maximum lifetime")), "the data plane says so");

      stack.upA.release();
      const { id, text } = await running;
      assert.equal(text, stack.upA.words.join(""), "the client got the whole stream");
      const row = await stack.row("acme", id);
      assert.deepEqual([row.outcome, row.estimated, row.output_tokens], ["EXPIRED", true, 500], "charged its estimate (input + the clamped output cap), not the 9 tokens served");
    } finally {
      stack.upA.reset();
      await stack.stop();
    }
  });
});
