import assert from "node:assert/strict";
import { appendFileSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import type { LedgerRow } from "../../control-plane/store/ledger.js";
import { LedgerSpool, type SpooledRow } from "../../control-plane/store/ledger-spool.js";
import type { QuarantinedLines } from "../../control-plane/store/spool-file.js";

const at = Date.UTC(2026, 10, 10, 12);
const spooledRow = (i: number, over: Partial<LedgerRow> = {}): LedgerRow => ({
  reservationId: `res-${i}`, requestId: `req-${i}`, tenant: "acme", user: "alice", keyId: "k1", task: "DRAFT",
  model: "m", provider: "p", inputTokens: 10 + i, cacheReadTokens: 0, cacheWriteTokens: 0, outputTokens: 20, reasoningTokens: 0, costMicros: 3, outcome: "SUCCESS", estimated: false, latencyMs: 5,
  reservedAtMs: at, settledAtMs: at + 1_000, ...over,
});

describe("ledger spool: torn last line dropped, any other unreadable line quarantined", () => {
  const dirs: string[] = [];
  const dir = () => {
    const d = mkdtempSync(join(tmpdir(), "ledger-spool-"));
    dirs.push(d);
    return d;
  };
  after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

  const replayAll = async (spool: LedgerSpool) => {
    const written: SpooledRow[] = [];
    const n = await spool.replay(async (rows) => void written.push(...rows));
    return { n, ids: written.map((r) => r.reservationId) };
  };

  test("a corrupt middle line (written by hand) is kept in the quarantine file and reported; the rows around it are replayed", async () => {
    const d = dir();
    const line = (i: number) => JSON.stringify(spooledRow(i));
    const corrupt = `{"reservationId":"res-2","requestId":"req-2","tenant":"acme","inputTok\u0000`;
    const wrongShape = JSON.stringify({ ...spooledRow(3), inputTokens: "ten" });
    writeFileSync(join(d, "ledger-spool.jsonl"), `${line(1)}\n${corrupt}\n${wrongShape}\nnull\n${line(4)}\n`);
    const quarantined: QuarantinedLines[] = [];
    const spool = new LedgerSpool({ dir: d, onQuarantine: (q) => quarantined.push(q) });
    assert.deepEqual(await replayAll(spool), { n: 2, ids: ["res-1", "res-4"] });
    assert.deepEqual(quarantined, [{ from: join(d, "ledger-spool.replaying.jsonl"), quarantineFile: join(d, "ledger-spool.quarantine.jsonl"), lineNumbers: [2, 3, 4] }]);
    assert.equal(readFileSync(spool.quarantineFile, "utf8"), `${corrupt}\n${wrongShape}\nnull\n`, "kept byte for byte, never deleted");
    assert.deepEqual(readdirSync(d), ["ledger-spool.quarantine.jsonl"]);
    assert.equal(spool.pending(), false);

    // A later replay adds to the quarantine file; it does not replace it.
    writeFileSync(join(d, "ledger-spool.jsonl"), `garbage\n${line(5)}\n`);
    assert.deepEqual(await replayAll(spool), { n: 1, ids: ["res-5"] });
    assert.equal(readFileSync(spool.quarantineFile, "utf8"), `${corrupt}\n${wrongShape}\nnull\ngarbage\n`);
  });

  test("a torn last line (a crash mid-append) is dropped, and the next append after a restart is whole", async () => {
    const d = dir();
    const first = new LedgerSpool({ dir: d });
    await first.append([spooledRow(1)]);
    appendFileSync(join(d, "ledger-spool.jsonl"), JSON.stringify(spooledRow(2)).slice(0, 40));
    const quarantined: QuarantinedLines[] = [];
    const restarted = new LedgerSpool({ dir: d, onQuarantine: (q) => quarantined.push(q) });
    await restarted.append([spooledRow(3)]);
    assert.deepEqual(await replayAll(restarted), { n: 2, ids: ["res-1", "res-3"] });
    assert.deepEqual(quarantined, [], "a torn last line is no loss: it was never acknowledged");
    assert.deepEqual(readdirSync(d), []);
  });

  test("a torn last line found at replay (no restart in between) is dropped too, not quarantined", async () => {
    const d = dir();
    writeFileSync(join(d, "ledger-spool.replaying.jsonl"), `${JSON.stringify(spooledRow(1))}\n${JSON.stringify(spooledRow(2)).slice(0, 30)}`);
    const quarantined: QuarantinedLines[] = [];
    const spool = new LedgerSpool({ dir: d, onQuarantine: (q) => quarantined.push(q) });
    assert.deepEqual(await replayAll(spool), { n: 1, ids: ["res-1"] });
    assert.deepEqual(quarantined, []);
  });

  test("a failed write keeps every line for the next replay and quarantines nothing yet", async () => {
    const d = dir();
    writeFileSync(join(d, "ledger-spool.jsonl"), `${JSON.stringify(spooledRow(1))}\nnot json\n`);
    const quarantined: QuarantinedLines[] = [];
    const spool = new LedgerSpool({ dir: d, onQuarantine: (q) => quarantined.push(q) });
    await assert.rejects(spool.replay(async () => {
      throw new Error("database unreachable");
    }));
    assert.deepEqual(quarantined, []);
    assert.deepEqual(await replayAll(spool), { n: 1, ids: ["res-1"] });
    assert.deepEqual(quarantined.map((q: QuarantinedLines) => q.lineNumbers), [[2]]);
  });
});
