import assert from "node:assert/strict";
import { describe, test } from "node:test";
import pino from "pino";
import { AuditLog } from "../../control-plane/store/audit-log.js";
import { backends, withDatabase } from "../support/databases.js";
/** A pino logger whose lines land in an array, synchronously. */
function capturingLogger() {
    const lines = [];
    const logger = pino({ level: "info" }, { write: (s) => void lines.push(JSON.parse(s)) });
    return { logger, lines };
}
const silent = pino({ level: "silent" });
async function eventually(check, what, timeoutMs = 15_000) {
    const deadline = Date.now() + timeoutMs;
    while (!check()) {
        if (Date.now() > deadline)
            throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
    }
}
for (const backend of backends()) {
    describe(`audit log on ${backend.name}`, { skip: backend.skip }, () => {
        test("record logs at info at once, returns without waiting, and the event reaches the table in the background", () => withDatabase(backend, async (db) => {
            const { logger, lines } = capturingLogger();
            const audit = new AuditLog({ db, logger, clock: () => Date.UTC(2026, 10, 10, 12) });
            try {
                const returned = audit.record({ kind: "admin.apply", actor: "ops", tenant: "acme", message: "applied bundle", attributes: { version: "7" } });
                assert.equal(returned, undefined);
                assert.deepEqual(lines.map((l) => [l.level, l.audit, l.msg, l.tenant, l.actor, l.attributes]), [[30, "admin.apply", "applied bundle", "acme", "ops", { version: "7" }]]);
                await audit.flush();
                const { rows } = await db.query("SELECT count(*) AS n FROM audit_events");
                assert.equal(rows[0].n, 1);
                const [event] = await audit.list({ pageSize: 10 });
                assert.deepEqual({ ...event, id: 0 }, {
                    id: 0, atMs: Date.UTC(2026, 10, 10, 12), kind: "admin.apply", actor: "ops", tenant: "acme", message: "applied bundle", attributes: { version: "7" },
                });
            }
            finally {
                await audit.close();
            }
        }));
        test("list: newest first, paged with beforeId, filtered by tenant, kind prefix (literally) and time", () => withDatabase(backend, async (db) => {
            let nowMs = Date.UTC(2026, 10, 1);
            const audit = new AuditLog({ db, logger: silent, clock: () => (nowMs += 1_000) });
            try {
                for (let i = 0; i < 25; i++) {
                    audit.record({ kind: i % 2 ? "admin.apply" : "decision.denied", actor: "admin", tenant: i % 3 ? "a" : "b", message: `e${i}`, attributes: { i: String(i) } });
                }
                audit.record({ kind: "adminXapply", actor: "admin", message: "not an admin. event" });
                audit.record({ kind: "alert.soft%", actor: "system", tenant: "a", message: "percent" });
                const pages = [];
                let beforeId;
                for (;;) {
                    const page = await audit.list({ kindPrefix: "admin.", pageSize: 5, beforeId });
                    if (page.length === 0)
                        break;
                    pages.push(page);
                    beforeId = page.at(-1).id;
                }
                assert.deepEqual(pages.map((p) => p.length), [5, 5, 2]);
                const admin = pages.flat();
                assert.deepEqual(admin.map((e) => e.message), [23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1].map((i) => `e${i}`));
                assert.ok(admin.every((e, i) => i === 0 || e.id < admin[i - 1].id), "ids strictly descending");
                assert.deepEqual(admin[0].attributes, { i: "23" });
                const all = await audit.list({ pageSize: 100 });
                assert.equal(all.length, 27);
                assert.deepEqual(all.slice(0, 3).map((e) => e.message), ["percent", "not an admin. event", "e24"]);
                assert.equal(all.find((e) => e.message === "not an admin. event").tenant, "", "no tenant is the empty tenant");
                const tenantB = await audit.list({ tenant: "b", pageSize: 100 });
                assert.equal(tenantB.length, 9);
                assert.ok(tenantB.every((e) => e.tenant === "b"));
                assert.deepEqual((await audit.list({ tenant: "b", kindPrefix: "admin.", pageSize: 100 })).map((e) => e.message), ["e21", "e15", "e9", "e3"]);
                assert.deepEqual((await audit.list({ kindPrefix: "alert.soft%", pageSize: 100 })).map((e) => e.message), ["percent"]);
                assert.deepEqual(await audit.list({ kindPrefix: "alert.s_ft", pageSize: 100 }), [], "no pattern characters");
                // Event i was recorded at 1 Nov 2026 + (i + 1) s.
                const recent = await audit.list({ sinceMs: Date.UTC(2026, 10, 1) + 20_000, pageSize: 100 });
                assert.deepEqual(recent.map((e) => e.message).slice(-2), ["e20", "e19"]);
                assert.equal(recent.length, 8);
            }
            finally {
                await audit.close();
            }
        }));
        test("a failed write is retried until it succeeds; events are written in the order they were recorded", () => withDatabase(backend, async (db) => {
            const { logger, lines } = capturingLogger();
            const audit = new AuditLog({ db, logger, maxAttempts: 50, retryDelayMs: 5 });
            try {
                await db.query("ALTER TABLE audit_events RENAME TO audit_events_away");
                for (let i = 0; i < 3; i++)
                    audit.record({ kind: "alert.soft", actor: "system", tenant: "acme", message: `m${i}` });
                await eventually(() => lines.some((l) => l.msg === "audit write failed"), "a failed write");
                await db.query("ALTER TABLE audit_events_away RENAME TO audit_events");
                await audit.flush();
                assert.deepEqual((await audit.list({ pageSize: 10 })).map((e) => e.message), ["m2", "m1", "m0"]);
            }
            finally {
                await audit.close();
            }
        }));
        test("retries are bounded: an event that cannot be written is given up (it stays in the log) and later events still go through", () => withDatabase(backend, async (db) => {
            const { logger, lines } = capturingLogger();
            const audit = new AuditLog({ db, logger, maxAttempts: 3, retryDelayMs: 1 });
            try {
                await db.query("ALTER TABLE audit_events RENAME TO audit_events_away");
                audit.record({ kind: "admin.apply", actor: "ops", message: "lost to the table" });
                await audit.flush();
                assert.equal(lines.filter((l) => l.msg === "audit write failed").length, 3);
                assert.ok(lines.some((l) => l.msg.startsWith("audit events given up")));
                assert.ok(lines.some((l) => l.msg === "lost to the table" && l.level === 30), "still in the log");
                await db.query("ALTER TABLE audit_events_away RENAME TO audit_events");
                audit.record({ kind: "admin.apply", actor: "ops", message: "kept" });
                assert.deepEqual((await audit.list({ pageSize: 10 })).map((e) => e.message), ["kept"]);
            }
            finally {
                await audit.close();
            }
        }));
        test("record never throws: odd text is stored as text, a closed database only costs the table copy", async () => {
            const scratch = await backend.create();
            try {
                const db = await scratch.open();
                const { logger, lines } = capturingLogger();
                const audit = new AuditLog({ db, logger, maxAttempts: 2, retryDelayMs: 1 });
                audit.record({ kind: "admin.apply", actor: "o\u0000ps", tenant: "acme", message: "nul \u0000 here", attributes: { n: 5, "k\u0000": "v\u0000" } });
                const [event] = await audit.list({ pageSize: 1 });
                assert.equal(event.actor, "o\uFFFDps");
                assert.equal(event.message, "nul \uFFFD here");
                assert.deepEqual(event.attributes, { n: "5", "k\uFFFD": "v\uFFFD" });
                await db.close();
                assert.doesNotThrow(() => audit.record({ kind: "admin.apply", actor: "ops", message: "after close" }));
                await audit.close();
                assert.ok(lines.some((l) => l.msg === "after close"));
                assert.ok(lines.some((l) => l.msg.startsWith("audit events given up")));
            }
            finally {
                await scratch.remove();
            }
        });
    });
}
//# sourceMappingURL=audit-log.test.js.map