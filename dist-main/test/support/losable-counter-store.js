import { MemoryCounterStore } from "../../control-plane/memory-counter-store.js";
/**
 * Memory counters that can lose everything at a chosen moment, as a Redis flush or an
 * empty restart would; `hook` runs once at the armed point (another replica's work).
 */
export class LosableCounterStore {
    inner = new MemoryCounterStore({ housekeepingMs: 0 });
    hook;
    lose() {
        void this.inner.close();
        this.inner = new MemoryCounterStore({ housekeepingMs: 0 });
    }
    async armed(point) {
        const hook = this.hook;
        if (hook?.after !== point)
            return;
        this.hook = undefined;
        await hook.run();
    }
    reserve = (r) => this.inner.reserve(r);
    settle = async (r) => {
        const result = await this.inner.settle(r);
        await this.armed("settle");
        return result;
    };
    generation = async (tenant) => {
        await this.armed("generation");
        return this.inner.generation(tenant);
    };
    renew = (...a) => this.inner.renew(...a);
    markRecorded = (...a) => this.inner.markRecorded(...a);
    claimDue = (...a) => this.inner.claimDue(...a);
    charge = (...a) => this.inner.charge(...a);
    rebuild = (...a) => this.inner.rebuild(...a);
    read = (...a) => this.inner.read(...a);
    reset = (...a) => this.inner.reset(...a);
    ping = () => this.inner.ping();
    close = () => this.inner.close();
}
//# sourceMappingURL=losable-counter-store.js.map