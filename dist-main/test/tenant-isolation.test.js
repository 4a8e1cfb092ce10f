import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { AdmitRequestSchema, RenewRequestSchema, SettleRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { LimitKind } from "../gen/admission/v1/policy_pb.js";
import { PolicyService } from "../gen/admission/v1/policy_service_pb.js";
import { ControlPlaneClient } from "../data-plane/control-plane-client.js";
import { admin, adminToken, startTestControlPlane } from "./support/control-plane.js";
import { grpcCode } from "./support/grpc-clients.js";
import { scenario, secretOf } from "./support/scenario.js";
import { meterUsed } from "./support/meter-used.js";
/**
 * Tenant A's credential against tenant B's data, over every AdmissionService
 * RPC and transport (unary gRPC, the Session stream, Connect); the admin API
 * without, with a wrong and with a traffic credential; admin changes audited
 * with their actor.
 */
describe("tenant isolation and the admin boundary", () => {
    let t;
    let session;
    const a = secretOf("k-a");
    const b = secretOf("k-b");
    let reservationOfB = "";
    let reservationOfA = "";
    const concurrencyUsed = (tenant) => meterUsed(t.admission, tenant, LimitKind.CONCURRENCY);
    const connect = async (path, body, headers = {}) => {
        const res = await fetch(`http://127.0.0.1:${t.cp.httpPort}${path}`, { method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body) });
        return { status: res.status, body: (await res.json()) };
    };
    /** A reservation id with its payload's tenant replaced, MAC kept. */
    const withTenant = (id, tenant) => {
        const [version, payload, mac] = id.split(".");
        const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
        claims[0] = tenant;
        return `${version}.${Buffer.from(JSON.stringify(claims)).toString("base64url")}.${mac}`;
    };
    before(async () => {
        t = await startTestControlPlane();
        const concurrency = [{ kind: "CONCURRENCY", per: "TENANT", value: 100 }];
        await t.policy.applyBundle({
            bundle: scenario({ id: "tenant-a", limits: concurrency, users: [{ id: "alice" }], keys: [{ id: "k-a", user: "alice" }] }, { id: "tenant-b", limits: concurrency, users: [{ id: "bob" }], keys: [{ id: "k-b", user: "bob" }] }),
        }, admin);
        session = new ControlPlaneClient({ address: t.address });
        const db = await t.admission.admit({ credential: b, task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });
        const da = await t.admission.admit({ credential: a, task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });
        assert.ok(db.allowed && da.allowed);
        reservationOfB = db.reservationId;
        reservationOfA = da.reservationId;
    });
    after(async () => {
        session.close();
        await t.close();
    });
    test("Admit: A's credential always decides for A, whatever the request names", async () => {
        const before = await concurrencyUsed("tenant-b");
        const d = await t.admission.admit({ credential: a, task: "DRAFT", inputTokens: 1n, maxOutputTokens: 1n, attributes: { tenant: "tenant-b", tenant_id: "tenant-b", user: "bob" } });
        assert.equal(d.tenant, "tenant-a");
        assert.equal(d.user, "alice");
        assert.ok(d.meters.every((m) => !m.subject.includes("tenant-b")), "no meter of B in A's decision");
        assert.equal(await concurrencyUsed("tenant-b"), before, "B's meters are untouched");
        await t.admission.settle({ reservationId: d.reservationId, credential: a });
        // The same request id as B's does not return B's decision.
        const replay = await t.admission.admit({ credential: a, task: "DRAFT", requestId: "shared-id" });
        const ofB = await t.admission.admit({ credential: b, task: "DRAFT", requestId: "shared-id" });
        assert.notEqual(replay.reservationId, ofB.reservationId);
        assert.equal(ofB.tenant, "tenant-b");
        await t.admission.settle({ reservationId: replay.reservationId, credential: a });
        await t.admission.settle({ reservationId: ofB.reservationId, credential: b });
    });
    test("Settle and Renew of B's reservation with A's credential: PERMISSION_DENIED on unary gRPC, the Session stream and Connect", async () => {
        assert.equal(await grpcCode(t.admission.settle({ reservationId: reservationOfB, credential: a, inputTokens: 1n })), grpc.status.PERMISSION_DENIED);
        assert.equal(await grpcCode(t.admission.renew({ reservationId: reservationOfB, credential: a, ttlMs: 600000n })), grpc.status.PERMISSION_DENIED);
        await assert.rejects(session.settle(create(SettleRequestSchema, { reservationId: reservationOfB, credential: a })), (err) => err.code === grpc.status.PERMISSION_DENIED);
        await assert.rejects(session.renew(create(RenewRequestSchema, { reservationId: reservationOfB, credential: a })), (err) => err.code === grpc.status.PERMISSION_DENIED);
        const settled = await connect("/admission.v1.AdmissionService/Settle", { reservationId: reservationOfB, credential: a });
        assert.equal(settled.body.code, "permission_denied");
        const renewed = await connect("/admission.v1.AdmissionService/Renew", { reservationId: reservationOfB, credential: a });
        assert.equal(renewed.body.code, "permission_denied");
        assert.equal(await concurrencyUsed("tenant-b"), 1n, "B's lease is still open: nothing above changed it");
    });
    test("forged and tampered reservation ids are NOT_FOUND, never another tenant's lease", async () => {
        const forged = [
            withTenant(reservationOfB, "tenant-a"), // B's lease relabelled as A's
            withTenant(reservationOfA, "tenant-b"), // A's lease relabelled as B's
            `${reservationOfA.split(".").slice(0, 2).join(".")}.${reservationOfB.split(".")[2]}`, // A's claims with B's MAC
            reservationOfB.slice(0, -2),
            `${reservationOfB}.extra`,
            "r1.e30.AAAA",
        ];
        for (const id of forged) {
            for (const credential of [a, b, ""]) {
                assert.equal(await grpcCode(t.admission.settle({ reservationId: id, credential })), grpc.status.NOT_FOUND, `settle ${id.slice(0, 40)}…`);
                assert.equal(await grpcCode(t.admission.renew({ reservationId: id, credential })), grpc.status.NOT_FOUND, `renew ${id.slice(0, 40)}…`);
            }
            await assert.rejects(session.settle(create(SettleRequestSchema, { reservationId: id, credential: a })), (err) => err.code === grpc.status.NOT_FOUND);
        }
        assert.equal(await concurrencyUsed("tenant-a"), 1n);
        assert.equal(await concurrencyUsed("tenant-b"), 1n);
    });
    test("GetEffectivePolicy (usage included) of B with A's credential: PERMISSION_DENIED, by tenant, user or key", async () => {
        for (const req of [{ tenant: "tenant-b" }, { user: "bob" }, { keyId: "k-b" }, { tenant: "tenant-b", user: "bob", keyId: "k-b" }]) {
            assert.equal(await grpcCode(t.admission.getEffectivePolicy({ credential: a, ...req })), grpc.status.PERMISSION_DENIED, JSON.stringify(req));
            const viaConnect = await connect("/admission.v1.AdmissionService/GetEffectivePolicy", { credential: a, ...req });
            assert.equal(viaConnect.body.code, "permission_denied");
        }
        const own = await t.admission.getEffectivePolicy({ credential: a });
        assert.equal(own.tenant, "tenant-a");
        // Without a credential, naming a tenant needs the admin token.
        assert.equal(await grpcCode(t.admission.getEffectivePolicy({ tenant: "tenant-b" })), grpc.status.UNAUTHENTICATED);
        assert.equal(await grpcCode(t.admission.getEffectivePolicy({ tenant: "tenant-b" }, { authorization: `Bearer ${a}` })), grpc.status.PERMISSION_DENIED);
    });
    test("every PolicyService method refuses a missing, a wrong and a traffic credential, on gRPC and Connect", async () => {
        const wrong = `Bearer ${adminToken.slice(0, -1)}X`;
        for (const method of PolicyService.methods) {
            const call = t.policy[method.localName];
            assert.equal(await grpcCode(call({})), grpc.status.UNAUTHENTICATED, `${method.name} without a token`);
            assert.equal(await grpcCode(call({}, { authorization: wrong })), grpc.status.PERMISSION_DENIED, `${method.name} with a wrong token`);
            assert.equal(await grpcCode(call({}, { authorization: `Bearer ${a}` })), grpc.status.PERMISSION_DENIED, `${method.name} with a traffic key`);
            assert.equal(await grpcCode(call({}, { authorization: adminToken })), grpc.status.UNAUTHENTICATED, `${method.name} with the token but no Bearer`);
            const path = `/${PolicyService.typeName}/${method.name}`;
            assert.equal((await connect(path, {})).body.code, "unauthenticated", `${path} without a token`);
            assert.equal((await connect(path, {}, { authorization: `Bearer ${b}` })).body.code, "permission_denied", `${path} with a traffic key`);
        }
    });
    test("admin changes are audited with their actor", async () => {
        const jane = { ...admin, "x-admission-actor": "ops-jane" };
        await t.policy.applyBundle({ bundle: scenario({ id: "tenant-c", keys: [{ id: "k-c" }] }) }, jane);
        const created = await t.policy.createApiKey({ tenant: "tenant-c", id: "k-c2" }, { ...admin, "x-admission-actor": "ops-joe" });
        await t.policy.revokeApiKey({ id: created.apiKey.id }, { ...admin, "x-admission-actor": "ops-ann" });
        await t.policy.applyBundle({ bundle: scenario({ id: "tenant-d" }) }, admin);
        const events = (await t.policy.listAuditEvents({ kind: "admin.", pageSize: 50 }, admin)).events;
        const actorOf = (match) => events.find(match)?.actor;
        assert.equal(actorOf((e) => e.kind === "admin.apply" && e.message.includes("tenant-c")), "admin:ops-jane");
        assert.equal(actorOf((e) => e.kind === "admin.revoke_key"), "admin:ops-ann");
        assert.ok(events.some((e) => e.actor === "admin:ops-joe"), "the key's creation names its actor");
        assert.equal(actorOf((e) => e.kind === "admin.apply" && e.message.includes("tenant-d")), "admin", "no actor header: the admin token itself");
        // A refused admin call changes nothing and records no change.
        await grpcCode(t.policy.deleteTenant({ id: "tenant-b" }, { authorization: `Bearer ${a}` }));
        assert.equal((await t.policy.getTenant({ id: "tenant-b" }, admin)).tenant?.id, "tenant-b");
    });
    test("Admit via the Session stream with A's credential cannot reach B either", async () => {
        const d = await session.admit(create(AdmitRequestSchema, { credential: a, task: "DRAFT", inputTokens: 1n, maxOutputTokens: 1n, attributes: { tenant: "tenant-b" } }));
        assert.equal(d.tenant, "tenant-a");
        await session.settle(create(SettleRequestSchema, { reservationId: d.reservationId, credential: a }));
    });
});
//# sourceMappingURL=tenant-isolation.test.js.map