import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { create, toJson } from "@bufbuild/protobuf";
import pino from "pino";
import { SettleRequestSchema } from "../gen/admission/v1/admission_pb.js";
import { defaultDataPlaneConfig } from "../data-plane/config.js";
import { startDataPlane } from "../data-plane/server.js";
import { admin, startTestControlPlane } from "./support/control-plane.js";
import { scenario, secretOf } from "./support/scenario.js";
import { waitFor } from "./data-plane/support/stack.js";

/** Log lines at error level, parsed. */
function errorLog(): { logger: pino.Logger; records: Array<Record<string, unknown>> } {
  const records: Array<Record<string, unknown>> = [];
  const logger = pino({ level: "error" }, { write: (line: string) => void records.push(JSON.parse(line) as Record<string, unknown>) });
  return { logger, records };
}

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const scratch = () => {
  const d = mkdtempSync(join(tmpdir(), "spool-quarantine-"));
  dirs.push(d);
  return d;
};

test("control plane: a corrupt line in the ledger spool is quarantined, counted in a metric and logged as an error; the other rows reach the ledger", async () => {
  const spoolDir = scratch();
  mkdirSync(spoolDir, { recursive: true });
  const at = Date.now();
  const row = (i: number) => JSON.stringify({
    reservationId: `res-q${i}`, requestId: `req-q${i}`, tenant: "acme", user: "", keyId: "k-acme", task: "DRAFT", model: "m-pro", provider: "p1",
    inputTokens: 10, outputTokens: 5, costMicros: 20, outcome: "SUCCESS", estimated: false, latencyMs: 3, reservedAtMs: at, settledAtMs: at,
  });
  // Written by hand: a good row, a line damaged on disk, another good row.
  writeFileSync(join(spoolDir, "ledger-spool.jsonl"), `${row(1)}\n{"reservationId":"res-q2","tenant":"ac\n${row(3)}\n`);
  const { logger, records } = errorLog();
  const t = await startTestControlPlane({ config: { spoolDir }, deps: { logger } });
  try {
    await t.policy.applyBundle({ bundle: scenario({ id: "acme", keys: [{ id: "k-acme" }] }) }, admin);
    const ids = async () => (await t.cp.database.query<{ reservation_id: string }>("SELECT reservation_id FROM usage_ledger ORDER BY reservation_id")).rows.map((r) => r.reservation_id);
    await waitFor(() => !t.cp.ledger.spoolPending(), "the spool to be replayed");
    assert.deepEqual(await ids(), ["res-q1", "res-q3"]);
    assert.equal(readFileSync(join(spoolDir, "ledger-spool.quarantine.jsonl"), "utf8"), '{"reservationId":"res-q2","tenant":"ac\n');
    assert.match(await t.cp.metrics.registry.metrics(), /^admission_ledger_spool_quarantined_total 1$/m);
    const line = records.find((r) => r.msg === "ledger spool lines unreadable: kept in the quarantine file, not recorded in the ledger");
    assert.ok(line, "an error line says so");
    assert.deepEqual([line.level, line.count, line.lines, line.quarantineFile], [50, 1, [2], join(spoolDir, "ledger-spool.quarantine.jsonl")]);
  } finally {
    await t.close();
  }
});

test("data plane: a corrupt line in the settle spool is quarantined, counted in a metric and logged as an error; the other settles are delivered", async () => {
  const t = await startTestControlPlane();
  const spoolDir = scratch();
  try {
    await t.policy.applyBundle({ bundle: scenario({ id: "acme", keys: [{ id: "k-acme" }] }) }, admin);
    const reserve = () => t.admission.admit({ credential: secretOf("k-acme"), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });
    const [a, b] = [await reserve(), await reserve()];
    const line = (reservationId: string) => JSON.stringify(toJson(SettleRequestSchema, create(SettleRequestSchema, { reservationId, inputTokens: 10n, outputTokens: 4n })));
    writeFileSync(join(spoolDir, "settles.jsonl"), `${line(a.reservationId)}\n{"reservationId": 12\n${line(b.reservationId)}\n`);
    const { logger, records } = errorLog();
    const dp = await startDataPlane({ ...defaultDataPlaneConfig, host: "127.0.0.1", port: 0, controlPlaneAddr: t.address, spoolDir, replayMinMs: 20, replayMaxMs: 100 }, { logger, providers: [] });
    try {
      await waitFor(() => !dp.spool.pending(), "the spool to be replayed");
      const settled = await t.cp.database.query<{ n: number }>("SELECT count(*)::int AS n FROM usage_ledger WHERE output_tokens = 4");
      assert.equal(settled.rows[0]!.n, 2, "both good settles recorded");
      assert.equal(readFileSync(dp.spool.quarantineFile, "utf8"), '{"reservationId": 12\n');
      assert.match(await dp.metrics.registry.metrics(), /^proxy_settle_spool_quarantined_total 1$/m);
      const logged = records.find((r) => r.msg === "settle spool lines unreadable: kept in the quarantine file, not delivered");
      assert.ok(logged, "an error line says so");
      assert.deepEqual([logged.level, logged.count, logged.lines], [50, 1, [2]]);
    } finally {
      await dp.close();
    }
  } finally {
    await t.close();
  }
});
