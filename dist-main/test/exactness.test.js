import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { DenyReason, Outcome } from "../gen/admission/v1/admission_pb.js";
import { LimitKind, Window } from "../gen/admission/v1/policy_pb.js";
import { CounterStoreUnavailableError } from "../control-plane/counter-store.js";
import { MemoryCounterStore } from "../control-plane/memory-counter-store.js";
import { admin, startTestControlPlane } from "./support/control-plane.js";
import { LosableCounterStore } from "./support/losable-counter-store.js";
import { scenario, secretOf } from "./support/scenario.js";
import { meterUsed } from "./support/meter-used.js";
test("1,000 concurrent Admits against a limit of 137 admit exactly 137; ledger, GetUsage and meters agree", async () => {
    const t = await startTestControlPlane();
    try {
        await t.policy.applyBundle({
            bundle: scenario({
                id: "exact",
                limits: [
                    { kind: "REQUESTS", window: "DAY", per: "TENANT", value: 137 },
                    { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000_000 },
                    { kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 1_000_000_000 },
                ],
                keys: Array.from({ length: 10 }, (_, i) => ({ id: `k${i}` })),
            }),
        }, admin);
        const decisions = await Promise.all(Array.from({ length: 1000 }, (_, i) => t.admission.admit({ credential: secretOf(`k${i % 10}`), task: "DRAFT", model: "m-pro", inputTokens: 100n, maxOutputTokens: 100n })));
        const allowed = decisions.filter((d) => d.allowed);
        assert.equal(allowed.length, 137);
        assert.ok(decisions.filter((d) => !d.allowed).every((d) => d.reason === DenyReason.QUOTA_EXCEEDED));
        let inputTokens = 0n;
        let outputTokens = 0n;
        let costMicros = 0n;
        const settles = await Promise.all(allowed.map((d, i) => t.admission.settle({ reservationId: d.reservationId, inputTokens: BigInt(50 + i), outputTokens: BigInt(i * 7), model: "m-pro", outcome: Outcome.SUCCESS })));
        for (const s of settles) {
            inputTokens += s.inputTokens;
            outputTokens += s.outputTokens;
            costMicros += s.costMicros;
        }
        const usage = await t.policy.getUsage({ tenant: "exact" }, admin);
        assert.equal(usage.requests, 137n);
        assert.equal(usage.inputTokens, inputTokens);
        assert.equal(usage.outputTokens, outputTokens);
        assert.equal(usage.costMicros, costMicros);
        assert.equal(await meterUsed(t.admission, "exact", LimitKind.TOKENS, Window.MONTH), inputTokens + outputTokens);
        assert.equal(await meterUsed(t.admission, "exact", LimitKind.BUDGET_MICROS, Window.MONTH), costMicros);
        assert.equal(await meterUsed(t.admission, "exact", LimitKind.REQUESTS, Window.DAY), 137n);
    }
    finally {
        await t.close();
    }
});
test("after a restart, config and current-window usage are back, and a settle of a lease granted before it is not lost", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "adm-restart-"));
    try {
        const first = await startTestControlPlane({ dataDir });
        await first.policy.applyBundle({ bundle: scenario({ id: "r", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 100_000 }], keys: [{ id: "kr" }] }) }, admin);
        const a = await first.admission.admit({ credential: secretOf("kr"), task: "DRAFT", inputTokens: 1000n, maxOutputTokens: 500n });
        await first.admission.settle({ reservationId: a.reservationId, inputTokens: 1000n, outputTokens: 234n });
        const open = await first.admission.admit({ credential: secretOf("kr"), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });
        const version = (await first.policy.exportBundle({}, admin)).version;
        await first.stop();
        const second = await startTestControlPlane({ dataDir });
        try {
            assert.equal((await second.policy.exportBundle({}, admin)).version, version, "config is back");
            assert.equal(await meterUsed(second.admission, "r", LimitKind.TOKENS, Window.MONTH), 1234n, "usage rebuilt from the ledger");
            const late = await second.admission.settle({ reservationId: open.reservationId, inputTokens: 11n, outputTokens: 22n });
            assert.equal(late.duplicate, false);
            assert.equal(await meterUsed(second.admission, "r", LimitKind.TOKENS, Window.MONTH), 1234n + 33n);
            assert.equal((await second.admission.settle({ reservationId: open.reservationId, inputTokens: 99n, outputTokens: 99n })).duplicate, true);
            assert.equal((await second.policy.getUsage({ tenant: "r" }, admin)).inputTokens, 1011n);
        }
        finally {
            await second.stop();
        }
    }
    finally {
        rmSync(dataDir, { recursive: true, force: true });
    }
});
test("month rollover: quotas reset; a lease granted before the boundary charges the window it was reserved in", async () => {
    let now = Date.UTC(2026, 0, 31, 23, 59, 0);
    const t = await startTestControlPlane({ deps: { clock: () => now } });
    try {
        await t.policy.applyBundle({ bundle: scenario({ id: "m", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 300 }], keys: [{ id: "km" }] }) }, admin);
        const req = { credential: secretOf("km"), task: "DRAFT", inputTokens: 100n, maxOutputTokens: 50n };
        const january = await t.admission.admit(req);
        assert.equal((await t.admission.admit(req)).allowed, true);
        const denied = await t.admission.admit(req);
        assert.equal(denied.reason, DenyReason.QUOTA_EXCEEDED);
        assert.equal(denied.retryAfterMs, 60000n);
        now = Date.UTC(2026, 1, 1, 0, 0, 5);
        assert.equal((await t.admission.admit(req)).allowed, true, "February starts empty");
        await t.admission.settle({ reservationId: january.reservationId, inputTokens: 100n, outputTokens: 200n });
        assert.equal(await meterUsed(t.admission, "m", LimitKind.TOKENS, Window.MONTH), 150n, "the January lease does not touch February");
        const jan = await t.policy.getUsage({ tenant: "m", start: timestampFromMs(Date.UTC(2026, 0, 1)), end: timestampFromMs(Date.UTC(2026, 1, 1)) }, admin);
        assert.equal(jan.requests, 1n);
        assert.equal(jan.outputTokens, 200n);
    }
    finally {
        await t.close();
    }
});
/** Memory counters whose next confirmations of a durable ledger row are lost (the replica died right after writing it). */
class LosingConfirmations extends MemoryCounterStore {
    lose = 0;
    async markRecorded(tenant, leaseId) {
        if (this.lose > 0) {
            this.lose--;
            throw new Error("the replica died before confirming the row");
        }
        return super.markRecorded(tenant, leaseId);
    }
}
test("a settle replayed after the first one's confirmation was lost confirms the row at once: the lease does not wait for the sweeper", async () => {
    let now = Date.UTC(2026, 5, 1, 12);
    const counters = new LosingConfirmations({ clock: () => now, housekeepingMs: 0 });
    const t = await startTestControlPlane({ deps: { counters, clock: () => now } });
    try {
        await t.policy.applyBundle({ bundle: scenario({ id: "c", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 100_000 }], keys: [{ id: "kc" }] }) }, admin);
        const d = await t.admission.admit({ credential: secretOf("kc"), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });
        counters.lose = 1;
        assert.equal((await t.admission.settle({ reservationId: d.reservationId, inputTokens: 10n, outputTokens: 3n })).duplicate, false);
        const replay = await t.admission.settle({ reservationId: d.reservationId, inputTokens: 10n, outputTokens: 3n });
        assert.deepEqual([replay.duplicate, replay.outputTokens], [true, 3n]);
        now += 3_600_000;
        assert.deepEqual(await counters.claimDue(now, 30_000, 10), [], "nothing left for the sweeper");
        assert.equal((await t.policy.getUsage({ tenant: "c", start: timestampFromMs(Date.UTC(2026, 5, 1)) }, admin)).requests, 1n);
    }
    finally {
        await t.close();
    }
});
/** A counter store that can be taken down, to test the failure policy. */
class FlakyCounterStore {
    inner;
    down = false;
    constructor(inner) {
        this.inner = inner;
    }
    guard(fn) {
        return this.down ? Promise.reject(new CounterStoreUnavailableError("counter store down (injected)")) : fn();
    }
    reserve = (r) => this.guard(() => this.inner.reserve(r));
    settle = (r) => this.guard(() => this.inner.settle(r));
    renew = (...a) => this.guard(() => this.inner.renew(...a));
    markRecorded = (...a) => this.guard(() => this.inner.markRecorded(...a));
    claimDue = (...a) => this.guard(() => this.inner.claimDue(...a));
    charge = (...a) => this.guard(() => this.inner.charge(...a));
    rebuild = (...a) => this.guard(() => this.inner.rebuild(...a));
    generation = (...a) => this.guard(() => this.inner.generation(...a));
    read = (...a) => this.guard(() => this.inner.read(...a));
    reset = (...a) => this.guard(() => this.inner.reset(...a));
    ping = () => this.guard(() => this.inner.ping());
    close = () => this.inner.close();
}
test("counter store down: FAIL_CLOSED denies with 503, FAIL_OPEN allows unmetered; settles are kept and counted once it is back", async () => {
    const flaky = new FlakyCounterStore(new MemoryCounterStore({ housekeepingMs: 0 }));
    const t = await startTestControlPlane({ deps: { counters: flaky } });
    try {
        await t.policy.applyBundle({
            bundle: scenario({ id: "closed", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 100_000 }], keys: [{ id: "kc" }] }, { id: "open", failurePolicy: "FAIL_OPEN", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 100_000 }], keys: [{ id: "ko" }] }),
        }, admin);
        const before = await t.admission.admit({ credential: secretOf("kc"), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });
        flaky.down = true;
        const closed = await t.admission.admit({ credential: secretOf("kc"), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });
        assert.equal(closed.allowed, false);
        assert.equal(closed.reason, DenyReason.UNAVAILABLE);
        assert.equal(closed.httpStatus, 503);
        const open = await t.admission.admit({ credential: secretOf("ko"), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });
        assert.equal(open.allowed, true);
        assert.equal(open.unmetered, true);
        assert.ok(open.reservationId);
        // Settles during the outage are recorded in the ledger and acknowledged.
        const s1 = await t.admission.settle({ reservationId: before.reservationId, inputTokens: 10n, outputTokens: 5n });
        const s2 = await t.admission.settle({ reservationId: open.reservationId, inputTokens: 10n, outputTokens: 7n });
        assert.equal(s1.duplicate, false);
        assert.equal(s2.duplicate, false);
        assert.equal((await t.policy.getUsage({ tenant: "closed" }, admin)).outputTokens, 5n);
        assert.equal((await t.policy.getUsage({ tenant: "open" }, admin)).outputTokens, 7n);
        assert.equal(await grpcStatus(t.admission.renew({ reservationId: before.reservationId })), grpc.status.UNAVAILABLE);
        const ready = await fetch(`http://127.0.0.1:${t.cp.httpPort}/readyz`);
        assert.equal(ready.status, 503);
        assert.match(await ready.text(), /"counters":"failing/);
        flaky.down = false;
        await t.cp.settlement.sweep();
        assert.equal(await meterUsed(t.admission, "closed", LimitKind.TOKENS, Window.MONTH), 15n, "the deferred settle replaced the estimate");
        assert.equal(await meterUsed(t.admission, "open", LimitKind.TOKENS, Window.MONTH), 17n, "the unmetered request is counted once the store is back");
        assert.equal((await fetch(`http://127.0.0.1:${t.cp.httpPort}/readyz`)).status, 200);
    }
    finally {
        await t.close();
    }
});
async function grpcStatus(p) {
    try {
        await p;
        return 0;
    }
    catch (err) {
        return err.code;
    }
}
for (const race of [
    {
        title: "counters lost and rebuilt between a settle's counter update and its ledger commit: the settle charges the new generation itself",
        lostAfter: "settle",
        lease: "open",
        reconciled: "charged",
    },
    {
        title: "counters lost and rebuilt between a late settle's ledger commit and its charge: the rebuild counted it, the settle does not again",
        lostAfter: "generation",
        lease: "lost",
        reconciled: "counted",
    },
]) {
    test(race.title, async () => {
        const counters = new LosableCounterStore();
        const t = await startTestControlPlane({ deps: { counters } });
        try {
            await t.policy.applyBundle({ bundle: scenario({ id: "g", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000 }], keys: [{ id: "kg" }] }) }, admin);
            const admit = () => t.admission.admit({ credential: secretOf("kg"), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 10n });
            const settled = await admit();
            await t.admission.settle({ reservationId: settled.reservationId, inputTokens: 10n, outputTokens: 5n });
            const racing = await admit();
            if (race.lease === "lost")
                counters.lose();
            // Another replica's Admit at the armed moment finds the tenant cold and rebuilds it from the ledger.
            counters.hook = {
                after: race.lostAfter,
                run: async () => {
                    if (race.lease === "open")
                        counters.lose();
                    else {
                        await t.admission.admit({ credential: secretOf("kg"), task: "DRAFT", inputTokens: 1n, maxOutputTokens: 0n }).then((d) => t.admission.settle({ reservationId: d.reservationId, inputTokens: 1n, outputTokens: 0n }));
                        counters.lose();
                    }
                    assert.equal((await admit()).allowed, true);
                },
            };
            const s = await t.admission.settle({ reservationId: racing.reservationId, inputTokens: 10n, outputTokens: 7n });
            assert.equal(s.duplicate, false);
            assert.equal(counters.hook, undefined, "the race was run");
            await t.cp.settlement.sweep();
            assert.equal(t.cp.settlement.deferredCount(), 0);
            const ledger = await t.policy.getUsage({ tenant: "g" }, admin);
            // The ledger's settled tokens plus the one open lease (the hook's Admit: 10 in + 10 reserved out).
            const expected = ledger.inputTokens + ledger.outputTokens + 20n;
            assert.equal(await meterUsed(t.admission, "g", LimitKind.TOKENS, Window.MONTH), expected, "the meter holds every settled token once, and the open lease");
            const metrics = await (await fetch(`http://127.0.0.1:${t.cp.httpPort}/metrics`)).text();
            assert.match(metrics, new RegExp(`admission_counter_reconciles_total\\{result="${race.reconciled}"\\} 1\\b`), "the reconcile shows in /metrics");
            assert.match(metrics, /admission_counter_rebuilds_total\{trigger="cold"\} [1-9]/);
        }
        finally {
            await t.close();
        }
    });
}
test("a settle recorded while the counter store was away, by a replica that died before applying it: the lease's expiry moves the meters to the recorded usage", async () => {
    let now = Date.UTC(2026, 6, 1, 12);
    const flaky = new FlakyCounterStore(new MemoryCounterStore({ clock: () => now, housekeepingMs: 0 }));
    const dataDir = mkdtempSync(join(tmpdir(), "adm-died-"));
    try {
        const first = await startTestControlPlane({ dataDir, deps: { counters: flaky, clock: () => now } });
        await first.policy.applyBundle({ bundle: scenario({ id: "d", limits: [{ kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1_000_000 }], keys: [{ id: "kd" }] }) }, admin);
        const d = await first.admission.admit({ credential: secretOf("kd"), task: "DRAFT", inputTokens: 10n, maxOutputTokens: 90n });
        flaky.down = true;
        assert.equal((await first.admission.settle({ reservationId: d.reservationId, inputTokens: 10n, outputTokens: 3n })).duplicate, false, "recorded and acknowledged");
        assert.equal(first.cp.settlement.deferredCount(), 1);
        await first.stop(); // its deferred counter update dies with it
        flaky.down = false;
        const second = await startTestControlPlane({ dataDir, deps: { counters: flaky, clock: () => now } });
        try {
            assert.equal(await meterUsed(second.admission, "d", LimitKind.TOKENS, Window.MONTH), 100n, "the open lease still holds its estimate");
            now += 24 * 3_600_000;
            await second.cp.settlement.sweep();
            const ledger = await second.policy.getUsage({ tenant: "d" }, admin);
            assert.deepEqual([ledger.requests, ledger.inputTokens, ledger.outputTokens], [1n, 10n, 3n], "the acknowledged settle stands in the ledger");
            assert.equal(await meterUsed(second.admission, "d", LimitKind.TOKENS, Window.MONTH), 13n, "the meter follows the ledger, not the estimate");
        }
        finally {
            await second.close();
        }
    }
    finally {
        rmSync(dataDir, { recursive: true, force: true });
    }
});
//# sourceMappingURL=exactness.test.js.map