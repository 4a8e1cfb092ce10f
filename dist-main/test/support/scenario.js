import { BundleSchema } from "../../gen/admission/v1/policy_pb.js";
import { parseProtoJson } from "../../control-plane/policy/proto-json.js";
/** Catalog and plans shared by the end-to-end tests. Prices: 1 micro-USD per token in and 2 out for m-pro. */
export const catalogJson = {
    models: [
        { name: "m-pro", modelClass: "PRO_M", provider: "p1", inputMicrosPerMtok: 1_000_000, outputMicrosPerMtok: 2_000_000 },
        { name: "m-pro-2", modelClass: "PRO_M", provider: "p2", inputMicrosPerMtok: 1_000_000, outputMicrosPerMtok: 2_000_000 },
        { name: "m-base", modelClass: "BASE_S", provider: "p1", inputMicrosPerMtok: 100_000, outputMicrosPerMtok: 200_000 },
        { name: "m-adv", modelClass: "ADVANCED", provider: "p1", inputMicrosPerMtok: 10_000_000, outputMicrosPerMtok: 20_000_000 },
    ],
    tasks: [
        { code: "DRAFT", feature: "DRAFTING" },
        { code: "DIAGRAM", feature: "DIAGRAMS" },
        { code: "PRIOR", feature: "PRIOR_ART" },
    ],
    plans: [
        {
            code: "PRO", features: ["DRAFTING", "PRIOR_ART"],
            taskAccess: [{ task: "DRAFT", modelClasses: ["PRO_M", "BASE_S"] }, { task: "PRIOR", modelClasses: ["BASE_S"] }],
            limits: [
                { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 10_000_000 },
                { kind: "OUTPUT_TOKENS", window: "REQUEST", value: 2000 },
                { kind: "INPUT_TOKENS", window: "REQUEST", value: 50_000 },
            ],
        },
    ],
    atiTokens: [
        { id: "ati-pro", plan: "PRO", status: "ACTIVE" },
        { id: "ati-revoked", plan: "PRO", status: "REVOKED" },
        { id: "ati-expired", plan: "PRO", status: "ACTIVE", expiresAt: "2020-01-01T00:00:00Z" },
    ],
};
/** A secret for a test key: deterministic, long enough to import. */
export const secretOf = (keyId) => `sk-test-${keyId}-`.padEnd(48, "0");
/** A bundle with the shared catalog and the given tenants (each key's secret is secretOf(id)). */
export function scenario(...tenants) {
    return parseProtoJson(BundleSchema, {
        ...catalogJson,
        tenants: tenants.map((t) => ({
            id: t.id, atiToken: t.atiToken ?? "ati-pro", status: t.status ?? "ACTIVE", mode: t.mode ?? "ENFORCE",
            ...(t.failurePolicy ? { failurePolicy: t.failurePolicy } : {}), limits: t.limits ?? [],
        })),
        users: tenants.flatMap((t) => (t.users ?? []).map((u) => ({ id: u.id, tenant: t.id, status: u.status ?? "ACTIVE", limits: u.limits ?? [] }))),
        apiKeys: tenants.flatMap((t) => (t.keys ?? []).map((k) => ({
            id: k.id, tenant: t.id, user: k.user ?? "", secret: secretOf(k.id), tasks: k.tasks ?? [], revoked: k.revoked ?? false,
            ...(k.expiresAt ? { expiresAt: k.expiresAt } : {}),
        }))),
    });
}
//# sourceMappingURL=scenario.js.map