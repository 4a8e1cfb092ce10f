import { BundleSchema } from "../../gen/admission/v1/policy_pb.js";
import { parseProtoJson } from "../../control-plane/policy/proto-json.js";
/** A small catalog used across tests: two tasks, three models, one plan. */
export function testBundle(overrides = {}) {
    return parseProtoJson(BundleSchema, {
        models: [
            { name: "m-pro", modelClass: "PRO_M", provider: "p1", inputMicrosPerMtok: 2_000_000, outputMicrosPerMtok: 8_000_000 },
            { name: "m-pro-2", modelClass: "PRO_M", provider: "p2", inputMicrosPerMtok: 3_000_000, outputMicrosPerMtok: 9_000_000 },
            { name: "m-base", modelClass: "BASE_S", provider: "p1", inputMicrosPerMtok: 100_000, outputMicrosPerMtok: 400_000 },
        ],
        tasks: [
            { code: "DRAFT", feature: "DRAFTING" },
            { code: "DIAGRAM", feature: "DIAGRAMS" },
        ],
        plans: [
            {
                code: "PRO", features: ["DRAFTING"],
                taskAccess: [{ task: "DRAFT", modelClasses: ["PRO_M", "BASE_S"] }],
                limits: [
                    { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000 },
                    { kind: "REQUESTS", window: "MINUTE", per: "USER", value: 100 },
                    { kind: "OUTPUT_TOKENS", window: "REQUEST", value: 2000 },
                ],
            },
        ],
        atiTokens: [{ id: "ati-1", plan: "PRO", status: "ACTIVE" }],
        tenants: [{ id: "acme", atiToken: "ati-1", status: "ACTIVE", mode: "ENFORCE" }],
        users: [{ id: "alice", tenant: "acme" }, { id: "bob", tenant: "acme" }],
        apiKeys: [{ id: "k-alice", tenant: "acme", user: "alice", secretSha256: "0".repeat(64) }],
        ...overrides,
    });
}
//# sourceMappingURL=bundles.js.map