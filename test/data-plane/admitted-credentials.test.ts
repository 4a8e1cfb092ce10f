import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createHash } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { RouteSchema } from "../../gen/admission/v1/admission_pb.js";
import { AdmittedCredentials } from "../../data-plane/admitted-credentials.js";

const routes = (provider: string, model: string) => [create(RouteSchema, { provider, model, providerModel: `${model}-2024` })];
const chat = { path: "/chat/completions", task: "DRAFT", model: "gpt-a" };

function memory(o: { ttlMs?: number; maxCredentials?: number; maxAsksPerCredential?: number } = {}) {
  const clock = { nowMs: 1_000_000 };
  const m = new AdmittedCredentials({ ttlMs: o.ttlMs ?? 60_000, maxCredentials: o.maxCredentials ?? 100, maxAsksPerCredential: o.maxAsksPerCredential, clock: () => clock.nowMs });
  return { m, clock };
}

describe("FAIL_OPEN's memory of admitted credentials", () => {
  test("serves only the credential, path, task and model that were admitted, with that admission's tenant and routes", () => {
    const { m } = memory();
    m.admitted("sk-acme", chat, { tenant: "acme", routes: routes("up-a", "gpt-a") });
    m.admitted("sk-globex", { ...chat, model: "small" }, { tenant: "globex", routes: routes("up-b", "small") });
    assert.deepEqual(m.lookup("sk-acme", chat), { tenant: "acme", routes: routes("up-a", "gpt-a") });
    assert.equal(m.lookup("sk-acme", { ...chat, model: "small" }), undefined, "globex was admitted for small, acme was not");
    assert.equal(m.lookup("sk-acme", { ...chat, task: "DIAGRAM" }), undefined);
    assert.equal(m.lookup("sk-acme", { ...chat, path: "/embeddings" }), undefined);
    assert.equal(m.lookup("sk-unknown", chat), undefined);
    assert.equal(m.lookup("sk-acme ", chat), undefined, "a different string is a different credential");
  });

  test("an admission expires ttlMs after it happened; a new admission renews it", () => {
    const { m, clock } = memory({ ttlMs: 60_000 });
    m.admitted("sk-acme", chat, { tenant: "acme", routes: routes("up-a", "gpt-a") });
    clock.nowMs += 59_999;
    assert.ok(m.lookup("sk-acme", chat));
    m.admitted("sk-acme", chat, { tenant: "acme", routes: routes("up-a", "gpt-a") });
    clock.nowMs += 59_999;
    assert.ok(m.lookup("sk-acme", chat), "renewed by the second admission");
    clock.nowMs += 1;
    assert.equal(m.lookup("sk-acme", chat), undefined);
    assert.equal(m.size(), 0, "the expired entry is dropped");
  });

  test("each ask expires on its own: a recent admission for one model does not keep another's old routes", () => {
    const { m, clock } = memory({ ttlMs: 60_000 });
    m.admitted("sk-acme", chat, { tenant: "acme", routes: routes("up-a", "gpt-a") });
    clock.nowMs += 50_000;
    m.admitted("sk-acme", { ...chat, model: "gpt-b" }, { tenant: "acme", routes: routes("up-b", "gpt-b") });
    clock.nowMs += 10_000;
    assert.equal(m.lookup("sk-acme", chat), undefined);
    assert.ok(m.lookup("sk-acme", { ...chat, model: "gpt-b" }));
  });

  test("forget drops every ask of the credential at once", () => {
    const { m } = memory();
    m.admitted("sk-acme", chat, { tenant: "acme", routes: routes("up-a", "gpt-a") });
    m.admitted("sk-acme", { ...chat, model: "gpt-b" }, { tenant: "acme", routes: routes("up-b", "gpt-b") });
    m.admitted("sk-other", chat, { tenant: "acme", routes: routes("up-a", "gpt-a") });
    m.forget("sk-acme");
    assert.equal(m.lookup("sk-acme", chat), undefined);
    assert.equal(m.lookup("sk-acme", { ...chat, model: "gpt-b" }), undefined);
    assert.ok(m.lookup("sk-other", chat), "other credentials stay");
  });

  test("bounded: past maxCredentials the least recently admitted is forgotten; past maxAsksPerCredential its oldest ask", () => {
    const { m } = memory({ maxCredentials: 3, maxAsksPerCredential: 2 });
    for (const k of ["k1", "k2", "k3"]) m.admitted(k, chat, { tenant: "acme", routes: routes("up-a", "gpt-a") });
    m.admitted("k1", chat, { tenant: "acme", routes: routes("up-a", "gpt-a") }); // k1 is now the most recent
    m.admitted("k4", chat, { tenant: "acme", routes: routes("up-a", "gpt-a") });
    assert.equal(m.size(), 3);
    assert.equal(m.lookup("k2", chat), undefined, "k2 was the least recently admitted");
    for (const k of ["k1", "k3", "k4"]) assert.ok(m.lookup(k, chat), k);
    for (const model of ["a", "b", "c"]) m.admitted("k1", { ...chat, model }, { tenant: "acme", routes: routes("up-a", model) });
    assert.equal(m.lookup("k1", { ...chat, model: "a" }), undefined);
    assert.ok(m.lookup("k1", { ...chat, model: "c" }));
  });

  test("a credential admitted for another tenant than before starts afresh", () => {
    const { m } = memory();
    m.admitted("sk-x", chat, { tenant: "acme", routes: routes("up-a", "gpt-a") });
    m.admitted("sk-x", { ...chat, model: "gpt-b" }, { tenant: "globex", routes: routes("up-b", "gpt-b") });
    assert.equal(m.lookup("sk-x", chat), undefined);
    assert.equal(m.lookup("sk-x", { ...chat, model: "gpt-b" })?.tenant, "globex");
  });

  test("the memory holds no credential and no plain hash of one: an HMAC under a key drawn per instance", () => {
    const secret = "sk-dp-never-in-memory-0123456789abcdef";
    const digestsOf = (m: AdmittedCredentials) => [...(m as unknown as { entries: Map<string, unknown> }).entries.keys()];
    const a = memory().m;
    const b = memory().m;
    a.admitted(secret, chat, { tenant: "acme", routes: routes("up-a", "gpt-a") });
    b.admitted(secret, chat, { tenant: "acme", routes: routes("up-a", "gpt-a") });
    const [da] = digestsOf(a);
    const [db] = digestsOf(b);
    const sha = createHash("sha256").update(secret).digest();
    assert.ok(da && db);
    assert.ok(![secret, sha.toString("hex"), sha.toString("base64"), sha.toString("base64url")].includes(da), "neither the secret nor its SHA-256");
    assert.notEqual(da, db, "another process (instance) has another key");
    assert.ok(a.lookup(secret, chat), "yet the credential is recognised");
  });
});
