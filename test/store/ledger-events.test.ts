import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import pino from "pino";
import type { Database } from "../../control-plane/store/database.js";
import { Ledger, type LedgerRow } from "../../control-plane/store/ledger.js";
import { LedgerSpool } from "../../control-plane/store/ledger-spool.js";
import type { OutboxEvent } from "../../control-plane/store/webhook-outbox.js";
import { WebhookOutbox, webhookEventSpool } from "../../control-plane/store/webhook-outbox.js";
import { WebhookEvents } from "../../control-plane/webhook-events.js";
import { PolicySnapshot } from "../../control-plane/policy/policy-snapshot.js";
import { backends, withDatabase } from "../support/databases.js";

const logger = pino({ level: "silent" });
const at = Date.UTC(2026, 10, 10, 12);
const row = (id: string): LedgerRow => ({
  reservationId: id, requestId: `req-${id}`, tenant: "acme", user: "alice", keyId: "k1", task: "DRAFT", model: "m", provider: "p",
  inputTokens: 100, cacheReadTokens: 0, cacheWriteTokens: 0, outputTokens: 900, reasoningTokens: 0, costMicros: 7, outcome: "SUCCESS", estimated: false,
  latencyMs: 5, reservedAtMs: at, settledAtMs: at + 1_000,
});
const event = (id: string): OutboxEvent => ({ id, type: "alert.threshold", tenant: "acme", data: { threshold: 0.8, used: 900 }, atMs: at + 1_000, webhooks: ["ops", "acme-hook"] });

/** The database, or — while `down` — one that cannot be reached (as a dropped connection fails: no SQLSTATE). */
function switchable(db: Database): { db: Database; setDown(down: boolean): void } {
  let down = false;
  const unreachable = () => Promise.reject(Object.assign(new Error("connect ECONNREFUSED 127.0.0.1:5432"), { code: "ECONNREFUSED" }));
  const wrapped: Database = {
    kind: db.kind,
    query: (sql, params, options) => (down ? unreachable() : db.query(sql, params, options)),
    transaction: (fn) => (down ? unreachable() : db.transaction(fn)),
    listen: (channel, onPayload, options) => db.listen(channel, onPayload, options),
    notify: (channel, payload) => db.notify(channel, payload),
    ping: () => (down ? unreachable() : db.ping()),
    close: () => db.close(),
  };
  return { db: wrapped, setDown: (d) => (down = d) };
}

for (const backend of backends()) {
  describe(`a ledger row's webhook events on ${backend.name}`, { skip: backend.skip }, () => {
    const dirs: string[] = [];
    after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

    test("commit with the row, not with a repeat of it, and ride its spool line while the database is away", () =>
      withDatabase(backend, async (base) => {
        const dir = mkdtempSync(join(tmpdir(), "ledger-events-"));
        dirs.push(dir);
        const { db, setDown } = switchable(base);
        let committed = 0;
        const ledger = new Ledger({ db, logger, spool: new LedgerSpool({ dir }), onEventsCommitted: () => committed++ });
        const outbox = new WebhookOutbox(base);
        const pending = async () => (await outbox.list({ pageSize: 100 })).map((d) => `${d.eventId}>${d.webhook}`).sort();

        assert.equal((await ledger.append(row("r1"), { events: [event("evt_1")] })).inserted, true);
        assert.deepEqual(await pending(), ["evt_1>acme-hook", "evt_1>ops"]);
        assert.equal(committed, 1);

        // A repeated settle's row is not inserted: the alert it would raise again is not either.
        assert.equal((await ledger.append(row("r1"), { events: [event("evt_1b")] })).inserted, false);
        assert.deepEqual(await pending(), ["evt_1>acme-hook", "evt_1>ops"]);

        setDown(true);
        const spooled = await ledger.append(row("r2"), { events: [event("evt_2")] });
        assert.deepEqual(spooled, { inserted: true, spooled: true }, "durable in the spool, events with it");
        setDown(false);
        assert.equal(await ledger.replaySpool(), 1);
        assert.deepEqual(await pending(), ["evt_1>acme-hook", "evt_1>ops", "evt_2>acme-hook", "evt_2>ops"]);
        const [latest] = await outbox.list({ pageSize: 1 });
        assert.deepEqual(latest!.data, { threshold: 0.8, used: 900 });
        assert.equal(latest!.state, "pending");

        // Retention keeps an event while any of its deliveries is pending.
        assert.equal(await outbox.deleteFinishedBefore(at + 60_000), 0);
        const claimed = await outbox.claim(at + 2_000, 40_000, 10);
        assert.equal(claimed.length, 4);
        for (const d of claimed.filter((c) => c.eventId === "evt_1")) {
          assert.equal(await outbox.complete(d, { atMs: at + 2_000, httpStatus: 204, latencyMs: 3, error: "" }, { state: "delivered" }), true);
        }
        assert.equal(await outbox.claim(at + 3_000, 40_000, 10).then((c) => c.length), 0, "claimed deliveries are not claimed again before their lease ends");
        // Redelivering one being attempted does not let a second worker attempt it alongside.
        const inFlight = claimed.find((c) => c.eventId === "evt_2")!;
        assert.ok(await outbox.redeliver(inFlight.id, at + 3_000));
        assert.equal(await outbox.claim(at + 3_000, 40_000, 10).then((c) => c.length), 0, "still held by its claim");
        assert.equal(await outbox.claim(at + 45_000, 40_000, 10).then((c) => c.map((d) => d.id)).then((ids) => ids.includes(inFlight.id)), true, "claimable again once the lease passed");
        assert.equal(await outbox.deleteFinishedBefore(at + 60_000), 1);
        assert.deepEqual(await pending(), ["evt_2>acme-hook", "evt_2>ops"]);
        await ledger.close();
      }));

    test("events raised outside a transaction (an Admit's alerts) are spooled while the database is away, and written once it is back", () =>
      withDatabase(backend, async (base) => {
        const dir = mkdtempSync(join(tmpdir(), "event-spool-"));
        dirs.push(dir);
        const { db, setDown } = switchable(base);
        let committed = 0;
        const spool = webhookEventSpool({ dir });
        const events = new WebhookEvents({ db, policy: () => PolicySnapshot.empty(), logger, spool, onCommitted: () => committed++ });
        const outbox = new WebhookOutbox(base);
        setDown(true);
        await events.write(undefined, [event("evt_a"), event("evt_b")]);
        assert.equal(spool.pending(), true);
        assert.equal(await events.replaySpool().catch(() => -1), -1, "the replay fails while the database is away, keeping them");
        assert.equal(spool.pending(), true);
        setDown(false);
        assert.equal(await events.replaySpool(), 2);
        assert.equal(spool.pending(), false);
        assert.equal(committed, 1);
        assert.deepEqual((await outbox.list({ pageSize: 10 })).map((d) => `${d.eventId}>${d.webhook}`).sort(), ["evt_a>acme-hook", "evt_a>ops", "evt_b>acme-hook", "evt_b>ops"]);
        assert.equal(await events.replaySpool(), 0);
      }));
  });
}
