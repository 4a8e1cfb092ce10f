import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import OpenAI from "openai";
import pino from "pino";
import { startControlPlane } from "../../../control-plane/app.js";
import { defaultControlPlaneConfig } from "../../../control-plane/config.js";
import { createLogger } from "../../../control-plane/logger.js";
import { parseProtoJson } from "../../../control-plane/policy/proto-json.js";
import { BundleSchema } from "../../../gen/admission/v1/policy_pb.js";
import { defaultDataPlaneConfig } from "../../../data-plane/config.js";
import { startDataPlane } from "../../../data-plane/server.js";
import { policyClient } from "../../support/grpc-clients.js";
import { MockUpstream } from "./mock-upstream.js";
import { seedPgliteDir } from "../../support/pglite-template.js";
export const adminToken = "dp-test-admin-token-0123456789";
export const admin = { authorization: `Bearer ${adminToken}` };
export const secret = (keyId) => `sk-dp-${keyId}-`.padEnd(48, "x");
/**
 * The bundle of these tests: two providers ("up-a", "up-b") serving the PRO_M
 * class in that order; tenants on limits chosen per test. Prices: 1 micro-USD
 * per input token, 2 per output token.
 */
export function bundleJson(tenants) {
    return {
        models: [
            { name: "gpt-a", modelClass: "PRO_M", provider: "up-a", providerModel: "gpt-a-2024", inputMicrosPerMtok: 1_000_000, outputMicrosPerMtok: 2_000_000 },
            { name: "gpt-b", modelClass: "PRO_M", provider: "up-b", inputMicrosPerMtok: 1_000_000, outputMicrosPerMtok: 2_000_000 },
            { name: "small", modelClass: "BASE_S", provider: "up-a", inputMicrosPerMtok: 100_000, outputMicrosPerMtok: 200_000 },
            { name: "huge", modelClass: "ADVANCED", provider: "up-a", inputMicrosPerMtok: 10_000_000, outputMicrosPerMtok: 20_000_000 },
        ],
        tasks: [{ code: "DRAFT", feature: "DRAFTING" }, { code: "DIAGRAM", feature: "DIAGRAMS" }],
        plans: [{
                code: "PRO", features: ["DRAFTING"],
                taskAccess: [{ task: "DRAFT", modelClasses: ["PRO_M", "BASE_S"] }],
                limits: [
                    { kind: "OUTPUT_TOKENS", window: "REQUEST", value: 500 },
                    { kind: "INPUT_TOKENS", window: "REQUEST", value: 20_000 },
                ],
            }],
        atiTokens: [{ id: "ati-pro", plan: "PRO", status: "ACTIVE" }],
        tenants: tenants.map((t) => ({ id: t.id, atiToken: "ati-pro", status: "ACTIVE", mode: "ENFORCE", limits: t.limits ?? [] })),
        apiKeys: tenants.flatMap((t) => (t.keys ?? [{ id: `k-${t.id}` }]).map((k) => ({ id: k.id, tenant: t.id, secret: secret(k.id), tasks: k.tasks ?? [], revoked: k.revoked ?? false }))),
    };
}
/** The real control plane in-process, two test providers, and the data plane in front of them. */
export class Stack {
    options;
    cp;
    dp;
    upA = new MockUpstream("up-a");
    upB = new MockUpstream("up-b");
    spoolDir = mkdtempSync(join(tmpdir(), "dp-spool-"));
    dataDir;
    cpConfig;
    constructor(options) {
        this.options = options;
        this.dataDir = mkdtempSync(join(tmpdir(), "dp-cp-"));
    }
    static async start(options) {
        const stack = new Stack(options);
        await stack.upA.start();
        await stack.upB.start();
        await stack.startControlPlane();
        await stack.applyBundle(bundleJson(options.tenants));
        stack.dp = await startDataPlane({
            ...defaultDataPlaneConfig, host: "127.0.0.1", port: 0, controlPlaneAddr: `127.0.0.1:${stack.cp.grpcPort}`, spoolDir: stack.spoolDir,
            reconnectMinMs: 20, reconnectMaxMs: 200, replayMinMs: 50, replayMaxMs: 200, ...options.dataPlane,
        }, {
            logger: stack.logger("data-plane"),
            providers: [
                { name: "up-a", baseUrl: stack.upA.baseUrl, apiKey: "sk-provider-a-SECRET" },
                { name: "up-b", baseUrl: stack.upB.baseUrl, apiKey: "sk-provider-b-SECRET" },
            ],
        });
        await waitFor(() => stack.dp.controlPlane.connected(), "the data plane's link to the control plane");
        return stack;
    }
    /** Starts (or restarts, on the same port and data) the control plane. */
    async startControlPlane() {
        this.cpConfig ??= {
            ...defaultControlPlaneConfig, grpcHost: "127.0.0.1", grpcPort: 0, httpPort: 0, adminToken, dataDir: this.dataDir,
            spoolDir: mkdtempSync(join(tmpdir(), "dp-cp-spool-")), logLevel: "silent", shutdownGraceMs: 500, ...this.options.controlPlane,
        };
        // Not persistent: every start gets an empty database, as an in-memory one would (seeded: much faster to create).
        const dataDir = this.options.persistent ? this.dataDir : mkdtempSync(join(this.dataDir, "run-"));
        await seedPgliteDir(dataDir);
        this.cp = await startControlPlane({ ...this.cpConfig, dataDir }, { logger: this.logger("control-plane") });
        this.cpConfig = { ...this.cpConfig, grpcPort: this.cp.grpcPort };
    }
    logger(service) {
        const { logs } = this.options;
        return logs ? createLogger({ level: "debug", service, destination: logs }) : pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" });
    }
    async applyBundle(json) {
        const policy = policyClient(`127.0.0.1:${this.cp.grpcPort}`);
        try {
            await policy.applyBundle({ bundle: parseProtoJson(BundleSchema, json) }, admin);
        }
        finally {
            policy.close();
        }
    }
    client(key, options = {}) {
        return new OpenAI({
            baseURL: `http://127.0.0.1:${this.dp.port}/v1`, apiKey: secret(key), maxRetries: 0,
            defaultHeaders: { ...(options.task === "" ? {} : { "x-llm-task": options.task ?? "DRAFT" }), ...options.headers },
        });
    }
    get url() {
        return `http://127.0.0.1:${this.dp.port}`;
    }
    /** Ledger rows of a tenant, oldest first. */
    async ledger(tenant) {
        const r = await this.cp.database.query("SELECT request_id, model, provider, input_tokens::int AS input_tokens, output_tokens::int AS output_tokens, outcome, estimated, cost_micros::int AS cost_micros FROM usage_ledger WHERE tenant = $1 ORDER BY id", [tenant]);
        return r.rows;
    }
    /** The ledger row of one request, waiting for its settle to land. */
    async row(tenant, requestId) {
        let found;
        await waitFor(async () => (found = (await this.ledger(tenant)).find((r) => r.request_id === requestId)) !== undefined, `the ledger row of ${requestId}`);
        return found;
    }
    async usage(tenant) {
        const policy = policyClient(`127.0.0.1:${this.cp.grpcPort}`);
        try {
            return await policy.getUsage({ tenant }, admin);
        }
        finally {
            policy.close();
        }
    }
    async stop() {
        await this.dp.close();
        await this.cp.stop();
        await this.upA.stop();
        await this.upB.stop();
        rmSync(this.spoolDir, { recursive: true, force: true });
        rmSync(this.cpConfig.spoolDir, { recursive: true, force: true });
        rmSync(this.dataDir, { recursive: true, force: true });
    }
}
/** Polls until the condition holds (not a timing assertion: it only bounds how long a broken build hangs). */
export async function waitFor(check, what, timeoutMs = 15_000) {
    const deadline = Date.now() + timeoutMs;
    while (!(await Promise.resolve().then(check).catch(() => false))) {
        if (Date.now() > deadline)
            throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
    }
}
//# sourceMappingURL=stack.js.map