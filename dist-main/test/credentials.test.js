import assert from "node:assert/strict";
import { generateKeyPairSync } from "node:crypto";
import { test } from "node:test";
import * as jose from "jose";
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { ApiKeySchema } from "../gen/admission/v1/policy_pb.js";
import { CredentialVerifier, generateApiKeySecret, sha256Hex } from "../control-plane/credentials.js";
import { PolicySnapshot } from "../control-plane/policy/policy-snapshot.js";
import { testBundle } from "./support/bundles.js";
const hsSecret = "s".repeat(40);
const now = Date.UTC(2026, 10, 23, 12);
const rsa = generateKeyPairSync("rsa", { modulusLength: 2048 });
const ec = generateKeyPairSync("ec", { namedCurve: "P-256" });
const pem = (k) => k.export({ type: "spki", format: "pem" }).toString();
function snapshotWithKeys(secret) {
    const b = testBundle();
    b.apiKeys = [
        create(ApiKeySchema, { id: "k-live", tenant: "acme", user: "alice", secretSha256: sha256Hex(secret), tasks: ["DRAFT"] }),
        create(ApiKeySchema, { id: "k-revoked", tenant: "acme", secretSha256: sha256Hex(`${secret}-r`), revoked: true }),
        create(ApiKeySchema, { id: "k-expired", tenant: "acme", secretSha256: sha256Hex(`${secret}-e`), expiresAt: timestampFromMs(now - 1) }),
    ];
    return PolicySnapshot.compile(b, 1);
}
async function sign(alg, key, claims, opts = {}) {
    let jwt = new jose.SignJWT(claims).setProtectedHeader({ alg }).setIssuedAt(Math.floor(now / 1000)).setExpirationTime(opts.exp ?? Math.floor(now / 1000) + 600);
    if (opts.nbf)
        jwt = jwt.setNotBefore(opts.nbf);
    return jwt.sign(key);
}
test("API keys: 256-bit secrets, hash lookup, revocation, expiry, scopes", async () => {
    const secret = generateApiKeySecret();
    assert.ok(Buffer.from(secret.slice(3), "base64url").length >= 32);
    const snapshot = snapshotWithKeys(secret);
    const v = new CredentialVerifier({ algorithms: [], clockToleranceSec: 0 }, () => now);
    const ok = await v.authenticate(secret, snapshot);
    assert.ok(ok.ok);
    assert.deepEqual(ok.ok && [ok.principal.tenant, ok.principal.user, ok.principal.keyId, [...ok.principal.tasks]], ["acme", "alice", "k-live", ["DRAFT"]]);
    assert.deepEqual(await v.authenticate(`${secret}x`, snapshot), { ok: false, message: "invalid API key" });
    assert.match((await v.authenticate(`${secret}-r`, snapshot)).message, /revoked/);
    assert.match((await v.authenticate(`${secret}-e`, snapshot)).message, /expired/);
    assert.equal((await v.authenticate("", snapshot)).ok, false);
});
test("JWT HS256: valid, expired, not yet valid, wrong tenant or ATI token, alg none", async () => {
    const snapshot = snapshotWithKeys(generateApiKeySecret());
    const v = new CredentialVerifier({ algorithms: ["HS256"], hs256Secret: hsSecret, clockToleranceSec: 0 }, () => now);
    const key = new TextEncoder().encode(hsSecret);
    const good = await sign("HS256", key, { sub: "alice", tenant_id: "acme", ati_id: "ati-1" });
    const r = await v.authenticate(good, snapshot);
    assert.deepEqual(r.ok && [r.principal.tenant, r.principal.user, r.principal.keyId], ["acme", "alice", ""]);
    const expired = await sign("HS256", key, { sub: "alice", tenant_id: "acme" }, { exp: Math.floor(now / 1000) - 10 });
    assert.match((await v.authenticate(expired, snapshot)).message, /expired/);
    const future = await sign("HS256", key, { sub: "alice", tenant_id: "acme" }, { nbf: Math.floor(now / 1000) + 300 });
    assert.equal((await v.authenticate(future, snapshot)).ok, false);
    const otherTenant = await sign("HS256", key, { sub: "alice", tenant_id: "nobody" });
    assert.match((await v.authenticate(otherTenant, snapshot)).message, /unknown tenant/);
    const otherAti = await sign("HS256", key, { sub: "alice", tenant_id: "acme", ati_id: "ati-other" });
    assert.match((await v.authenticate(otherAti, snapshot)).message, /ati_id/);
    const wrongKey = await sign("HS256", new TextEncoder().encode("x".repeat(40)), { sub: "alice", tenant_id: "acme" });
    assert.equal((await v.authenticate(wrongKey, snapshot)).ok, false);
    const header = Buffer.from(JSON.stringify({ alg: "none", typ: "JWT" })).toString("base64url");
    const payload = Buffer.from(JSON.stringify({ sub: "alice", tenant_id: "acme", exp: Math.floor(now / 1000) + 600 })).toString("base64url");
    assert.equal((await v.authenticate(`${header}.${payload}.`, snapshot)).ok, false, "alg none is never accepted");
});
test("JWT RS256/ES256 from configured keys; HS/RS confusion is rejected", async () => {
    const snapshot = snapshotWithKeys(generateApiKeySecret());
    const v = new CredentialVerifier({ algorithms: ["RS256", "ES256"], publicKeyPems: [pem(rsa.publicKey), pem(ec.publicKey)], clockToleranceSec: 0 }, () => now);
    const claims = { sub: "bob", tenant_id: "acme" };
    assert.ok((await v.authenticate(await sign("RS256", rsa.privateKey, claims), snapshot)).ok);
    assert.ok((await v.authenticate(await sign("ES256", ec.privateKey, claims), snapshot)).ok);
    // An attacker signs HS256 with the RSA public key as the HMAC secret.
    const confused = await sign("HS256", new TextEncoder().encode(pem(rsa.publicKey)), claims);
    assert.equal((await v.authenticate(confused, snapshot)).ok, false);
    // A key pair nobody configured.
    const stranger = generateKeyPairSync("rsa", { modulusLength: 2048 });
    assert.equal((await v.authenticate(await sign("RS256", stranger.privateKey, claims), snapshot)).ok, false);
});
test("JWT issuer and audience are enforced when configured", async () => {
    const snapshot = snapshotWithKeys(generateApiKeySecret());
    const v = new CredentialVerifier({ algorithms: ["HS256"], hs256Secret: hsSecret, issuer: "https://idp", audience: "llm", clockToleranceSec: 0 }, () => now);
    const key = new TextEncoder().encode(hsSecret);
    assert.ok((await v.authenticate(await sign("HS256", key, { sub: "a", tenant_id: "acme", iss: "https://idp", aud: "llm" }), snapshot)).ok);
    assert.equal((await v.authenticate(await sign("HS256", key, { sub: "a", tenant_id: "acme", iss: "https://evil", aud: "llm" }), snapshot)).ok, false);
    assert.equal((await v.authenticate(await sign("HS256", key, { sub: "a", tenant_id: "acme", iss: "https://idp", aud: "other" }), snapshot)).ok, false);
});
//# sourceMappingURL=credentials.test.js.map