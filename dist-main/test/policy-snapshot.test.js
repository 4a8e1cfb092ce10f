import assert from "node:assert/strict";
import { test } from "node:test";
import { LimitKind, LimitSource, Mode, Window } from "../gen/admission/v1/policy_pb.js";
import { BundleSchema } from "../gen/admission/v1/policy_pb.js";
import { PolicySnapshot } from "../control-plane/policy/policy-snapshot.js";
import { BundleValidationError } from "../control-plane/policy/validate-bundle.js";
import { parseProtoJson } from "../control-plane/policy/proto-json.js";
import { testBundle } from "./support/bundles.js";
const limitOf = (s, user, task, kind, window) => s.effectiveLimits(s.tenantContext("acme"), user, task).filter((l) => l.kind === kind && l.window === window);
test("the most specific limit wins: user > tenant > plan", () => {
    const base = testBundle();
    base.tenants[0].limits = parseProtoJson(BundleSchema, { tenants: [{ id: "x", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 5_000_000 }] }] }).tenants[0].limits;
    base.users[0].limits = parseProtoJson(BundleSchema, { users: [{ id: "x", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 42 }] }] }).users[0].limits;
    const s = PolicySnapshot.compile(base, 1);
    const alice = limitOf(s, "alice", "DRAFT", LimitKind.TOKENS, Window.MONTH);
    assert.equal(alice.length, 1);
    assert.equal(alice[0].value, 42);
    assert.equal(alice[0].source, LimitSource.USER);
    assert.deepEqual(alice[0].overrides, ["PLAN=1000000", "TENANT=5000000"]);
    const bob = limitOf(s, "bob", "DRAFT", LimitKind.TOKENS, Window.MONTH);
    assert.equal(bob[0].value, 5_000_000);
    assert.equal(bob[0].source, LimitSource.TENANT);
});
test("-1 lifts an inherited limit and 0 blocks", () => {
    const b = testBundle({
        tenants: [{ id: "acme", atiToken: "ati-1", limits: [{ kind: "REQUESTS", window: "MINUTE", per: "USER", value: -1 }, { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 0 }] }],
    });
    const s = PolicySnapshot.compile(b, 1);
    assert.equal(limitOf(s, "alice", "DRAFT", LimitKind.REQUESTS, Window.MINUTE)[0].value, -1);
    assert.equal(limitOf(s, "alice", "DRAFT", LimitKind.TOKENS, Window.MONTH)[0].value, 0);
});
test("a task-scoped limit and an unscoped one are different meters and both apply", () => {
    const b = testBundle({
        tenants: [{ id: "acme", atiToken: "ati-1", mode: "SOFT", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", task: "DRAFT", value: 10, mode: "SHADOW" }] }],
    });
    const s = PolicySnapshot.compile(b, 1);
    const draft = limitOf(s, "alice", "DRAFT", LimitKind.TOKENS, Window.MONTH);
    assert.deepEqual(draft.map((l) => [l.task, l.value, l.mode]), [["", 1_000_000, Mode.SOFT], ["DRAFT", 10, Mode.SHADOW]]);
    assert.equal(limitOf(s, "alice", "DIAGRAM", LimitKind.TOKENS, Window.MONTH).length, 1, "the DRAFT limit does not apply to DIAGRAM");
});
test("routes: the requested model first, then its class; classes and defaults", () => {
    const s = PolicySnapshot.compile(testBundle(), 1);
    const plan = s.plans.get("PRO");
    const byModel = s.routes(plan, "DRAFT", "m-pro-2");
    assert.deepEqual(byModel.ok && byModel.routes.map((r) => r.model), ["m-pro-2", "m-pro"]);
    const byDefault = s.routes(plan, "DRAFT", "");
    assert.deepEqual(byDefault.ok && byDefault.routes.map((r) => [r.provider, r.model]), [["p1", "m-pro"], ["p2", "m-pro-2"]]);
    const byClass = s.routes(plan, "DRAFT", "BASE_S");
    assert.deepEqual(byClass.ok && byClass.routes.map((r) => r.model), ["m-base"]);
    assert.equal(s.routes(plan, "DIAGRAM", "").ok, false);
    assert.equal(s.routes(plan, "DRAFT", "gpt-unknown").ok, false);
});
test("an invalid bundle is rejected with every problem named by entity and field", () => {
    const b = testBundle({
        tenants: [{ id: "acme", atiToken: "ati-missing" }],
        plans: [{ code: "PRO", features: ["NOPE"], taskAccess: [{ task: "DRAFT", modelClasses: ["PRO_X"] }], limits: [{ kind: "TOKENS", value: 5 }, { kind: "CONCURRENCY", window: "DAY", value: 1 }, { kind: "INPUT_TOKENS", window: "MONTH", value: 1 }] }],
    });
    const err = (() => {
        try {
            PolicySnapshot.compile(b, 1);
        }
        catch (e) {
            return e;
        }
    })();
    assert.ok(err instanceof BundleValidationError);
    const text = err.problems.join("\n");
    assert.match(text, /tenant "acme": field ati_token: unknown ATI token "ati-missing"/);
    assert.match(text, /plan "PRO": field features: unknown feature "NOPE"/);
    assert.match(text, /plan "PRO": field task_access\[0\]\.model_classes: no model has class "PRO_X"/);
    assert.match(text, /plan "PRO": field limits\[0\]\.window: TOKENS needs a window/);
    assert.match(text, /plan "PRO": field limits\[1\]\.window: CONCURRENCY has no window/);
    assert.match(text, /plan "PRO": field limits\[2\]\.window: INPUT_TOKENS is a per-request cap/);
});
test("enum values are accepted with or without their type prefix", () => {
    const a = parseProtoJson(BundleSchema, { plans: [{ code: "P", limits: [{ kind: "LIMIT_KIND_TOKENS", window: "WINDOW_DAY", per: "PER_USER" }] }] });
    const b = parseProtoJson(BundleSchema, { plans: [{ code: "P", limits: [{ kind: "TOKENS", window: "DAY", per: "USER" }] }] });
    assert.deepEqual(a, b);
    assert.equal(a.plans[0].limits[0].kind, LimitKind.TOKENS);
    assert.throws(() => parseProtoJson(BundleSchema, { plans: [{ code: "P", limits: [{ kind: "TOKENZ" }] }] }), /TOKENZ/);
    assert.throws(() => parseProtoJson(BundleSchema, { plans: [{ code: "P", colour: "red" }] }), /colour/);
});
//# sourceMappingURL=policy-snapshot.test.js.map