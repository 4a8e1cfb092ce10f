import { BundleSchema } from "../../gen/admission/v1/policy_pb.js";
import { sha256Hex } from "../../control-plane/credentials.js";
import { parseProtoJson } from "../../control-plane/policy/proto-json.js";
import { catalogJson, secretOf } from "../support/scenario.js";
/**
 * The plan every benchmark tenant is on: nine metered limits, so each decision
 * reserves nine meters (requests per key and user, tokens, budget, concurrency
 * per tenant), high enough never to deny. OUTPUT_TOKENS per request is a check,
 * not a meter.
 */
export const benchPlanLimits = [
    { kind: "REQUESTS", window: "MINUTE", per: "KEY", value: 1e12 },
    { kind: "REQUESTS", window: "HOUR", per: "USER", value: 1e12 },
    { kind: "REQUESTS", window: "DAY", per: "TENANT", value: 1e12 },
    { kind: "TOKENS", window: "MINUTE", per: "TENANT", value: 1e15 },
    { kind: "TOKENS", window: "DAY", per: "USER", value: 1e15 },
    { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1e15 },
    { kind: "BUDGET_MICROS", window: "DAY", per: "TENANT", value: 1e15 },
    { kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 1e15 },
    { kind: "CONCURRENCY", per: "TENANT", value: 1e9 },
    { kind: "OUTPUT_TOKENS", window: "REQUEST", value: 4000 },
];
export const metersPerDecision = benchPlanLimits.filter((l) => l.kind !== "OUTPUT_TOKENS").length;
/** Key i's id; its secret is secretOf(id). */
export const keyId = (i) => `bk${i}`;
/**
 * A realistic bundle: the shared catalog, the bench plan, `tenants` tenants and
 * `keys` users with one key each. Keys carry the SHA-256 of their secret, as an
 * export would, so loading 100,000 of them does not hash on the way in.
 */
export function benchBundle(sizes) {
    const tenantOf = (i) => `bt${i % sizes.tenants}`;
    return parseProtoJson(BundleSchema, {
        ...catalogJson,
        plans: [{ ...catalogJson.plans[0], code: "PRO", limits: benchPlanLimits }],
        tenants: Array.from({ length: sizes.tenants }, (_, i) => ({ id: `bt${i}`, atiToken: "ati-pro", status: "ACTIVE", mode: "ENFORCE" })),
        users: Array.from({ length: sizes.keys }, (_, i) => ({ id: `bu${i}`, tenant: tenantOf(i), status: "ACTIVE" })),
        apiKeys: Array.from({ length: sizes.keys }, (_, i) => ({
            id: keyId(i), tenant: tenantOf(i), user: `bu${i}`, secretSha256: sha256Hex(secretOf(keyId(i))),
        })),
    });
}
//# sourceMappingURL=bundle.js.map