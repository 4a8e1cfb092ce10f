import assert from "node:assert/strict";
import { describe, test } from "node:test";
import pino from "pino";
import { ConfigError, loadControlPlaneConfig } from "../../control-plane/config.js";
import { AuditLog } from "../../control-plane/store/audit-log.js";
import { Ledger } from "../../control-plane/store/ledger.js";
import { applyRetention } from "../../control-plane/store/retention.js";
import { backends, withDatabase } from "../support/databases.js";

const silent = pino({ level: "silent" });
const dayMs = 86_400_000;
const now = Date.UTC(2026, 10, 23, 12);

for (const backend of backends()) {
  describe(`audit retention on ${backend.name}`, { skip: backend.skip }, () => {
    test("events older than the retention are deleted in bounded batches; newer ones stay", () =>
      withDatabase(backend, async (db) => {
        let clockMs = 0;
        const audit = new AuditLog({ db, logger: silent, clock: () => clockMs });
        try {
          const ages = [900, 500, 400, 366, 365.5, 364, 30, 0];
          for (const [i, ageDays] of ages.entries()) {
            clockMs = now - ageDays * dayMs;
            audit.record({ kind: "admin.apply", actor: "ops", tenant: "acme", message: `aged ${ageDays} days`, attributes: { i: String(i) } });
          }
          await audit.flush();
          assert.deepEqual(await audit.deleteBefore(now - 365 * dayMs, { batchRows: 2 }), { deleted: 5, batches: 3 }, "two rows per statement, until a short batch");
          const left = await audit.list({ pageSize: 100 });
          assert.deepEqual(left.map((e) => e.message).sort(), ["aged 0 days", "aged 30 days", "aged 364 days"]);
          assert.deepEqual(await audit.deleteBefore(now - 365 * dayMs), { deleted: 0, batches: 1 }, "nothing left to delete");
        } finally {
          await audit.close();
        }
      }));

    test("the hourly maintenance applies ADMISSION_AUDIT_RETENTION_DAYS next to the ledger's retention", () =>
      withDatabase(backend, async (db) => {
        let clockMs = now - 40 * dayMs;
        const audit = new AuditLog({ db, logger: silent, clock: () => clockMs });
        const ledger = new Ledger({ db, logger: silent });
        try {
          audit.record({ kind: "lease.expired", actor: "key:k1", message: "old" });
          clockMs = now - 10 * dayMs;
          audit.record({ kind: "lease.expired", actor: "key:k1", message: "recent" });
          await audit.flush();
          const config = loadControlPlaneConfig({ ADMISSION_AUDIT_RETENTION_DAYS: "30" });
          assert.equal(config.auditRetentionDays, 30);
          const result = await applyRetention({ ledger, audit }, now, config);
          assert.equal(result.auditDeleted, 1);
          assert.deepEqual((await audit.list({ pageSize: 10 })).map((e) => e.message), ["recent"]);
        } finally {
          await ledger.close();
          await audit.close();
        }
      }));
  });
}

test("ADMISSION_AUDIT_RETENTION_DAYS: a year by default, a whole number of days", () => {
  assert.equal(loadControlPlaneConfig({}).auditRetentionDays, 365);
  assert.throws(() => loadControlPlaneConfig({ ADMISSION_AUDIT_RETENTION_DAYS: "0" }), (err: Error) => err instanceof ConfigError && /ADMISSION_AUDIT_RETENTION_DAYS must be an integer between 1 and 36500/.test(err.message));
});
