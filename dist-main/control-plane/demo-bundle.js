import { BundleSchema } from "../gen/admission/v1/policy_pb.js";
import { parseProtoJson } from "./policy/proto-json.js";
/**
 * The demo: three tasks, FREE / PRO / ENTERPRISE plans, the mock provider's
 * models, and one tenant on PRO with one user and one API key (whose secret
 * is generated at each start and printed once).
 */
export const demoBundleJson = {
    models: [
        { name: "mock-fast", modelClass: "BASE_S", provider: "mock", inputMicrosPerMtok: 150000, outputMicrosPerMtok: 600000 },
        { name: "mock-standard", modelClass: "BASE_M", provider: "mock", inputMicrosPerMtok: 400000, outputMicrosPerMtok: 1600000 },
        { name: "mock-pro", modelClass: "PRO_M", provider: "mock", inputMicrosPerMtok: 2500000, outputMicrosPerMtok: 10000000 },
        { name: "mock-pro-backup", modelClass: "PRO_M", provider: "mock", inputMicrosPerMtok: 3000000, outputMicrosPerMtok: 12000000 },
        { name: "mock-pro-large", modelClass: "PRO_L", provider: "mock", inputMicrosPerMtok: 5000000, outputMicrosPerMtok: 15000000 },
        { name: "mock-advanced", modelClass: "ADVANCED", provider: "mock", inputMicrosPerMtok: 15000000, outputMicrosPerMtok: 60000000 },
    ],
    tasks: [
        { code: "LLM1_PRIOR_ART", feature: "PRIOR_ART", description: "Prior-art search and summaries" },
        { code: "LLM2_DRAFT", feature: "DRAFTING", description: "Drafting" },
        { code: "LLM3_DIAGRAM", feature: "DIAGRAMS", description: "Diagrams from attached files" },
    ],
    plans: [
        {
            code: "FREE", name: "Free", features: ["PRIOR_ART"],
            taskAccess: [{ task: "LLM1_PRIOR_ART", modelClasses: ["BASE_S"] }],
            limits: [
                { kind: "REQUESTS", window: "MINUTE", per: "USER", value: 10 },
                { kind: "TOKENS", window: "DAY", per: "TENANT", value: 50000 },
                { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 500000 },
                { kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 1000000 },
                { kind: "CONCURRENCY", per: "USER", value: 2 },
                { kind: "INPUT_TOKENS", window: "REQUEST", value: 4000 },
                { kind: "OUTPUT_TOKENS", window: "REQUEST", value: 1024 },
            ],
        },
        {
            code: "PRO", name: "Pro", features: ["PRIOR_ART", "DRAFTING"],
            taskAccess: [
                { task: "LLM1_PRIOR_ART", modelClasses: ["BASE_M", "BASE_S"] },
                { task: "LLM2_DRAFT", modelClasses: ["PRO_M", "BASE_M"] },
            ],
            limits: [
                { kind: "REQUESTS", window: "MINUTE", per: "USER", value: 60 },
                { kind: "TOKENS", window: "MINUTE", per: "TENANT", value: 200000 },
                { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 10000000 },
                { kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 50000000 },
                { kind: "CONCURRENCY", per: "USER", value: 8 },
                { kind: "INPUT_TOKENS", window: "REQUEST", value: 32000 },
                { kind: "OUTPUT_TOKENS", window: "REQUEST", value: 4096 },
            ],
        },
        {
            code: "ENTERPRISE", name: "Enterprise", features: ["PRIOR_ART", "DRAFTING", "DIAGRAMS"],
            taskAccess: [
                { task: "LLM1_PRIOR_ART", modelClasses: ["PRO_M", "BASE_M"] },
                { task: "LLM2_DRAFT", modelClasses: ["PRO_L", "PRO_M"] },
                { task: "LLM3_DIAGRAM", modelClasses: ["ADVANCED", "PRO_L"] },
            ],
            limits: [
                { kind: "REQUESTS", window: "MINUTE", per: "USER", value: 600 },
                { kind: "TOKENS", window: "MINUTE", per: "TENANT", value: 2000000 },
                { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 200000000 },
                { kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 1000000000 },
                { kind: "CONCURRENCY", per: "USER", value: 64 },
                { kind: "INPUT_TOKENS", window: "REQUEST", value: 128000 },
                { kind: "OUTPUT_TOKENS", window: "REQUEST", value: 16384 },
                { kind: "FILES", window: "REQUEST", value: 20 },
                { kind: "AGENT_STEPS", window: "REQUEST", value: 50 },
            ],
        },
    ],
    atiTokens: [
        { id: "ati-free-demo", plan: "FREE", status: "ACTIVE" },
        { id: "ati-pro-demo", plan: "PRO", status: "ACTIVE" },
        { id: "ati-enterprise-demo", plan: "ENTERPRISE", status: "ACTIVE" },
    ],
    tenants: [{ id: "demo", name: "Demo tenant", atiToken: "ati-pro-demo", status: "ACTIVE", mode: "ENFORCE" }],
    users: [{ id: "demo-user", tenant: "demo", status: "ACTIVE" }],
};
export const demoApiKeyId = "demo-key";
export function demoBundle(apiKeySecret) {
    return parseProtoJson(BundleSchema, {
        ...demoBundleJson,
        apiKeys: [{ id: demoApiKeyId, tenant: "demo", user: "demo-user", secret: apiKeySecret, description: "demo key, rotated at every start" }],
    });
}
//# sourceMappingURL=demo-bundle.js.map