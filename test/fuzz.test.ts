import assert from "node:assert/strict";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { request as httpRequest } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fromBinary, fromJsonString, ScalarType, toBinary, toJsonString, type DescMessage, type DescService } from "@bufbuild/protobuf";
import { BinaryWriter } from "@bufbuild/protobuf/wire";
import pino from "pino";
import { AdmissionService, AdmitRequestSchema, AdmitResponseSchema, SessionRequestSchema, SessionResponseSchema } from "../gen/admission/v1/admission_pb.js";
import { BundleSchema, LimitKind } from "../gen/admission/v1/policy_pb.js";
import { PolicyService } from "../gen/admission/v1/policy_service_pb.js";
import { Authorization, CheckRequestSchema, CheckResponseSchema } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import { parseProtoJson } from "../control-plane/policy/proto-json.js";
import { defaultDataPlaneConfig } from "../data-plane/config.js";
import { startDataPlane, type RunningDataPlane } from "../data-plane/server.js";
import { admin } from "./support/control-plane.js";
import { fuzzSeed, Prng } from "./support/prng.js";
import { randomMessage } from "./support/random-message.js";
import { grpcFrame, RawGrpcClient, type RawGrpcAnswer } from "./support/raw-grpc.js";
import { rawHttp, type RawHttpAnswer } from "./support/raw-http.js";
import { startReplica, type Replica } from "./support/replicas.js";
import { bundleJson, secret, waitFor } from "./data-plane/support/stack.js";
import { MockUpstream } from "./data-plane/support/mock-upstream.js";

/**
 * Hostile input against a control plane in its own process and a data plane:
 * broken gRPC framing, random and random-but-valid protobuf, invalid UTF-8,
 * metadata floods, trickled bodies, deep and huge JSON over Connect and the
 * proxy. Seeded: a failure prints FUZZ_SEED=<n>, which replays it.
 */
const seed = fuzzSeed();
const rng = new Prng(seed);
const answerWithinMs = 10_000;
const validKey = secret("k-fz");
const maxBodyBytes = 256 * 1024;

type Target = { service: DescService; method: DescService["methods"][number] };
const targets: Target[] = [AdmissionService, PolicyService, Authorization].flatMap((service) => service.methods.map((method) => ({ service, method })));
const pathOf = (t: Target) => `/${t.service.typeName}/${t.method.name}`;

/** Counts of what was sent and how it was answered, printed at the end. */
const tally = new Map<string, number>();
const count = (key: string) => tally.set(key, (tally.get(key) ?? 0) + 1);

