import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import * as jose from "jose";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
import { Per } from "../gen/admission/v1/policy_pb.js";
import { admin, startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";
import { scenario, secretOf } from "./support/scenario.js";
import { seedPgliteDir } from "./support/pglite-template.js";

const hsSecret = "jwt-subject-namespace-secret-0123456789";
const now = Date.UTC(2026, 10, 23, 12, 0, 0);
const dataDir = mkdtempSync(join(tmpdir(), "adm-jwt-ns-"));
after(() => rmSync(dataDir, { recursive: true, force: true }));

const jwt = (sub: string) =>
  new jose.SignJWT({ sub, tenant_id: "acme" }).setProtectedHeader({ alg: "HS256" }).setExpirationTime(Math.floor(now / 1000) + 3600).sign(new TextEncoder().encode(hsSecret));

async function start(): Promise<TestControlPlane> {
  return startTestControlPlane({ dataDir, config: { dataDir, jwt: { algorithms: ["HS256"], hs256Secret: hsSecret, clockToleranceSec: 0 } }, deps: { clock: () => now } });
}

/** One request per USER and per KEY subject a day: two credentials that share a meter cannot both pass. */
const bundle = scenario({
  id: "acme",
  limits: [{ kind: "REQUESTS", window: "DAY", per: "USER", value: 1 }, { kind: "REQUESTS", window: "DAY", per: "KEY", value: 1 }],
  users: [{ id: "bob" }],
  keys: [{ id: "k-alice" }, { id: "k-bob", user: "bob" }],
});

test("a JWT sub never shares a meter with an API key's own subject (key:<id>), before and after the counters are rebuilt from the ledger", async () => {
  await seedPgliteDir(dataDir);
  let t = await start();
  const admit = async (credential: string) => {
    const d = await t.admission.admit({ credential, task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });
    if (d.allowed) await t.admission.settle({ reservationId: d.reservationId, inputTokens: 10n, outputTokens: 1n });
    return d;
  };
  const userMeter = (d: Awaited<ReturnType<typeof admit>>) => (d.deniedMeter ?? d.meters.find((m) => m.per === Per.USER))!;
  try {
    await t.policy.applyBundle({ bundle }, admin);
    // k-alice has no user: it is its own user, "key:k-alice". A JWT whose sub is that very string is someone else.
    const key = await admit(secretOf("k-alice"));
    assert.equal(key.allowed, true);
    assert.equal(userMeter(key).subject, "key:k-alice");
    const impostor = await admit(await jwt("key:k-alice"));
    assert.equal(impostor.allowed, true, `the JWT has its own USER meter (${impostor.message})`);
    assert.equal(userMeter(impostor).subject, "user:key:k-alice");
    assert.equal(impostor.meters.find((m) => m.per === Per.KEY)!.subject, "jwt:key:k-alice");
    // Escaping keeps subjects apart from each other too.
    const escaped = await admit(await jwt("user:key:k-alice"));
    assert.equal(escaped.allowed, true);
    assert.equal(userMeter(escaped).subject, "user:user:key:k-alice");
    // A JWT sub and a key's id are different KEY meters ("jwt:k-alice" is not "k-alice").
    const sameIdAsKey = await admit(await jwt("k-alice"));
    assert.equal(sameIdAsKey.allowed, true);
    // Whereas a JWT for a user is that user: bob's key and bob's JWT share bob's USER meter.
    assert.equal((await admit(secretOf("k-bob"))).allowed, true);
    const bobByJwt = await admit(await jwt("bob"));
    assert.deepEqual([bobByJwt.allowed, bobByJwt.reason, userMeter(bobByJwt).subject], [false, DenyReason.QUOTA_EXCEEDED, "bob"]);

    // Restarted on the same database with in-memory counters: every meter is rebuilt from the ledger, keyed the same way.
    await t.stop();
    t = await start();
    for (const [credential, subject] of [[secretOf("k-alice"), "key:k-alice"], [await jwt("key:k-alice"), "user:key:k-alice"], [await jwt("user:key:k-alice"), "user:user:key:k-alice"], [await jwt("bob"), "bob"]] as const) {
      const d = await admit(credential);
      assert.deepEqual([d.allowed, d.reason, userMeter(d).subject, userMeter(d).used], [false, DenyReason.QUOTA_EXCEEDED, subject, 1n], `${subject} after the rebuild`);
    }
  } finally {
    await t.stop();
  }
});
