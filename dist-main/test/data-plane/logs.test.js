import assert from "node:assert/strict";
import { execFile, spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";
import { promisify } from "node:util";
import { createLogger } from "../../control-plane/logger.js";
import { adminToken, bundleJson, secret, Stack, waitFor } from "./support/stack.js";
/** Every line both planes write, parsed. */
class LogCapture {
    lines = [];
    write(chunk) {
        this.lines.push(...chunk.split("\n").filter(Boolean));
    }
    get text() {
        return this.lines.join("\n");
    }
    records() {
        return this.lines.map((l) => JSON.parse(l));
    }
}
/**
 * The product's own logger (createLogger) on both planes through real traffic:
 * one JSON line per request with its request id and tenant, and no secret in
 * any line — not the client's API key (valid, revoked or unknown), not the
 * provider's key, not the admin token.
 */
describe("logs: JSON lines with request id and tenant, never a secret", () => {
    const logs = new LogCapture();
    let stack;
    const unknownKey = "sk-unknown-0123456789abcdef0123456789abcdef";
    const tenants = [{ id: "acme", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 10_000_000 }], keys: [{ id: "k-acme" }, { id: "k-old", revoked: true }] }];
    before(async () => {
        stack = await Stack.start({ logs, tenants });
    });
    after(() => stack.stop());
    test("a request's life is logged with its ids, and no credential, provider key or admin token appears anywhere", async () => {
        const { response } = await stack.client("k-acme").chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "Draft claim 1" }] }).withResponse();
        const requestId = response.headers.get("x-request-id");
        const stream = await stack.client("k-acme").chat.completions.create({ model: "gpt-a", stream: true, messages: [{ role: "user", content: "stream it" }] });
        for await (const _ of stream)
            ;
        stack.upA.behaviour = "fail"; // logged as a failover to up-b
        try {
            await stack.client("k-acme").chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "fail over" }] });
        }
        finally {
            stack.upA.behaviour = "ok";
        }
        await assert.rejects(stack.client("k-old").chat.completions.create({ model: "gpt-a", messages: [{ role: "user", content: "revoked" }] }), { status: 401 });
        const unknown = await fetch(`${stack.url}/v1/chat/completions`, {
            method: "POST", headers: { authorization: `Bearer ${unknownKey}`, "x-llm-task": "DRAFT", "content-type": "application/json" },
            body: JSON.stringify({ model: "gpt-a", messages: [{ role: "user", content: "who am I" }] }),
        });
        assert.equal(unknown.status, 401);
        await stack.applyBundle(bundleJson(tenants)); // an admin call: its token must not be logged
        await waitFor(() => logs.records().filter((r) => r.msg === "request settled").length >= 3, "three settle lines");
        const records = logs.records(); // every line is JSON
        for (const r of records) {
            assert.equal(typeof r.level, "number");
            assert.ok(r.service === "data-plane" || r.service === "control-plane", `service of ${JSON.stringify(r)}`);
        }
        const settled = records.find((r) => r.msg === "request settled" && r.requestId === requestId);
        assert.ok(settled, "the non-streamed request's settle line");
        assert.equal(settled.tenant, "acme");
        assert.equal(settled.outcome, "SUCCESS");
        assert.ok(records.some((r) => r.msg?.toString().includes("trying the next route") && r.provider === "up-a"), "the failover is logged");
        assert.ok(records.some((r) => r.msg === "denied" && typeof r.requestId === "string"), "a denial is logged with its request id");
        for (const leak of [secret("k-acme"), secret("k-old"), unknownKey, "sk-provider-a-SECRET", "sk-provider-b-SECRET", adminToken]) {
            assert.ok(!logs.text.includes(leak), `a log line holds ${leak.slice(0, 12)}…`);
        }
    });
    test("secrets in a logged object are redacted wherever they sit", () => {
        const capture = new LogCapture();
        const logger = createLogger({ level: "info", service: "test", destination: capture });
        logger.info({
            credential: "c-1", apiKey: "a-1", secret: "s-1", adminToken: "t-1", authorization: "Bearer b-1",
            headers: { authorization: "Bearer h-1" }, call: { credential: "c-2", apiKey: "a-2" }, providers: [{ name: "p", apiKey: "a-3" }],
        }, "with secrets");
        const [line] = capture.records();
        assert.equal(line.msg, "with secrets");
        for (const value of ["c-1", "a-1", "s-1", "t-1", "b-1", "h-1", "c-2", "a-2", "a-3"])
            assert.ok(!capture.text.includes(value), `${value} logged`);
        assert.equal(line.providers[0].name, "p");
    });
    test("both planes' lines in one process (npm start) are all written, whole, when it exits right after", async () => {
        const logger = fileURLToPath(new URL("../../control-plane/logger.js", import.meta.url));
        const script = `import { createLogger } from ${JSON.stringify(logger)};
      const cp = createLogger({ level: "info", service: "control-plane" });
      const dp = createLogger({ level: "info", service: "data-plane" });
      for (let i = 0; i < 5000; i++) { cp.info({ i }, "line"); dp.info({ i, pad: "x".repeat(i % 300) }, "line"); }
      process.exit(3);`;
        const { stdout } = await promisify(execFile)(process.execPath, ["--input-type=module", "-e", script], { maxBuffer: 64 * 1024 * 1024 }).catch((err) => err);
        const lines = stdout.split("\n").filter(Boolean).map((l) => JSON.parse(l));
        for (const service of ["control-plane", "data-plane"]) {
            const own = lines.filter((l) => l.service === service).map((l) => l.i);
            assert.equal(own.length, 5000, service);
            assert.deepEqual(own, Array.from({ length: 5000 }, (_, i) => i), `${service}: every line, in order`);
        }
    });
    test("a lone line is written within about a second, though the buffer is far from full", async () => {
        const logger = fileURLToPath(new URL("../../control-plane/logger.js", import.meta.url));
        const script = `import { createLogger } from ${JSON.stringify(logger)};
      createLogger({ level: "info", service: "lone-test" }).info("alone");
      setInterval(() => undefined, 1000); // stays up: only the periodic flush can write the line`;
        const child = spawn(process.execPath, ["--input-type=module", "-e", script], { stdio: ["ignore", "pipe", "inherit"] });
        try {
            const line = await new Promise((resolve, reject) => {
                child.stdout.once("data", (chunk) => resolve(chunk.toString()));
                child.once("exit", (code) => reject(new Error(`exited with ${code} before writing`)));
                setTimeout(() => reject(new Error("the line was never written while the process ran")), 30_000).unref();
            });
            assert.equal(JSON.parse(line).msg, "alone");
        }
        finally {
            child.kill("SIGKILL");
        }
    });
});
//# sourceMappingURL=logs.test.js.map