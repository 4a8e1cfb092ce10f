import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { after, before, describe, test } from "node:test";
import * as jose from "jose";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { LimitKind } from "../gen/admission/v1/policy_pb.js";
import { requireAdmin } from "../control-plane/grpc/call-context.js";
import { CredentialVerifier, sha256Hex } from "../control-plane/credentials.js";
import { ReservationSigner } from "../control-plane/reservation-id.js";
import { admissionClient } from "./support/grpc-clients.js";
import { admin, secret, Stack } from "./data-plane/support/stack.js";
/**
 * Every kind of bad credential, end to end: over gRPC Admit and through the
 * proxy, each denied with the design's reason and status and nothing reserved.
 */
const hsSecret = "hs256-shared-secret-for-tests-0123456789";
const issuer = "https://issuer.example";
const audience = "llm-admission";
const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
const otherRsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
const publicPem = rsa.publicKey.export({ type: "spki", format: "pem" }).toString();
const nowSec = () => Math.floor(Date.now() / 1000);
function jwt(alg, key, claims, options = {}) {
    let builder = new jose.SignJWT({ tenant_id: "acme", ati_id: "ati-pro", ...claims })
        .setProtectedHeader({ alg })
        .setSubject("alice")
        .setIssuer(options.iss ?? issuer)
        .setAudience(options.aud ?? audience)
        .setExpirationTime(options.exp ?? nowSec() + 600);
    if (options.nbf !== undefined)
        builder = builder.setNotBefore(options.nbf);
    return builder.sign(key);
}
const unsigned = (payload) => `${Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url")}.${Buffer.from(JSON.stringify(payload)).toString("base64url")}.`;
describe("credentials end to end: gRPC Admit and the proxy", () => {
    let stack;
    let admission;
    const hs = new TextEncoder().encode(hsSecret);
    before(async () => {
        stack = await Stack.start({
            tenants: [
                { id: "acme", limits: [{ kind: "CONCURRENCY", per: "TENANT", value: 1000 }], keys: [{ id: "k-acme" }, { id: "k-revoked", revoked: true }] },
                { id: "frozen", keys: [{ id: "k-frozen" }] },
            ],
            controlPlane: {
                jwt: { algorithms: ["HS256", "RS256"], hs256Secret: hsSecret, publicKeyPems: [publicPem], issuer, audience, clockToleranceSec: 0 },
            },
        });
        // An API key past its expiry, and a tenant suspended after its keys were issued.
        await stack.applyBundle({
            apiKeys: [{ id: "k-expired", tenant: "acme", secret: secret("k-expired"), expiresAt: "2020-01-01T00:00:00Z" }],
            tenants: [{ id: "frozen", atiToken: "ati-pro", status: "SUSPENDED", mode: "ENFORCE" }],
        });
        admission = admissionClient(`127.0.0.1:${stack.cp.grpcPort}`);
    });
    after(async () => {
        admission.close();
        await stack.stop();
    });
    const cases = [
        { name: "JWT alg none", credential: () => unsigned({ sub: "alice", tenant_id: "acme", iss: issuer, aud: audience, exp: nowSec() + 600 }), reason: DenyReason.UNAUTHENTICATED, status: 401 },
        { name: "JWT HS256 signed with the RS256 public key (HS/RS confusion)", credential: () => jwt("HS256", new TextEncoder().encode(publicPem), {}), reason: DenyReason.UNAUTHENTICATED, status: 401 },
        { name: "JWT RS256 signed by another key", credential: () => jwt("RS256", otherRsa.privateKey, {}), reason: DenyReason.UNAUTHENTICATED, status: 401 },
        { name: "JWT from another issuer", credential: () => jwt("HS256", hs, {}, { iss: "https://evil.example" }), reason: DenyReason.UNAUTHENTICATED, status: 401 },
        { name: "JWT for another audience", credential: () => jwt("HS256", hs, {}, { aud: "someone-else" }), reason: DenyReason.UNAUTHENTICATED, status: 401 },
        { name: "JWT expired", credential: () => jwt("HS256", hs, {}, { exp: nowSec() - 60 }), reason: DenyReason.UNAUTHENTICATED, status: 401 },
        { name: "JWT not yet valid", credential: () => jwt("HS256", hs, {}, { nbf: nowSec() + 600 }), reason: DenyReason.UNAUTHENTICATED, status: 401 },
        { name: "JWT with a tampered payload", credential: async () => {
                const [h, , s] = (await jwt("HS256", hs, {})).split(".");
                return `${h}.${Buffer.from(JSON.stringify({ sub: "alice", tenant_id: "frozen", iss: issuer, aud: audience, exp: nowSec() + 600 })).toString("base64url")}.${s}`;
            }, reason: DenyReason.UNAUTHENTICATED, status: 401 },
        { name: "JWT of a suspended tenant", credential: () => jwt("HS256", hs, { tenant_id: "frozen" }), reason: DenyReason.TENANT_INACTIVE, status: 403 },
        { name: "revoked API key", credential: () => secret("k-revoked"), reason: DenyReason.UNAUTHENTICATED, status: 401 },
        { name: "expired API key", credential: () => secret("k-expired"), reason: DenyReason.UNAUTHENTICATED, status: 401 },
        { name: "unknown API key", credential: () => secret("k-nobody"), reason: DenyReason.UNAUTHENTICATED, status: 401 },
        { name: "API key of a suspended tenant", credential: () => secret("k-frozen"), reason: DenyReason.TENANT_INACTIVE, status: 403 },
    ];
    test("the control cases are admitted: a valid HS256 JWT, a valid RS256 JWT, a live API key", async () => {
        for (const credential of [await jwt("HS256", hs, {}), await jwt("RS256", rsa.privateKey, {}), secret("k-acme")]) {
            const d = await admission.admit({ credential, task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });
            assert.equal(d.allowed, true, d.message);
            await admission.settle({ reservationId: d.reservationId, inputTokens: 10n, outputTokens: 1n, credential });
            const res = await fetch(`${stack.url}/v1/chat/completions`, {
                method: "POST", headers: { authorization: `Bearer ${credential}`, "x-llm-task": "DRAFT", "content-type": "application/json" },
                body: JSON.stringify({ model: "gpt-a", messages: [{ role: "user", content: "hi" }], max_tokens: 5 }),
            });
            assert.equal(res.status, 200);
            await res.arrayBuffer();
        }
    });
    for (const c of cases) {
        test(`${c.name}: ${DenyReason[c.reason]} over gRPC and ${c.status} through the proxy, nothing reserved`, async () => {
            const credential = await c.credential();
            const d = await admission.admit({ credential, task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });
            assert.equal(d.allowed, false);
            assert.equal(DenyReason[d.reason], DenyReason[c.reason], d.message);
            assert.equal(d.httpStatus, c.status);
            assert.ok(d.message.length > 0);
            assert.equal(d.reservationId, "");
            const res = await fetch(`${stack.url}/v1/chat/completions`, {
                method: "POST", headers: { authorization: `Bearer ${credential}`, "x-llm-task": "DRAFT", "content-type": "application/json" },
                body: JSON.stringify({ model: "gpt-a", messages: [{ role: "user", content: "hi" }], max_tokens: 5 }),
            });
            assert.equal(res.status, c.status);
            const body = (await res.json());
            assert.equal(body.error.reason, DenyReason[c.reason]);
            assert.ok(body.error.message);
        });
    }
    test("no reservation is left from any denied credential", async () => {
        const policy = await admission.getEffectivePolicy({ tenant: "acme" }, admin);
        assert.equal(policy.limits.find((l) => l.kind === LimitKind.CONCURRENCY).used, 0n);
    });
});
describe("secrets are compared by hash and in constant time", () => {
    test("an API key is found by the SHA-256 of the secret: the snapshot holds no secret, a near miss fails", async () => {
        const { PolicySnapshot } = await import("../control-plane/policy/policy-snapshot.js");
        const { testBundle } = await import("./support/bundles.js");
        const { create } = await import("@bufbuild/protobuf");
        const { ApiKeySchema } = await import("../gen/admission/v1/policy_pb.js");
        const live = "ak_live-secret-0123456789abcdefghijklmnopqrstuv";
        const bundle = testBundle();
        bundle.apiKeys = [create(ApiKeySchema, { id: "k1", tenant: "acme", user: "alice", secretSha256: sha256Hex(live) })];
        const snapshot = PolicySnapshot.compile(bundle, 1);
        assert.deepEqual([...snapshot.apiKeysByHash.keys()], [sha256Hex(live)]);
        assert.ok(!JSON.stringify([...snapshot.apiKeys.values()], (_k, v) => (typeof v === "bigint" ? String(v) : v)).includes(live), "no secret in memory");
        const verifier = new CredentialVerifier({ algorithms: [], clockToleranceSec: 0 });
        assert.equal((await verifier.authenticate(live, snapshot)).ok, true);
        for (const near of [live.slice(0, -1), `${live}x`, live.toUpperCase(), sha256Hex(live)]) {
            assert.deepEqual(await verifier.authenticate(near, snapshot), { ok: false, message: "invalid API key" });
        }
    });
    test("every secret comparison goes through timingSafeEqual (API key digests, the admin token, reservation MACs)", async () => {
        // Code inspection, held by a test: the functions that compare secrets call timingSafeEqual and nothing weaker.
        const sources = {
            apiKey: CredentialVerifier.prototype.authenticateApiKey.toString(),
            adminToken: requireAdmin.toString(),
            reservationMac: ReservationSigner.prototype.verify.toString(),
        };
        for (const [name, source] of Object.entries(sources)) {
            assert.match(source, /timingSafeEqual\(/, `${name} compares with timingSafeEqual`);
            assert.doesNotMatch(source, /(secret|token|mac|hash\w*)\s*===?\s*\w|\w\s*===?\s*(secret|token|mac|expected|given)\b/i, `${name} has no plain comparison of a secret`);
        }
        // And behaviourally: the admin check refuses a token that differs in length or in its last byte.
        const ctx = (value) => ({ header: (n) => (n === "authorization" ? `Bearer ${value}` : undefined) });
        const token = "admin-token-0123456789abcdef";
        assert.equal(requireAdmin(ctx(token), token), "admin");
        assert.throws(() => requireAdmin(ctx(`${token.slice(0, -1)}g`), token), /not the admin token/);
        assert.throws(() => requireAdmin(ctx(`${token}0`), token), /not the admin token/);
    });
});
//# sourceMappingURL=credentials-end-to-end.test.js.map