describe(`hostile input (FUZZ_SEED=${seed})`, () => {
  let cp: Replica;
  let dp: RunningDataPlane;
  const upA = new MockUpstream("up-a");
  const upB = new MockUpstream("up-b");
  const dir = mkdtempSync(join(tmpdir(), "adm-fuzz-"));
  let grpcRaw: RawGrpcClient;
  let rssBeforeKb = 0;
  /** Reservations the fuzz itself obtained with the valid key; settled as it goes. */
  const granted: string[] = [];
  const unhandled: unknown[] = [];
  const onUnhandled = (err: unknown) => unhandled.push(err);

  before(async () => {
    process.on("unhandledRejection", onUnhandled);
    process.on("uncaughtException", onUnhandled);
    console.log(`fuzz seed: FUZZ_SEED=${seed}`);
    await upA.start();
    await upB.start();
    cp = await startReplica({
      DATABASE_URL: "", REDIS_URL: "", REDIS_CLUSTER_NODES: "",
      ADMISSION_DATA_DIR: join(dir, "pglite"), ADMISSION_SPOOL_DIR: join(dir, "cp-spool"),
      ADMISSION_JWT_HS256_SECRET: "fuzz-hs256-secret-0123456789abcdefghij",
      ADMISSION_HTTP_REQUEST_TIMEOUT_MS: "1500", ADMISSION_HTTP_HEADERS_TIMEOUT_MS: "1000",
    });
    const bundle = bundleJson([{ id: "fz", limits: [{ kind: "CONCURRENCY", per: "TENANT", value: 100_000 }], keys: [{ id: "k-fz" }] }]);
    await cp.policy.applyBundle({ bundle: parseProtoJson(BundleSchema, bundle) }, admin);
    dp = await startDataPlane({
      ...defaultDataPlaneConfig, host: "127.0.0.1", port: 0, metricsPort: 0, controlPlaneAddr: cp.address, spoolDir: join(dir, "dp-spool"),
      maxBodyBytes, requestTimeoutMs: 1_500, headersTimeoutMs: 1_000, reconnectMinMs: 20, reconnectMaxMs: 200, replayMinMs: 50, replayMaxMs: 200,
    }, {
      logger: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }),
      providers: [{ name: "up-a", baseUrl: upA.baseUrl, apiKey: "sk-up-a" }, { name: "up-b", baseUrl: upB.baseUrl, apiKey: "sk-up-b" }],
    });
    await waitFor(() => dp.controlPlane.connected(), "the data plane's link");
    grpcRaw = new RawGrpcClient(cp.address);
    // Warm up both processes so the memory baseline includes what a first request loads.
    for (let i = 0; i < 5; i++) assert.equal(statusOf(await proxyRequest("POST", "/v1/chat/completions", chatBody("warm up"), keyHeaders())), 200);
    rssBeforeKb = rssKb(cp.process.pid!);
  });

  after(async () => {
    process.off("unhandledRejection", onUnhandled);
    process.off("uncaughtException", onUnhandled);
    console.log(`fuzz seed ${seed}: ${[...tally].sort().map(([k, v]) => `${k}=${v}`).join(" ")}`);
    grpcRaw?.close();
    await dp?.close();
    await cp?.stop();
    await upA.stop();
    await upB.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("gRPC port: broken framing, random bytes, random-but-valid messages, invalid UTF-8, metadata floods, trickled bodies", async () => {
    const cases = 480;
    for (let batch = 0; batch < cases; batch += 8) {
      await Promise.all(Array.from({ length: 8 }, () => grpcCase()));
    }
    // Trickled bodies, abandoned part-way (slow-loris): a few at once.
    await Promise.all(Array.from({ length: 6 }, async () => {
      const target = rng.pick(targets);
      const answer = await grpcRaw.call(pathOf(target), { body: grpcFrame(toBinary(target.method.input, randomMessage(target.method.input, rng))), trickleMs: 20, abandonAfterBytes: 3 + rng.int(8), timeoutMs: answerWithinMs, ownConnection: true });
      count("grpc.slowloris");
      assert.notEqual(answer.kind, "timeout", "a trickled call got no answer and could not be abandoned");
    }));
    await assertServing();
  });

  test("ext_authz Check: random attributes, headers and bodies", async () => {
    for (let i = 0; i < 160; i++) {
      const req = randomMessage(CheckRequestSchema, rng, { maxDepth: 5 });
      const http = req.attributes?.request?.http;
      if (http) {
        if (rng.chance(0.5)) http.headers.authorization = rng.pick([`Bearer ${validKey}`, "Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", `Bearer ${rng.string(40)}`, rng.string(10)]);
        if (rng.chance(0.5)) http.headers["x-llm-task"] = rng.pick(["DRAFT", "DIAGRAM", rng.string(70)]);
        if (rng.chance(0.3)) http.headers["x-llm-max-tokens"] = rng.pick(["-1", "1e309", "99999999999999999999", "12", rng.string(5)]);
        if (rng.chance(0.5)) http.body = randomJsonText(rng);
      }
      const answer = await grpcRaw.call(pathOf({ service: Authorization, method: Authorization.method.check }), { body: grpcFrame(toBinary(CheckRequestSchema, req)), timeoutMs: answerWithinMs });
      count("authz.check");
      const message = assertGrpcAnswer(answer, "Check", true);
      if (message) {
        const res = fromBinary(CheckResponseSchema, message);
        if (res.httpResponse.case === "okResponse") {
          count("authz.allowed");
          const id = res.httpResponse.value.headers.find((h) => h.header?.key === "x-llm-reservation-id")?.header?.value;
          assert.ok(id, "an allowed Check names its reservation");
          await settle(id);
        }
      }
    }
    await assertServing();
  });

  test("Connect JSON on the HTTP port: deep nesting, huge strings, random JSON, invalid UTF-8, malformed HTTP, slow-loris", async () => {
    const admitPath = "/admission.v1.AdmissionService/Admit";
    const slow = Promise.all([
      // A body announced and never sent; one trickled far slower than ADMISSION_HTTP_REQUEST_TIMEOUT_MS allows; headers that never end.
      rawHttp(cp.httpPort, `POST ${admitPath} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n`, { timeoutMs: answerWithinMs }),
      rawHttp(cp.httpPort, `POST ${admitPath} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n`, { body: Buffer.from("{".padEnd(5000, " ")), trickleMs: 100, timeoutMs: answerWithinMs }),
      rawHttp(cp.httpPort, `POST ${admitPath} HTTP/1.1\r\nhost: x\r\n${"x-slow: y\r\n".repeat(500)}`, { trickleMs: 20, timeoutMs: answerWithinMs }),
    ]);
    const malformed = await rawHttp(cp.httpPort, "GARBAGE\r\n\r\n", { timeoutMs: answerWithinMs });
    const flooded = await rawHttp(cp.httpPort, `POST ${admitPath} HTTP/1.1\r\nhost: x\r\nx-flood: ${"a".repeat(64 * 1024)}\r\n\r\n`, { timeoutMs: answerWithinMs });
    for (const [answer, what, status] of [[malformed, "a malformed request line", 400], [flooded, "a header flood", 431]] as const) {
      assert.equal(answer.kind, "response", `${what}: answered`);
      if (answer.kind !== "response") continue;
      assert.equal(answer.status, status, what);
      assert.ok((JSON.parse(answer.body) as { code?: string; message?: string }).message, `${what}: a Connect error body`);
    }
    for (const answer of await slow) {
      count("connect.slowloris");
      assert.equal(answer.kind, "response", "a slow-loris request is answered, not left hanging");
      if (answer.kind !== "response") continue;
      assert.equal(answer.status, 408);
      assert.equal((JSON.parse(answer.body) as { code?: string }).code, "deadline_exceeded");
    }
    for (let i = 0; i < 90; i++) {
      const target = rng.pick(targets.filter((t) => t.service !== Authorization && t.method.methodKind === "unary"));
      let kind = rng.pick(["deep", "huge", "random-json", "invalid-utf8", "valid"] as const);
      const path = kind === "deep" || kind === "huge" ? "/admission.v1.PolicyService/ApplyBundle" : pathOf(target);
      let valid: string | undefined;
      try {
        valid = toJsonString(target.method.input, randomMessage(target.method.input, rng, { maxDepth: 3, maxStringChars: 2000 }));
      } catch {
        // Not every random message has a JSON form (a Timestamp past year 9999): send random JSON instead.
        if (kind === "valid") kind = "random-json";
      }
      const body: Buffer =
        kind === "deep" ? Buffer.from(`{"bundle":{"tenants":[${"[".repeat(20_000 + rng.int(80_000))}`)
          : kind === "huge" ? Buffer.from(JSON.stringify({ bundle: { tenants: [{ id: "x".repeat(1 + rng.int(6_000_000)) }] } }))
            : kind === "random-json" ? Buffer.from(randomJsonText(rng))
              : kind === "invalid-utf8" ? Buffer.concat([Buffer.from('{"credential":"'), Buffer.from([0xc3, 0x28, 0xff, 0xfe]), Buffer.from('"}')])
                : Buffer.from(valid!);
      const headers = { "content-type": "application/json", ...(rng.chance(0.5) ? admin : {}) };
      const res = await httpPost(cp.httpPort, path, body, headers);
      count(`connect.${kind}`);
      if (res.status === 200) {
        // Random JSON may happen to be a valid request (`{}`, or known fields with fitting values).
        assert.ok(kind === "valid" || (kind === "random-json" && parsesAs(target.method.input, body)), `${kind} input to ${path} was answered 200`);
        continue;
      }
      assert.ok(res.status >= 400, `${path}: status ${res.status}`);
      const error = JSON.parse(res.body) as { code?: string; message?: string };
      assert.ok(error.code && error.message, `${path} (${kind}): a Connect error names its code and message, got ${res.body.slice(0, 200)}`);
      assert.notEqual(error.message, "internal error", `${path} (${kind}): a handler failed unexpectedly`);
    }
    await assertServing();
  });

  test("proxy: random paths and methods, oversized, deep and invalid-UTF-8 bodies, header floods, slow-loris", async () => {
    const slow = Promise.all([
      // A body trickled far slower than PROXY_REQUEST_TIMEOUT_MS allows.
      // A body announced and never sent.
      rawHttp(dp.port, `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${validKey}\r\nx-llm-task: DRAFT\r\ncontent-type: application/json\r\ncontent-length: 5000\r\n\r\n`, { timeoutMs: answerWithinMs }),
      rawHttp(dp.port, `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${validKey}\r\nx-llm-task: DRAFT\r\ncontent-length: 5000\r\n\r\n`, { body: Buffer.from(chatBody("slow").padEnd(5000, " ")), trickleMs: 100, timeoutMs: answerWithinMs }),
      // Headers that never end.
      rawHttp(dp.port, `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n${"x-slow: y\r\n".repeat(500)}`, { trickleMs: 20, timeoutMs: answerWithinMs }),
    ]);
    for (let i = 0; i < 260; i++) await proxyCase();
    for (const answer of await slow) {
      count("proxy.slowloris");
      assertJsonError(answer, "a slow-loris request", [408]);
    }
    await assertServing();
  });

  test("afterwards: both processes up, no crash or unexpected error logged, memory bounded, nothing left reserved", async () => {
    assert.equal(cp.process.exitCode, null, "the control plane is still running");
    assert.equal((await httpGet(cp.httpPort, "/healthz")).status, 200);
    assert.equal((await httpGet(dp.port, "/healthz")).status, 200);
    assert.equal(statusOf(await proxyRequest("POST", "/v1/chat/completions", chatBody("still serving"), keyHeaders())), 200);
    const bad = cp.output().split("\n").filter((line) => /Unhandled|uncaught|"level":(50|60)/i.test(line));
    assert.deepEqual(bad, [], "the control plane logged no crash, unhandled rejection or unexpected handler error");
    assert.deepEqual(unhandled, [], "no unhandled rejection or exception in the data plane's process");
    const rssAfterKb = rssKb(cp.process.pid!);
    console.log(`control plane RSS: ${Math.round(rssBeforeKb / 1024)} MB before, ${Math.round(rssAfterKb / 1024)} MB after`);
    assert.ok(rssAfterKb < rssBeforeKb + 300 * 1024, `control plane RSS grew from ${rssBeforeKb} kB to ${rssAfterKb} kB`);
    // Every lease the fuzz obtained was settled, through the proxy or by the fuzz itself.
    await waitFor(() => !dp.spool.pending(), "the data plane's spooled settles");
    await waitFor(async () => (await concurrencyUsed()) === 0n, "no reservation left open");
    const metrics = (await httpGet(cp.httpPort, "/metrics")).body;
    assert.match(metrics, /^admission_active_reservations 0$/m);
    assert.match(metrics, /^admission_rpcs_in_flight 0$/m);
  });

  async function concurrencyUsed(): Promise<bigint> {
    const policy = await cp.admission.getEffectivePolicy({ tenant: "fz" }, admin);
    return policy.limits.find((l) => l.kind === LimitKind.CONCURRENCY)!.used;
  }

  /** One raw gRPC call with one kind of damage. */
  async function grpcCase(): Promise<void> {
    const target = rng.pick(targets);
    const input = target.method.input;
    const stringField = input.fields.find((f) => f.fieldKind === "scalar" && f.scalar === ScalarType.STRING);
    let kind = rng.pick(["valid", "valid", "random-bytes", "bad-length", "huge-length", "compressed", "compressed-identity", "truncated", "invalid-utf8", "metadata-count", "metadata-size", "session"] as const);
    if (kind === "invalid-utf8" && !stringField) kind = "random-bytes";
    const message = randomMessage(input, rng);
    if (input.typeName === AdmitRequestSchema.typeName && rng.chance(0.4)) (message as unknown as { credential: string }).credential = validKey;
    const bytes = toBinary(input, message);
    const headers: Record<string, string | string[]> = rng.chance(0.5) ? { ...admin } : {};
    let body: Buffer;
    let path = pathOf(target);
    switch (kind) {
      case "random-bytes": body = grpcFrame(rng.bytes(rng.size(4096))); break;
      // A prefix shorter than the message: grpc-js decodes the prefix and drops a trailing partial frame, so OK is possible.
      case "bad-length": body = grpcFrame(bytes, { declaredLength: Math.max(0, bytes.length - 1 - rng.int(4)) }); break;
      case "huge-length": body = grpcFrame(bytes, { declaredLength: 0xffffffff - rng.int(1000) }); break;
      // Flagged compressed, but the bytes are not what grpc-encoding names (or it names no codec the server has).
      case "compressed":
        headers["grpc-encoding"] = rng.pick(["gzip", "deflate", "snappy"]);
        body = grpcFrame(bytes, { compressed: true });
        break;
      // Flagged compressed with no grpc-encoding: grpc-js reads it as uncompressed (lenient), so it may be answered OK.
      case "compressed-identity": body = grpcFrame(bytes, { compressed: true }); break;
      case "truncated": body = grpcFrame(bytes, { declaredLength: bytes.length + 1 + rng.int(100) }); break;
      case "invalid-utf8": body = grpcFrame(withInvalidUtf8(stringField!.number, bytes)); break;
      case "metadata-count":
        for (let i = 0; i < 200 + rng.int(3000); i++) headers[`x-flood-${i}`] = rng.string(8).replace(/[^\x21-\x7e]/g, "a");
        body = grpcFrame(bytes);
        break;
      case "metadata-size":
        headers["x-flood"] = "v".repeat(16_000 + rng.int(2_000_000));
        body = grpcFrame(bytes);
        break;
      case "session": {
        path = pathOf({ service: AdmissionService, method: AdmissionService.method.session });
        const frames = Array.from({ length: 1 + rng.int(12) }, () => {
          const m = randomMessage(SessionRequestSchema, rng);
          if (m.call.case === "admit" && rng.chance(0.5)) m.call.value.credential = validKey;
          return grpcFrame(toBinary(SessionRequestSchema, m));
        });
        body = Buffer.concat(rng.chance(0.2) ? [...frames, grpcFrame(rng.bytes(20))] : frames);
        break;
      }
      default: body = grpcFrame(bytes);
    }
    const floods = kind === "metadata-count" || kind === "metadata-size";
    const answer = await grpcRaw.call(path, { headers, body, timeoutMs: answerWithinMs, ownConnection: floods });
    count(`grpc.${kind}`);
    // A stream whose last frame is cut short is ended by grpc-js as if the frame never came: OK is possible there.
    const broken = ["huge-length", "compressed", "invalid-utf8", ...(target.method.methodKind === "unary" ? ["truncated"] : [])];
    const payload = assertGrpcAnswer(answer, `${path} (${kind})`, !broken.includes(kind), floods);
    if (payload && path.endsWith("/Admit")) {
      const d = fromBinary(AdmitResponseSchema, payload);
      if (d.allowed) await settle(d.reservationId);
    }
    if (answer.kind === "status" && path.endsWith("/Session")) {
      for (const m of answer.messages) {
        const r = fromBinary(SessionResponseSchema, m);
        if (r.result.case === "error") assert.ok(r.result.value.message, "a Session error names its cause");
        if (r.result.case === "admit" && r.result.value.allowed) await settle(r.result.value.reservationId);
      }
    }
  }

  /**
   * Asserts a clear answer: a gRPC status, with a message unless OK, and no
   * handler bug behind it. Returns the response message of an OK unary call.
   */
  function assertGrpcAnswer(answer: RawGrpcAnswer, what: string, okAllowed: boolean, resetAllowed = false): Buffer | undefined {
    assert.notEqual(answer.kind, "timeout", `${what}: no answer within ${answerWithinMs} ms`);
    if (answer.kind === "reset") {
      count("grpc.answer.reset");
      assert.ok(resetAllowed, `${what}: the stream was reset (${answer.code}) instead of answered with a status`);
      return undefined;
    }
    assert.equal(answer.kind, "status");
    if (answer.kind !== "status") return undefined;
    assert.ok(answer.grpcStatus !== undefined, `${what}: HTTP ${answer.httpStatus} without grpc-status`);
    count(`grpc.answer.${answer.grpcStatus}`);
    if (answer.grpcStatus === 0) {
      assert.ok(okAllowed, `${what}: broken input was answered OK`);
      return answer.messages[0];
    }
    assert.ok(answer.grpcMessage.length > 0, `${what}: status ${answer.grpcStatus} without a message`);
    assert.doesNotMatch(answer.grpcMessage, /^internal error/, `${what}: a handler failed unexpectedly`);
    return undefined;
  }

  async function settle(reservationId: string): Promise<void> {
    granted.push(reservationId);
    await cp.admission.settle({ reservationId, inputTokens: 1n, outputTokens: 1n });
  }

  /** One proxy request of a random kind; asserts a JSON error for every hostile one. */
  async function proxyCase(): Promise<void> {
    const kind = rng.pick(["path", "method", "oversized", "deep", "invalid-utf8", "random-json", "header-size", "header-count", "garbage", "valid"] as const);
    count(`proxy.${kind}`);
    switch (kind) {
      case "path": {
        const path = rng.pick(["/", "/v1", "/v2/chat/completions", "/v1/chat/completions/../../etc/passwd", "/tasks//v1/chat/completions", `/${encodeURIComponent(rng.string(30))}`, `/v1/${"a/".repeat(500)}`]);
        return assertJsonError(await proxyRequest(rng.pick(["GET", "POST", "PUT"]), path, chatBody("x"), keyHeaders()), `path ${path}`);
      }
      case "method": {
        const method = rng.pick(["GET", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND"]);
        return assertJsonError(await proxyRequest(method, rng.pick(["/v1/chat/completions", "/v1/embeddings", "/v1/models"]).replace(/models$/, method === "GET" ? "completions" : "models"), chatBody("x"), keyHeaders()), `method ${method}`);
      }
      case "oversized":
        return assertJsonError(await proxyRequest("POST", "/v1/chat/completions", chatBody("x".repeat(maxBodyBytes + rng.int(maxBodyBytes))), keyHeaders()), "an oversized body", [413]);
      case "deep": {
        // Under the body limit with the closing brackets too: a deep body must meet the parser, not the size limit.
        const depth = 1_000 + rng.int(maxBodyBytes / 2 - 1_000 - 64);
        return assertJsonError(await proxyRequest("POST", "/v1/chat/completions", `{"messages":${"[".repeat(depth)}${"]".repeat(rng.chance(0.5) ? depth : 0)}}`, keyHeaders()), "deeply nested JSON", [400]);
      }
      case "invalid-utf8": {
        const body = Buffer.concat([Buffer.from('{"model":"gpt-a","messages":[{"role":"user","content":"'), rng.pick([Buffer.from([0xff]), Buffer.from([0xc3, 0x28]), Buffer.from([0xed, 0xa0, 0x80])]), Buffer.from('"}]}')]);
        return assertJsonError(await proxyRequest("POST", "/v1/chat/completions", body, keyHeaders()), "invalid UTF-8", [400]);
      }
      case "random-json":
        return assertJsonError(await proxyRequest("POST", rng.pick(["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]), randomJsonText(rng), keyHeaders()), "random JSON", [400, 401, 403, 413]);
      case "header-size":
        return assertJsonError(await rawHttp(dp.port, `POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\nx-big: ${"h".repeat(17_000 + rng.int(100_000))}\r\ncontent-length: 0\r\n\r\n`, { timeoutMs: answerWithinMs }), "a huge header", [431]);
      case "header-count":
        return assertJsonError(await rawHttp(dp.port, `GET /v1/models HTTP/1.1\r\nhost: x\r\n${Array.from({ length: 2_000 + rng.int(3_000) }, (_, i) => `x-h${i}: ${i}\r\n`).join("")}\r\n`, { timeoutMs: answerWithinMs }), "thousands of headers", [400, 401, 431]);
      case "garbage":
        return assertJsonError(await rawHttp(dp.port, Buffer.concat([Buffer.from(rng.pick(["GET", "\x00\x01", "POST /v1/chat/completions HTTP/9.9", "POST / HTTP/1.1\r\ncontent-length: -5"])), Buffer.from(rng.bytes(64)), Buffer.from("\r\n\r\n")]), { timeoutMs: answerWithinMs }), "garbage bytes", [400, 505]);
      case "valid": {
        const res = await proxyRequest("POST", "/v1/chat/completions", JSON.stringify({ model: rng.pick(["gpt-a", "small", "huge", ""]), messages: [{ role: "user", content: rng.string(rng.size(200)) }], max_tokens: rng.int(5000) }), keyHeaders());
        if (res.kind === "response" && res.status === 200) return;
        return assertJsonError(res, "a well-formed request");
      }
    }
  }

  function assertJsonError(answer: RawHttpAnswer, what: string, statuses?: number[]): void {
    assert.notEqual(answer.kind, "timeout", `${what}: no answer within ${answerWithinMs} ms`);
    assert.equal(answer.kind, "response", `${what}: the connection closed without an answer (${answer.kind === "closed" ? JSON.stringify(answer.received) : ""})`);
    if (answer.kind !== "response") return;
    count(`proxy.answer.${answer.status}`);
    assert.ok(answer.status >= 400, `${what}: answered ${answer.status}`);
    if (statuses) assert.ok(statuses.includes(answer.status), `${what}: answered ${answer.status}, expected one of ${statuses}`);
    if (answer.status === 505 || answer.headers["content-length"] === "0") return;
    const error = (JSON.parse(answer.body) as { error?: { message?: string; code?: string } }).error;
    assert.ok(error?.message, `${what}: a JSON error body with a message, got ${answer.body.slice(0, 200)}`);
  }

  function proxyRequest(method: string, path: string, body: string | Buffer, headers: Record<string, string>): Promise<RawHttpAnswer> {
    return httpCall(dp.port, method, path, Buffer.isBuffer(body) ? body : Buffer.from(body), headers);
  }

  async function assertServing(): Promise<void> {
    assert.equal(cp.process.exitCode, null, "the control plane process is still up");
    assert.equal((await httpGet(cp.httpPort, "/healthz")).status, 200);
    assert.equal((await proxyRequest("POST", "/v1/chat/completions", chatBody("probe"), keyHeaders())).kind === "response", true);
  }
});

function statusOf(answer: RawHttpAnswer): number | string {
  return answer.kind === "response" ? answer.status : answer.kind;
}

function keyHeaders(): Record<string, string> {
  return { authorization: `Bearer ${validKey}`, "x-llm-task": "DRAFT", "content-type": "application/json" };
}

function chatBody(content: string): string {
  return JSON.stringify({ model: "gpt-a", messages: [{ role: "user", content }], max_tokens: 20 });
}

/** Random JSON text: valid or not, objects, arrays, odd numbers, long strings. */
function randomJsonText(rng: Prng): string {
  const value = (depth: number): string => {
    switch (depth > 4 ? rng.int(4) : rng.int(7)) {
      case 0: return rng.pick(["null", "true", "-0", "1e400", "-1", "9007199254740993", "0.5"]);
      case 1: return JSON.stringify(rng.string(rng.size(500)));
      case 2: return `"${rng.string(5)}`;
      case 3: return String(rng.int(1e9) - 5e8);
      case 4: return `[${Array.from({ length: rng.size(6) }, () => value(depth + 1)).join(",")}]`;
      default: return `{${Array.from({ length: rng.size(6) }, () => `${JSON.stringify(rng.pick(["model", "messages", "max_tokens", "prompt", "input", "n", "stream", "bundle", "credential", rng.string(6)]))}:${value(depth + 1)}`).join(",")}}`;
    }
  };
  return value(0);
}

/** The message's bytes followed by one of its string fields holding bytes that are not UTF-8. */
function withInvalidUtf8(fieldNumber: number, bytes: Uint8Array): Uint8Array {
  const w = new BinaryWriter();
  w.raw(bytes);
  w.uint32((fieldNumber << 3) | 2).bytes(new Uint8Array([0x61, 0xff, 0xfe, 0xc3, 0x28, 0xed, 0xa0, 0x80]));
  return w.finish();
}

function parsesAs(schema: DescMessage, body: Buffer): boolean {
  try {
    fromJsonString(schema, body.toString("utf8"));
    return true;
  } catch {
    return false;
  }
}

function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0);
}

function httpCall(port: number, method: string, path: string, body: Buffer, headers: Record<string, string>): Promise<RawHttpAnswer> {
  return new Promise((resolve) => {
    const req = httpRequest({ host: "127.0.0.1", port, method, path, agent: false, headers: { ...headers, "content-length": String(body.length) }, timeout: answerWithinMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ kind: "response", status: res.statusCode ?? 0, headers: res.headers as Record<string, string>, body: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", () => resolve({ kind: "closed", received: "" }));
    });
    req.on("timeout", () => {
      req.destroy();
      resolve({ kind: "timeout" });
    });
    // The server may answer (413) and close before the whole body is written.
    req.on("error", (err) => resolve({ kind: "closed", received: String(err) }));
    req.end(body);
  });
}

async function httpPost(port: number, path: string, body: Buffer, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  const answer = await httpCall(port, "POST", path, body, headers);
  if (answer.kind !== "response") throw new Error(`POST ${path}: ${answer.kind}`);
  return answer;
}

async function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  const answer = await httpCall(port, "GET", path, Buffer.alloc(0), {});
  if (answer.kind !== "response") throw new Error(`GET ${path}: ${answer.kind}`);
  return answer;
}
