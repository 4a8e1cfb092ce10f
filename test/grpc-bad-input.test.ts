import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { create, fromBinary, ScalarType, toBinary, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import * as grpc from "@grpc/grpc-js";
import { AdmissionService, AdmitRequestSchema, SessionRequestSchema, SessionResponseSchema } from "../gen/admission/v1/admission_pb.js";
import { PolicyService } from "../gen/admission/v1/policy_service_pb.js";
import { Authorization } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import { statusMessage } from "../control-plane/rpc-error.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { GatedCounterStore } from "./support/gated-counter-store.js";
import { grpcFrame, RawGrpcClient, type RawGrpcAnswer } from "./support/raw-grpc.js";
import { scenario, secretOf } from "./support/scenario.js";

/**
 * What the README promises for bad input on the gRPC port (and Connect): a
 * request that does not decode is INVALID_ARGUMENT (Connect JSON: invalid_argument)
 * and changes nothing; a bad
 * Session message ends the stream only after the calls before it are answered;
 * status messages are at most 1,000 characters and well-formed.
 */
const key = secretOf("k-bad");
const admitReq = (requestId: string) => create(AdmitRequestSchema, { credential: key, task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n, requestId });
const maxMessageChars = 1_000;

type Target = { path: string; input: DescMessage };
const unaryTargets: Target[] = ([AdmissionService, PolicyService, Authorization] as DescService[]).flatMap((service) =>
  service.methods.filter((m) => m.methodKind === "unary").map((m) => ({ path: `/${service.typeName}/${m.name}`, input: m.input })));

/** Bytes no message decodes from, whatever its schema. */
const undecodable: Record<string, Uint8Array> = {
  "a length running past the end": Uint8Array.from([0x0a, 0x05, 0x61]),
  "wire type 7": Uint8Array.from([0x0f, 0x00]),
  "a varint that never ends": Uint8Array.from([0x08, 0xff, 0xff, 0xff]),
};

/** One of the message's string fields holding bytes that are not UTF-8, or undefined if it has none. */
function invalidUtf8(input: DescMessage): Uint8Array | undefined {
  const field = input.fields.find((f) => f.fieldKind === "scalar" && f.scalar === ScalarType.STRING);
  if (!field) return undefined;
  return new BinaryWriter().uint32((field.number << 3) | 2).bytes(Uint8Array.from([0x61, 0xff, 0xfe, 0xc3, 0x28])).finish();
}

function status(answer: RawGrpcAnswer, what: string): { code: number; message: string; messages: Buffer[] } {
  assert.equal(answer.kind, "status", `${what}: answered with a status (got ${answer.kind})`);
  if (answer.kind !== "status") throw new Error("unreachable");
  return { code: answer.grpcStatus!, message: answer.grpcMessage, messages: answer.messages };
}

describe("bad input on the gRPC port and over Connect", () => {
  const counters = new GatedCounterStore();
  let t: TestControlPlane;
  let raw: RawGrpcClient;

  before(async () => {
    t = await startTestControlPlane({ deps: { counters } });
    await t.policy.applyBundle({ bundle: scenario({ id: "bad", keys: [{ id: "k-bad" }] }) }, admin);
    raw = new RawGrpcClient(t.address);
  });
  after(async () => {
    counters.release();
    raw.close();
    await t.close();
  });

  const policyVersion = async () => (await t.policy.exportBundle({}, admin)).version;
  const call = (path: string, body: Buffer) => raw.call(path, { headers: admin, body, timeoutMs: 10_000 });

  test("a request that does not decode is INVALID_ARGUMENT on every unary method, names why, and changes nothing", async () => {
    const before = { counters: counters.calls, version: await policyVersion() };
    let calls = 0;
    for (const target of unaryTargets) {
      const bad = { ...undecodable, ...(invalidUtf8(target.input) ? { "invalid UTF-8 in a string": invalidUtf8(target.input)! } : {}) };
      for (const [what, bytes] of Object.entries(bad)) {
        const s = status(await call(target.path, grpcFrame(bytes)), `${target.path} (${what})`);
        assert.equal(s.code, grpc.status.INVALID_ARGUMENT, `${target.path} (${what}): ${s.code} ${s.message}`);
        assert.match(s.message, /^malformed request: \S/, `${target.path} (${what}): the message says why`);
        calls++;
      }
    }
    assert.ok(calls > unaryTargets.length * 3, "every method got every kind of bad bytes");
    assert.equal(counters.calls, before.counters, "no decision ran");
    assert.equal(await policyVersion(), before.version, "no policy changed");
  });

  test("a Session whose first message does not decode ends INVALID_ARGUMENT", async () => {
    for (const [what, bytes] of Object.entries({ ...undecodable, "invalid UTF-8 in a string": invalidUtf8(AdmitRequestSchema)! })) {
      // The invalid string sits inside an admit call: field 2 of SessionRequest.
      const payload = what.startsWith("invalid") ? new BinaryWriter().uint32((2 << 3) | 2).bytes(bytes).finish() : bytes;
      const s = status(await call("/admission.v1.AdmissionService/Session", grpcFrame(payload)), `Session (${what})`);
      assert.equal(s.code, grpc.status.INVALID_ARGUMENT, `Session (${what}): ${s.code} ${s.message}`);
      assert.deepEqual(s.messages, [], `Session (${what}): nothing answered`);
    }
  });

  test("Connect: a JSON body that does not parse is invalid_argument (400)", async () => {
    const bodies: Array<[string, Buffer]> = [
      ["not JSON", Buffer.from("{\"credential\": ")],
      ["invalid UTF-8", Buffer.concat([Buffer.from('{"credential":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')])],
      ["a string where a number goes", Buffer.from('{"credential":"x","inputTokens":"many"}')],
    ];
    for (const [what, body] of bodies) {
      const res = await fetch(`http://127.0.0.1:${t.cp.httpPort}/admission.v1.AdmissionService/Admit`, { method: "POST", headers: { "content-type": "application/json" }, body });
      const error = (await res.json()) as { code: string; message: string };
      assert.deepEqual([res.status, error.code], [400, "invalid_argument"], `${what}: ${res.status} ${JSON.stringify(error)}`);
      assert.ok(error.message, `${what}: a message`);
    }
  });

  test("a bad Session message ends the stream only after the calls before it are answered, and the calls after it are not run", async () => {
    const before = counters.calls;
    counters.hold();
    const frame = (id: bigint, requestId: string) => grpcFrame(toBinary(SessionRequestSchema, create(SessionRequestSchema, { id, call: { case: "admit", value: admitReq(requestId) } })));
    const answer = call("/admission.v1.AdmissionService/Session", Buffer.concat([frame(1n, "s-1"), frame(2n, "s-2"), grpcFrame(undecodable["wire type 7"]!), frame(3n, "s-3")]));
    // Both calls before the bad message are being decided, held at the counters, when it arrives.
    await waitUntil(() => counters.inside === 2, "the first two calls at the counters");
    counters.release();
    const s = status(await answer, "Session");
    assert.equal(s.code, grpc.status.INVALID_ARGUMENT);
    assert.match(s.message, /the stream ends here/);
    const answered = s.messages.map((m) => fromBinary(SessionResponseSchema, m));
    assert.deepEqual(answered.map((r) => [r.id, r.result.case]).sort(), [[1n, "admit"], [2n, "admit"]], "both earlier calls answered before the status");
    assert.equal(counters.calls, before + 2, "the call after the bad message never ran");
    for (const r of answered) {
      assert.ok(r.result.case === "admit" && r.result.value.allowed);
      await t.admission.settle({ reservationId: r.result.value.reservationId, credential: key });
    }
  });

  test("status messages are at most 1,000 characters and well-formed, over gRPC and Connect", async () => {
    // Thirty tenants with an unknown ATI token: the problems listed run past 1,000 characters.
    const tenants = Array.from({ length: 30 }, (_, i) => ({ id: `t${i}`, atiToken: `${"\u{1F600}".repeat(20)}-${i}` }));
    const g = status(await call("/admission.v1.PolicyService/ApplyBundle", grpcFrame(toBinary(
      PolicyService.method.applyBundle.input,
      create(PolicyService.method.applyBundle.input, { bundle: scenario(...tenants) }),
    ))), "ApplyBundle");
    assert.equal(g.code, grpc.status.INVALID_ARGUMENT, g.message);
    const res = await fetch(`http://127.0.0.1:${t.cp.httpPort}/admission.v1.PolicyService/ApplyBundle`, {
      method: "POST", headers: { "content-type": "application/json", ...admin },
      body: JSON.stringify({ bundle: { tenants: tenants.map((x) => ({ ...x, status: "ACCOUNT_STATUS_ACTIVE" })) } }),
    });
    const c = (await res.json()) as { code: string; message: string };
    assert.equal(c.code, "invalid_argument", c.message);
    for (const message of [g.message, c.message]) {
      assert.match(message, /tenant "t0": field ati_token: unknown ATI token/, "names the entity and field");
      assert.equal(message.length, maxMessageChars, "cut to the bound");
      assert.ok(message.endsWith("…"));
      assert.doesNotMatch(message, /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/, "well-formed UTF-16");
    }
  });

  test("a status message cut inside a surrogate pair ends in U+FFFD, not half a character; a lone surrogate is replaced", () => {
    const cut = statusMessage(`${"a".repeat(maxMessageChars - 2)}${"\u{1F600}".repeat(5)}`);
    assert.equal(cut, `${"a".repeat(maxMessageChars - 2)}\ufffd…`);
    assert.equal(statusMessage("bad \ud800 and \udc00 here"), "bad \ufffd and \ufffd here");
    assert.equal(statusMessage("\u{1F600}"), "\u{1F600}", "a whole pair is kept");
  });
});

async function waitUntil(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 15_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}
