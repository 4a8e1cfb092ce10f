import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { create, toBinary } from "@bufbuild/protobuf";
import { AdmitRequestSchema, AdmitResponseSchema, MeterSchema } from "../../gen/admission/v1/admission_pb.js";
import { LimitKind, Window } from "../../gen/admission/v1/policy_pb.js";
import { DataPlaneConfigError, loadDataPlaneConfig, parseProviders, parseTaskRoutes } from "../../data-plane/config.js";
import { admitRequestFor, parseLlmRequest, rewriteBody } from "../../data-plane/openai-request.js";
import { matchRoute } from "../../data-plane/routes.js";
import { decisionHeaders } from "../../data-plane/rate-limit-headers.js";
import { countInputTokens, countTextTokens } from "../../control-plane/token-counter.js";
const parse = (path, body) => parseLlmRequest(path, Buffer.from(JSON.stringify(body)));
describe("data plane: request shaping, headers and configuration", () => {
    test("token counts: chat overhead per message, parts, special tokens as text, tokenized prompts", () => {
        const hello = countTextTokens("hello");
        assert.equal(countInputTokens("/chat/completions", { messages: [{ role: "user", content: "hello" }] }), 3 + 3 + countTextTokens("user") + hello);
        assert.equal(countInputTokens("/chat/completions", { messages: [{ role: "user", content: [{ type: "text", text: "hello" }, { type: "image_url", image_url: { url: "x" } }] }] }), 6 + countTextTokens("user") + hello + 85);
        assert.ok(countTextTokens("<|endoftext|>") > 1, "a special token in user text is counted as text");
        assert.equal(countInputTokens("/completions", { prompt: [[1, 2, 3], "hello"] }), 3 + hello);
        assert.equal(countInputTokens("/embeddings", { input: ["hello", "hello"] }), 2 * hello);
    });
    test("rewrite: routed model, cap split over n, the client's field kept, usage on streams", () => {
        const req = parse("/chat/completions", { model: "x", n: 3, max_completion_tokens: 9000, stream: true, stream_options: { foo: 1 }, messages: [{ role: "user", content: "hi" }] });
        assert.equal(req.maxTokens, 9000);
        const body = JSON.parse(rewriteBody(req, { providerModel: "gpt-x-2024", maxOutputTokens: 1000 }).toString());
        assert.deepEqual([body.model, body.max_completion_tokens, body.max_tokens, body.stream_options], ["gpt-x-2024", 333, undefined, { foo: 1, include_usage: true }]);
        const open = JSON.parse(rewriteBody(req, { providerModel: "m" }).toString());
        assert.equal(open.max_completion_tokens, 9000, "no decision (FAIL_OPEN): the client's value stands");
        const embedding = parse("/embeddings", { input: "x", stream: true });
        assert.equal(embedding.stream, false);
        assert.equal(JSON.parse(rewriteBody(embedding, { providerModel: "e", maxOutputTokens: 5 }).toString()).max_tokens, undefined);
    });
    test("the Admit of a request: what create() would build, every field set", () => {
        const req = parse("/chat/completions", { model: "gpt-a", n: 2, max_tokens: 100, messages: [{ role: "user", content: "hi" }] });
        const who = { requestId: "dp-1", credential: "sk-1", task: "DRAFT", attributes: { route: "/chat/completions" } };
        const admit = admitRequestFor(req, who);
        const expected = create(AdmitRequestSchema, { ...who, model: "gpt-a", inputTokens: BigInt(req.inputTokens), maxOutputTokens: 200n });
        assert.deepEqual(admit, expected);
        assert.deepEqual(toBinary(AdmitRequestSchema, admit), toBinary(AdmitRequestSchema, expected));
    });
    test("validation names the field", () => {
        assert.deepEqual(parse("/chat/completions", { messages: [] }), { error: "messages must be a non-empty array", param: "messages" });
        assert.equal(parse("/chat/completions", { messages: [{}], n: 0 }).param, "n");
        assert.equal(parse("/chat/completions", { messages: [{}], stream: "yes" }).param, "stream");
        assert.equal(parse("/chat/completions", { messages: [{}], model: "m".repeat(129) }).param, "model");
    });
    test("x-ratelimit headers from the tightest meter of each kind; Retry-After and retry-after-ms on a denial", () => {
        const meter = (kind, window, limit, remaining, resetMs) => create(MeterSchema, { kind, window, limit: BigInt(limit), remaining: BigInt(remaining), used: BigInt(limit - remaining), resetMs: BigInt(resetMs) });
        const meters = [
            meter(LimitKind.TOKENS, Window.MONTH, 1_000_000, 900_000, 86_400_000),
            meter(LimitKind.TOKENS, Window.MINUTE, 10_000, 2_000, 30_000),
            meter(LimitKind.REQUESTS, Window.MINUTE, 60, 59, 1_500),
        ];
        const allowed = decisionHeaders(create(AdmitResponseSchema, { allowed: true, meters, warnings: ["tokens at 80%\r\nx-evil: 1"] }), "dp-1");
        assert.equal(allowed["x-request-id"], "dp-1");
        assert.deepEqual([allowed["x-ratelimit-limit-tokens"], allowed["x-ratelimit-remaining-tokens"]], ["10000", "2000"], "the tightest tokens meter");
        assert.match(allowed["x-ratelimit-reset-tokens"], /^30(\.0+)?s$/);
        assert.deepEqual([allowed["x-ratelimit-limit-requests"], allowed["x-ratelimit-remaining-requests"]], ["60", "59"]);
        assert.equal(allowed["x-admission-warnings"], "tokens at 80%??x-evil: 1", "no CR/LF reaches a header");
        assert.equal(allowed["retry-after"], undefined);
        const denied = decisionHeaders(create(AdmitResponseSchema, { allowed: false, meters, retryAfterMs: 1200n }), "dp-2");
        assert.deepEqual([denied["retry-after"], denied["retry-after-ms"]], ["2", "1200"]);
    });
    test("routes: /v1, /tasks/<TASK>/v1 and configured prefixes", () => {
        const routes = parseTaskRoutes("/draft=LLM2_DRAFT,/draft/long=LLM3_DIAGRAM");
        assert.deepEqual(matchRoute("/v1/chat/completions", routes), { path: "/chat/completions", task: undefined });
        assert.deepEqual(matchRoute("/tasks/LLM1_PRIOR_ART/v1/embeddings", routes), { path: "/embeddings", task: "LLM1_PRIOR_ART" });
        assert.deepEqual(matchRoute("/draft/long/v1/completions", routes), { path: "/completions", task: "LLM3_DIAGRAM" });
        assert.deepEqual(matchRoute("/draft/v1/chat/completions", routes), { path: "/chat/completions", task: "LLM2_DRAFT" });
        assert.equal(matchRoute("/other/v1/chat/completions", routes), undefined);
        assert.throws(() => parseTaskRoutes("/v1=X"), DataPlaneConfigError);
    });
    test("configuration: defaults, validation, provider keys from the environment", () => {
        const d = loadDataPlaneConfig({});
        assert.deepEqual([d.port, d.controlPlaneAddr, d.failurePolicy, d.providers], [8080, "127.0.0.1:50051", "FAIL_CLOSED", undefined]);
        assert.equal(loadDataPlaneConfig({ PROXY_FAILURE_POLICY: "fail_open" }).failurePolicy, "FAIL_OPEN");
        assert.throws(() => loadDataPlaneConfig({ PROXY_PORT: "http" }), /PROXY_PORT/);
        for (const target of ["cp:50051", "[::1]:50051", "dns:///cp-headless.admission.svc:50051", "ipv4:10.0.0.5:50051,10.0.0.6:50051", "unix:/run/cp.sock"]) {
            assert.equal(loadDataPlaneConfig({ CONTROL_PLANE_ADDR: target }).controlPlaneAddr, target);
        }
        for (const bad of ["cp", "http://cp:50051", "cp:port", "ipv4:"])
            assert.throws(() => loadDataPlaneConfig({ CONTROL_PLANE_ADDR: bad }), /CONTROL_PLANE_ADDR/);
        assert.throws(() => loadDataPlaneConfig({ PROXY_DEFAULT_TASK: "a b" }), /PROXY_DEFAULT_TASK/);
        const providers = parseProviders({ providers: [{ name: "openai", baseUrl: "https://api.openai.com/v1/", apiKeyEnv: "OPENAI_API_KEY" }, { name: "ollama", baseUrl: "http://localhost:11434/v1" }] }, { OPENAI_API_KEY: "sk-1" });
        assert.deepEqual(providers.map((p) => [p.name, p.baseUrl, p.apiKey]), [["openai", "https://api.openai.com/v1", "sk-1"], ["ollama", "http://localhost:11434/v1", ""]]);
        assert.throws(() => parseProviders({ providers: [{ name: "openai", baseUrl: "https://x/v1", apiKeyEnv: "MISSING" }] }, {}), /MISSING/);
        assert.throws(() => parseProviders({ providers: [{ name: "a", baseUrl: "ftp://x" }] }, {}), /http or https/);
    });
});
//# sourceMappingURL=request-shaping.test.js.map