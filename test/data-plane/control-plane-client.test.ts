import assert from "node:assert/strict";
import { after, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { AdmitRequest, SessionRequest, SessionResponse } from "../../gen/admission/v1/admission_pb.js";
import { AdmissionService, AdmitRequestSchema, AdmitResponseSchema, SessionErrorSchema, SessionResponseSchema, SettleResponseSchema } from "../../gen/admission/v1/admission_pb.js";
import { grpcServiceDefinition } from "../../control-plane/grpc/service-definition.js";
import { ControlPlaneClient, ControlPlaneError } from "../../data-plane/control-plane-client.js";
import { waitFor } from "./support/stack.js";

type Held = { id: bigint; request: SessionRequest; call: grpc.ServerDuplexStream<SessionRequest, SessionResponse> };

/**
 * A stand-in AdmissionService (the client is what is under test here): it
 * records sessions and unary calls and answers Session calls when the test
 * says so, in whatever order.
 */
class FakeControlPlane {
  server = new grpc.Server();
  port = 0;
  sessions = 0;
  unaryAdmits: AdmitRequest[] = [];
  /** The traceparent metadata of each unary Admit ("" when none). */
  unaryTraceparents: string[] = [];
  held: Held[] = [];
  autoAnswer = true;
  private open = new Set<grpc.ServerDuplexStream<SessionRequest, SessionResponse>>();

  async start(port = 0): Promise<void> {
    this.server = new grpc.Server();
    this.server.addService(grpcServiceDefinition(AdmissionService), {
      admit: (call: grpc.ServerUnaryCall<AdmitRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.unaryAdmits.push(call.request);
        this.unaryTraceparents.push(String(call.metadata.get("traceparent")[0] ?? ""));
        cb(null, create(AdmitResponseSchema, { allowed: true, requestId: call.request.requestId, message: "unary" }));
      },
      settle: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, create(SettleResponseSchema, {})),
      renew: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNIMPLEMENTED } as grpc.ServiceError),
      getEffectivePolicy: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb({ code: grpc.status.UNIMPLEMENTED } as grpc.ServiceError),
      session: (call: grpc.ServerDuplexStream<SessionRequest, SessionResponse>) => {
        this.sessions++;
        this.open.add(call);
        call.on("data", (request: SessionRequest) => {
          if (this.autoAnswer) this.answer({ id: request.id, request, call });
          else this.held.push({ id: request.id, request, call });
        });
        call.on("end", () => call.end());
        call.on("error", () => undefined);
        call.on("close", () => this.open.delete(call));
      },
    } as grpc.UntypedServiceImplementation);
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  }

  answer(h: Held): void {
    const admit = h.request.call.case === "admit" ? h.request.call.value : undefined;
    const result: SessionResponse["result"] = admit?.credential === "bad"
      ? { case: "error", value: create(SessionErrorSchema, { code: grpc.status.INVALID_ARGUMENT, message: "bad credential format" }) }
      : { case: "admit", value: create(AdmitResponseSchema, { allowed: true, requestId: admit?.requestId ?? "", message: "session" }) };
    h.call.write(create(SessionResponseSchema, { id: h.id, result }));
  }

  /** Ends every open Session stream without answering what is held. */
  endSessions(): void {
    for (const call of this.open) call.end();
    this.held = [];
  }

  kill(): void {
    this.server.forceShutdown();
  }
}

const admitReq = (requestId: string, credential = "key") => create(AdmitRequestSchema, { requestId, credential, task: "T" });

