import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Outcome, SettleRequestSchema } from "../../gen/admission/v1/admission_pb.js";
import { SettleSpool } from "../../data-plane/settle-spool.js";
const settle = (n) => create(SettleRequestSchema, { reservationId: `r1.${n}`, inputTokens: BigInt(n), outputTokens: 2n, outcome: Outcome.SUCCESS, credential: "sk-live-SECRET" });
describe("data plane: the settle spool", () => {
    const dirs = [];
    const dir = () => {
        const d = mkdtempSync(join(tmpdir(), "spool-test-"));
        dirs.push(d);
        return d;
    };
    after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
    test("appends are durable JSON lines without the credential, replayed in order", async () => {
        const d = dir();
        const spool = new SettleSpool(d);
        await Promise.all([1, 2, 3].map((n) => spool.append(settle(n))));
        assert.equal(spool.size(), 3);
        const text = readFileSync(join(d, "settles.jsonl"), "utf8");
        assert.equal(text.trim().split("\n").length, 3);
        assert.ok(!text.includes("SECRET"));
        const sent = [];
        const report = await spool.replay(async (req) => (sent.push(req), "delivered"));
        assert.deepEqual(report, { delivered: 3, dropped: 0, remaining: 0 });
        assert.deepEqual(sent.map((r) => r.inputTokens).sort(), [1n, 2n, 3n]);
        assert.equal(sent[0].credential, "");
        assert.deepEqual(readdirSync(d), []);
        assert.equal(spool.pending(), false);
    });
    test("a replay stops at the first settle to retry, keeps it and the rest, and drops the refused", async () => {
        const spool = new SettleSpool(dir());
        for (const n of [1, 2, 3, 4])
            await spool.append(settle(n));
        const answers = { "r1.1": "delivered", "r1.2": "drop", "r1.3": "retry" };
        const first = await spool.replay(async (req) => answers[req.reservationId] ?? "delivered");
        assert.deepEqual(first, { delivered: 1, dropped: 1, remaining: 2 });
        await spool.append(settle(5));
        assert.equal(spool.size(), 3);
        const seen = [];
        const second = await spool.replay(async (req) => (seen.push(req.reservationId), "delivered"));
        assert.deepEqual(seen, ["r1.3", "r1.4", "r1.5"], "the interrupted file first, then new appends");
        assert.deepEqual(second, { delivered: 3, dropped: 0, remaining: 0 });
    });
    test("after a crash: both files are picked up at start, a torn last line is skipped", async () => {
        const d = dir();
        const before = new SettleSpool(d);
        await before.append(settle(1));
        writeFileSync(join(d, "settles.replaying.jsonl"), readFileSync(join(d, "settles.jsonl")));
        appendFileSync(join(d, "settles.jsonl"), '{"reservationId":"r1.tor');
        const after = new SettleSpool(d);
        assert.equal(after.size(), 3);
        const seen = [];
        const report = await after.replay(async (req) => (seen.push(req.reservationId), "delivered"));
        assert.deepEqual(seen, ["r1.1", "r1.1"], "the interrupted replay, then the appends: a duplicate is harmless, Settle is idempotent");
        assert.deepEqual(report, { delivered: 2, dropped: 1, remaining: 0 });
        assert.equal(after.pending(), false);
    });
});
//# sourceMappingURL=settle-spool.test.js.map