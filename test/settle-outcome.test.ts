import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { Outcome, SettleRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { ControlPlaneClient, ControlPlaneError } from "../data-plane/control-plane-client.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { scenario, secretOf } from "./support/scenario.js";
import { waitFor } from "./data-plane/support/stack.js";

/** An outcome the proto does not define is INVALID_ARGUMENT on every transport, and changes nothing. */
describe("Settle with an outcome not in the enum", () => {
  let t: TestControlPlane;
  let session: ControlPlaneClient;

  before(async () => {
    t = await startTestControlPlane();
    await t.policy.applyBundle({ bundle: scenario({ id: "acme", keys: [{ id: "k-acme" }] }) }, admin);
    session = new ControlPlaneClient({ address: t.address });
    await waitFor(() => session.connected(), "the Session stream");
  });
  after(async () => {
    session.close();
    await t.close();
  });

  const admit = () => t.admission.admit({ credential: secretOf("k-acme"), task: "DRAFT", inputTokens: 100n, maxOutputTokens: 50n });
  const connectSettle = async (body: Record<string, unknown>) => {
    const res = await fetch(`http://127.0.0.1:${t.cp.httpPort}/admission.v1.AdmissionService/Settle`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as { code?: string; message?: string; outcome?: string; duplicate?: boolean } };
  };
  const ledgerRows = async () => (await t.cp.database.query("SELECT 1 FROM usage_ledger")).rows.length;

  test("gRPC binary, Connect JSON (a number or an unknown name) and Session each answer INVALID_ARGUMENT; the lease stays open and settles normally afterwards", async () => {
    const d = await admit();

    await assert.rejects(t.admission.settle({ reservationId: d.reservationId, inputTokens: 100n, outputTokens: 7n, outcome: 99 as Outcome }), (err: grpc.ServiceError) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT);
      assert.equal(err.details, "unknown outcome 99");
      return true;
    });
    for (const outcome of [99, "OUTCOME_BOGUS", "BOGUS"]) {
      const r = await connectSettle({ reservationId: d.reservationId, inputTokens: "100", outputTokens: "7", outcome });
      assert.equal(r.status, 400, `outcome ${outcome}: ${JSON.stringify(r.body)}`);
      assert.equal(r.body.code, "invalid_argument");
      assert.match(r.body.message!, /outcome/i, "the message names the field or its enum");
    }
    await assert.rejects(session.settle(create(SettleRequestSchema, { reservationId: d.reservationId, inputTokens: 100n, outputTokens: 7n, outcome: 99 as Outcome })), (err: ControlPlaneError) => {
      assert.equal(err.code, grpc.status.INVALID_ARGUMENT, "the SessionError of that call carries code 3");
      assert.match(err.message, /unknown outcome 99/);
      return true;
    });

    assert.equal(await ledgerRows(), 0, "nothing recorded");
    // OUTCOME_UNSPECIFIED (0) is treated as SUCCESS, as the proto documents; this is the first settle.
    const settled = await t.admission.settle({ reservationId: d.reservationId, inputTokens: 100n, outputTokens: 7n });
    assert.deepEqual([settled.duplicate, settled.outcome, settled.outputTokens], [false, Outcome.SUCCESS, 7n]);
    assert.equal(await ledgerRows(), 1);
  });

  test("Connect JSON: an unknown field is refused naming it; a known outcome name is recorded", async () => {
    const d = await admit();
    const unknownField = await connectSettle({ reservationId: d.reservationId, inputTokens: "1", outputTokens: "1", outcom: "OUTCOME_SUCCESS" });
    assert.equal(unknownField.status, 400);
    assert.match(unknownField.body.message!, /outcom/);
    const ok = await connectSettle({ reservationId: d.reservationId, inputTokens: "1", outputTokens: "1", outcome: "OUTCOME_UPSTREAM_ERROR" });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.deepEqual([ok.body.outcome, ok.body.duplicate], ["OUTCOME_UPSTREAM_ERROR", undefined]);
  });
});