describe("data plane: the control-plane client (Session stream)", () => {
  const clients: ControlPlaneClient[] = [];
  const fakes: FakeControlPlane[] = [];
  after(() => {
    for (const c of clients) c.close();
    for (const f of fakes) f.kill();
  });
  async function setup(options: { timeoutMs?: number } = {}): Promise<{ fake: FakeControlPlane; client: ControlPlaneClient }> {
    const fake = new FakeControlPlane();
    await fake.start();
    const client = new ControlPlaneClient({ address: `127.0.0.1:${fake.port}`, timeoutMs: options.timeoutMs ?? 5_000, reconnectMinMs: 10, reconnectMaxMs: 50 });
    fakes.push(fake);
    clients.push(client);
    await waitFor(() => client.connected(), "the link");
    return { fake, client };
  }

  test("one stream multiplexes concurrent calls; answers out of order reach their callers", async () => {
    const { fake, client } = await setup();
    fake.autoAnswer = false;
    const calls = Array.from({ length: 50 }, (_, i) => client.admit(admitReq(`r${i}`)));
    await waitFor(() => fake.held.length === 50, "every call to arrive");
    for (const h of [...fake.held].reverse()) fake.answer(h);
    const answers = await Promise.all(calls);
    answers.forEach((a, i) => assert.equal(a.requestId, `r${i}`));
    assert.ok(answers.every((a) => a.message === "session"));
    assert.equal(fake.sessions, 1);
    assert.equal(fake.unaryAdmits.length, 0);
  });

  test("each call carries its own trace context: on its Session message, and in the metadata of its unary retry", async () => {
    const { fake, client } = await setup();
    fake.autoAnswer = false;
    const a = { traceparent: `00-${"a1".repeat(16)}-${"b1".repeat(8)}-01`, tracestate: "k=v" };
    const b = { traceparent: `00-${"a2".repeat(16)}-${"b2".repeat(8)}-01` };
    const calls = [client.admit(admitReq("t1"), a), client.admit(admitReq("t2"), b), client.admit(admitReq("t3"))];
    await waitFor(() => fake.held.length === 3, "the calls to arrive");
    assert.deepEqual(fake.held.map((h) => [h.request.traceparent, h.request.tracestate]), [[a.traceparent, "k=v"], [b.traceparent, ""], ["", ""]]);
    fake.endSessions();
    await Promise.all(calls);
    assert.deepEqual(fake.unaryTraceparents, [a.traceparent, b.traceparent, ""]);
  });

  test("an error answer on the stream is the call's error, not retried", async () => {
    const { fake, client } = await setup();
    await assert.rejects(client.admit(admitReq("e1", "bad")), (e: unknown) => e instanceof ControlPlaneError && e.code === grpc.status.INVALID_ARGUMENT && !e.unreachable);
    assert.equal(fake.unaryAdmits.length, 0);
  });

  test("calls in flight when the stream ends fail over to unary calls with the same request id; the stream is reopened", async () => {
    const { fake, client } = await setup();
    fake.autoAnswer = false;
    const calls = [client.admit(admitReq("cut-1")), client.admit(admitReq("cut-2"))];
    await waitFor(() => fake.held.length === 2, "the calls to arrive");
    fake.endSessions();
    const answers = await Promise.all(calls);
    assert.deepEqual(answers.map((a) => [a.requestId, a.message]), [["cut-1", "unary"], ["cut-2", "unary"]]);
    assert.deepEqual(fake.unaryAdmits.map((r) => r.requestId), ["cut-1", "cut-2"]);
    fake.autoAnswer = true;
    await waitFor(() => fake.sessions === 2 && client.connected(), "a new stream");
    assert.equal((await client.admit(admitReq("after"))).message, "session");
  });

  test("a silent control plane: the call fails at its deadline, as unreachable", async () => {
    const { fake, client } = await setup({ timeoutMs: 50 });
    fake.autoAnswer = false;
    await assert.rejects(client.admit(admitReq("slow")), (e: unknown) => e instanceof ControlPlaneError && e.code === grpc.status.DEADLINE_EXCEEDED && e.unreachable);
  });

  test("the control plane going away: link down, calls fail fast as unreachable, link up again with backoff when it is back", async () => {
    const { fake, client } = await setup();
    const changes: boolean[] = [];
    client.onLinkChange((up) => changes.push(up));
    const port = fake.port;
    fake.kill();
    await waitFor(() => !client.connected(), "the link to go down");
    await assert.rejects(client.admit(admitReq("down")), (e: unknown) => e instanceof ControlPlaneError && e.unreachable);
    const revived = new FakeControlPlane();
    fakes.push(revived);
    await revived.start(port);
    await waitFor(() => client.connected(), "the link to come back");
    assert.deepEqual(changes, [false, true]);
    assert.equal((await client.admit(admitReq("back"))).message, "session");
    assert.equal(revived.sessions, 1);
  });

  test("several replicas behind one target: a replica going away moves the Session stream to another; every call is answered", async () => {
    const replicas = [new FakeControlPlane(), new FakeControlPlane()];
    for (const r of replicas) {
      await r.start();
      fakes.push(r);
    }
    const client = new ControlPlaneClient({ address: `ipv4:127.0.0.1:${replicas[0]!.port},127.0.0.1:${replicas[1]!.port}`, timeoutMs: 5_000, reconnectMinMs: 10, reconnectMaxMs: 50 });
    clients.push(client);
    await waitFor(() => client.connected(), "the link");
    assert.equal((await client.admit(admitReq("first"))).message, "session");
    const serving = replicas.findIndex((r) => r.sessions === 1);
    assert.ok(serving >= 0, "the stream is on one of them");
    replicas[serving]!.kill();
    for (let i = 0; i < 20; i++) assert.ok((await client.admit(admitReq(`after-${i}`))).allowed, "every call is answered");
    const other = replicas[1 - serving]!;
    await waitFor(() => other.sessions >= 1, "the stream on the other replica");
    assert.equal((await client.admit(admitReq("moved"))).message, "session");
    await waitFor(() => client.connected(), "the link, on the other replica");
  });
});
