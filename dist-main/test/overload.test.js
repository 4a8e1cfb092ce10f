import assert from "node:assert/strict";
import http2 from "node:http2";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create, toBinary } from "@bufbuild/protobuf";
import pino from "pino";
import { AdmitRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { BundleSchema } from "../gen/admission/v1/policy_pb.js";
import { CheckRequestSchema } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import { MemoryCounterStore } from "../control-plane/memory-counter-store.js";
import { parseProtoJson } from "../control-plane/policy/proto-json.js";
import { defaultDataPlaneConfig } from "../data-plane/config.js";
import { ControlPlaneClient } from "../data-plane/control-plane-client.js";
import { startDataPlane } from "../data-plane/server.js";
import { admin, startTestControlPlane } from "./support/control-plane.js";
import { grpcFrame } from "./support/raw-grpc.js";
import { bundleJson, secret, waitFor } from "./data-plane/support/stack.js";
import { MockUpstream } from "./data-plane/support/mock-upstream.js";
/**
 * Counters whose reserve() can be held at a gate: the calls being decided
 * stay in flight as long as the test wants, and the store counts how many
 * were ever inside at once. (A fake peer of the control plane; the bound under
 * test is the control plane's own.)
 */
class GatedCounters extends MemoryCounterStore {
    inside = 0;
    maxInside = 0;
    calls = 0;
    gate;
    open;
    hold() {
        this.gate = new Promise((resolve) => (this.open = resolve));
    }
    release() {
        this.open?.();
        this.gate = undefined;
    }
    async reserve(request) {
        this.calls++;
        this.inside++;
        this.maxInside = Math.max(this.maxInside, this.inside);
        try {
            await this.gate;
            return await super.reserve(request);
        }
        finally {
            this.inside--;
        }
    }
}
const maxInFlight = 4;
const key = secret("k-load");
describe(`overload: ADMISSION_MAX_IN_FLIGHT=${maxInFlight}`, () => {
    const counters = new GatedCounters();
    let t;
    let dp;
    const upA = new MockUpstream("up-a");
    const upB = new MockUpstream("up-b");
    const spoolDir = mkdtempSync(join(tmpdir(), "adm-overload-"));
    const admitReq = (requestId) => ({ credential: key, task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n, ...(requestId ? { requestId } : {}) });
    /** Fills every slot with Admits held at the gate; resolves their results once released. */
    async function saturate() {
        counters.hold();
        const held = Array.from({ length: maxInFlight }, () => t.admission.admit(admitReq()));
        await waitFor(() => counters.inside === maxInFlight, "the slots to fill");
        return { results: Promise.all(held) };
    }
    async function drain(held) {
        counters.release();
        for (const d of await held.results)
            await t.admission.settle({ reservationId: d.reservationId, credential: key });
    }
    before(async () => {
        await upA.start();
        await upB.start();
        t = await startTestControlPlane({ config: { maxInFlight }, deps: { counters } });
        await t.policy.applyBundle({ bundle: parseProtoJson(BundleSchema, bundleJson([{ id: "load", keys: [{ id: "k-load" }] }])) }, admin);
        dp = await startDataPlane({
            ...defaultDataPlaneConfig, host: "127.0.0.1", port: 0, controlPlaneAddr: t.address, spoolDir, reconnectMinMs: 20, reconnectMaxMs: 200, replayMinMs: 50, replayMaxMs: 200,
        }, {
            logger: pino({ level: "silent" }),
            providers: [{ name: "up-a", baseUrl: upA.baseUrl, apiKey: "sk-a" }, { name: "up-b", baseUrl: upB.baseUrl, apiKey: "sk-b" }],
        });
        await waitFor(() => dp.controlPlane.connected(), "the data plane's link");
    });
    after(async () => {
        counters.release();
        await dp.close();
        await t.close();
        await upA.stop();
        await upB.stop();
        rmSync(spoolDir, { recursive: true, force: true });
    });
    test("a unary burst 50x the bound: the excess is shed with RESOURCE_EXHAUSTED while the admitted calls are still held (no queue)", async () => {
        counters.hold();
        const burst = Array.from({ length: maxInFlight * 50 }, () => t.admission.admit(admitReq()).then((d) => d, (err) => err));
        await waitFor(() => counters.inside === maxInFlight, "the slots to fill");
        // Every call beyond the bound is answered now, with the gate still closed.
        const shed = await Promise.all(burst.slice(maxInFlight * 2));
        assert.ok(shed.every((r) => "code" in r && r.code === grpc.status.RESOURCE_EXHAUSTED && /overloaded/.test(r.details)));
        assert.equal(counters.inside, maxInFlight);
        counters.release();
        const results = await Promise.all(burst);
        const admitted = results.filter((r) => "allowed" in r && r.allowed);
        const exhausted = results.filter((r) => "code" in r && r.code === grpc.status.RESOURCE_EXHAUSTED);
        console.log(`unary burst of ${results.length}: ${admitted.length} admitted, ${exhausted.length} RESOURCE_EXHAUSTED`);
        assert.equal(admitted.length, maxInFlight);
        assert.equal(exhausted.length, results.length - maxInFlight);
        assert.equal(counters.maxInside, maxInFlight, "never more calls in flight than the bound");
        for (const d of admitted)
            await t.admission.settle({ reservationId: d.reservationId, credential: key });
    });
    test("the bound is shared: Session stream messages, Connect and ext_authz are shed while the slots are full", async () => {
        const held = await saturate();
        const client = new ControlPlaneClient({ address: t.address });
        try {
            await waitFor(() => client.connected(), "a Session stream");
            const viaSession = await Promise.allSettled(Array.from({ length: 20 }, () => client.admit(create(AdmitRequestSchema, admitReq()))));
            assert.ok(viaSession.every((r) => r.status === "rejected" && r.reason.code === grpc.status.RESOURCE_EXHAUSTED));
        }
        finally {
            client.close();
        }
        const res = await fetch(`http://127.0.0.1:${t.cp.httpPort}/admission.v1.AdmissionService/Admit`, {
            method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ credential: key, task: "DRAFT" }),
        });
        const body = (await res.json());
        assert.equal(res.status, 429);
        assert.equal(body.code, "resource_exhausted");
        const check = await rawCall(t.address, "/envoy.service.auth.v3.Authorization/Check", grpcFrame(toBinary(CheckRequestSchema, create(CheckRequestSchema, {
            attributes: { request: { http: { headers: { authorization: `Bearer ${key}`, "x-llm-task": "DRAFT" } } } },
        }))));
        assert.equal(check.status, grpc.status.RESOURCE_EXHAUSTED);
        assert.equal(counters.maxInside, maxInFlight);
        await drain(held);
    });
    test("a call whose deadline passed before it could run is not run", async () => {
        const before = counters.calls;
        const answer = await rawCall(t.address, "/admission.v1.AdmissionService/Admit", grpcFrame(toBinary(AdmitRequestSchema, create(AdmitRequestSchema, admitReq("late-1")))), { "grpc-timeout": "50m" }, 300);
        assert.equal(answer.status, grpc.status.DEADLINE_EXCEEDED);
        assert.equal(counters.calls, before, "the expired call never reached the counters");
        // And it left nothing behind: the same request id now decides afresh.
        const d = await t.admission.admit(admitReq("late-1"));
        assert.equal(d.replayed, false);
        await t.admission.settle({ reservationId: d.reservationId, credential: key });
    });
    test("the data plane answers 503 with a clear error while the control plane sheds, and serves again afterwards", async () => {
        const held = await saturate();
        const during = await chat();
        assert.equal(during.status, 503);
        assert.equal(during.body.error.code, "unavailable");
        assert.match(during.body.error.message, /unavailable/);
        await drain(held);
        await waitFor(() => dp.controlPlane.connected(), "the Session link");
        const afterwards = await chat();
        assert.equal(afterwards.status, 200);
        assert.equal(counters.maxInside, maxInFlight);
    });
    async function chat() {
        const res = await fetch(`http://127.0.0.1:${dp.port}/v1/chat/completions`, {
            method: "POST", headers: { authorization: `Bearer ${key}`, "x-llm-task": "DRAFT", "content-type": "application/json" },
            body: JSON.stringify({ model: "gpt-a", messages: [{ role: "user", content: "hi" }], max_tokens: 5 }),
        });
        return { status: res.status, body: (await res.json()) };
    }
});
/** One gRPC call by hand; the body can be held back to let a deadline pass first. Resolves with its grpc-status. */
function rawCall(address, path, body, headers = {}, delayBodyMs = 0) {
    return new Promise((resolve, reject) => {
        const session = http2.connect(`http://${address}`);
        session.on("error", reject);
        const stream = session.request({ ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...headers });
        let status;
        let message = "";
        const take = (h) => {
            if (h["grpc-status"] !== undefined) {
                status = Number(h["grpc-status"]);
                message = decodeURIComponent(String(h["grpc-message"] ?? ""));
            }
        };
        stream.on("response", take);
        stream.on("trailers", take);
        stream.on("data", () => undefined);
        stream.on("error", () => undefined);
        stream.on("close", () => {
            session.close();
            if (status === undefined)
                reject(new Error(`${path}: no grpc-status`));
            else
                resolve({ status, message });
        });
        setTimeout(() => {
            if (!stream.destroyed)
                stream.end(body);
        }, delayBodyMs);
    });
}
//# sourceMappingURL=overload.test.js.map