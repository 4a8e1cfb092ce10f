import type { CounterStore } from "../../control-plane/counter-store.js";
import { MemoryCounterStore } from "../../control-plane/memory-counter-store.js";

/**
 * Memory counters that can lose everything at a chosen moment, as a Redis flush or an
 * empty restart would; `hook` runs once at the armed point (another replica's work).
 */
export class LosableCounterStore implements CounterStore {
  private inner = new MemoryCounterStore({ housekeepingMs: 0 });
  hook: { after: "settle" | "generation"; run: () => Promise<void> } | undefined;

  lose(): void {
    void this.inner.close();
    this.inner = new MemoryCounterStore({ housekeepingMs: 0 });
  }

  private async armed(point: "settle" | "generation"): Promise<void> {
    const hook = this.hook;
    if (hook?.after !== point) return;
    this.hook = undefined;
    await hook.run();
  }

  reserve: CounterStore["reserve"] = (r) => this.inner.reserve(r);
  settle: CounterStore["settle"] = async (r) => {
    const result = await this.inner.settle(r);
    await this.armed("settle");
    return result;
  };
  generation: CounterStore["generation"] = async (tenant) => {
    await this.armed("generation");
    return this.inner.generation(tenant);
  };
  renew: CounterStore["renew"] = (...a) => this.inner.renew(...a);
  markRecorded: CounterStore["markRecorded"] = (...a) => this.inner.markRecorded(...a);
  claimDue: CounterStore["claimDue"] = (...a) => this.inner.claimDue(...a);
  charge: CounterStore["charge"] = (...a) => this.inner.charge(...a);
  rebuild: CounterStore["rebuild"] = (...a) => this.inner.rebuild(...a);
  read: CounterStore["read"] = (...a) => this.inner.read(...a);
  reset: CounterStore["reset"] = (...a) => this.inner.reset(...a);
  openLeases: CounterStore["openLeases"] = (...a) => this.inner.openLeases(...a);
  ping: CounterStore["ping"] = () => this.inner.ping();
  close: CounterStore["close"] = () => this.inner.close();
}
