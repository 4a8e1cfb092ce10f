import assert from "node:assert/strict";
import { describe, test } from "node:test";
import pino from "pino";
import { AuditLog } from "../../control-plane/store/audit-log.js";
import { ConfigRepository, ConflictError } from "../../control-plane/store/config-repository.js";
import { migrate } from "../../control-plane/store/migrations.js";
import { backends } from "../support/databases.js";

for (const backend of backends()) {
  describe(`config repository and audit log on ${backend.name}`, { skip: backend.skip }, () => {
    test("save bumps the version, notifies listeners, and refuses a stale expected version", async () => {
      const { db, drop } = await backend.open();
      const repo = new ConfigRepository({ db });
      const seen: number[] = [];
      const unwatch = await repo.watch((v) => seen.push(v));
      try {
        assert.deepEqual(await repo.load(), { version: 0, entities: [] });
        const v1 = await repo.save({ upserts: [{ kind: "tenant", id: "acme", body: { id: "acme", atiToken: "t" } }], deletes: [], expectedVersion: 0 });
        assert.equal(v1, 1);
        await assert.rejects(repo.save({ upserts: [], deletes: [{ kind: "tenant", id: "acme" }], expectedVersion: 0 }), ConflictError);
        const v2 = await repo.save({ upserts: [{ kind: "tenant", id: "acme", body: { id: "acme", atiToken: "u" } }], deletes: [] });
        assert.equal(v2, 2);
        const loaded = await repo.load();
        assert.equal(loaded.version, 2);
        assert.deepEqual(loaded.entities, [{ kind: "tenant", id: "acme", body: { id: "acme", atiToken: "u" } }]);
        for (let i = 0; i < 50 && seen.length < 2; i++) await new Promise((r) => setTimeout(r, 20));
        assert.deepEqual(seen, [1, 2]);
        assert.equal(await repo.getOrCreateSecret("s", () => "first"), "first");
        assert.equal(await repo.getOrCreateSecret("s", () => "second"), "first");
        await migrate(db);
        assert.equal(await repo.version(), 2, "migrations are idempotent");
      } finally {
        await unwatch();
        await drop();
      }
    });

    test("audit events: written in the background, listed newest first, by tenant and kind prefix, paged", async () => {
      const { db, drop } = await backend.open();
      const audit = new AuditLog({ db, logger: pino({ level: "silent" }) });
      try {
        for (let i = 0; i < 25; i++) audit.record({ kind: i % 2 ? "admin.apply" : "decision.denied", actor: "admin", tenant: i % 3 ? "a" : "b", message: `e${i}`, attributes: { i: String(i) } });
        const page1 = await audit.list({ kindPrefix: "admin.", pageSize: 5 });
        assert.equal(page1.length, 5);
        assert.equal(page1[0]!.message, "e23");
        assert.deepEqual(page1[0]!.attributes, { i: "23" });
        const page2 = await audit.list({ kindPrefix: "admin.", pageSize: 5, beforeId: page1.at(-1)!.id });
        assert.equal(page2[0]!.message, "e13");
        const tenantB = await audit.list({ tenant: "b", pageSize: 100 });
        assert.equal(tenantB.length, 9);
      } finally {
        await audit.close();
        await drop();
      }
    });
  });
}
