import { MemoryCounterStore } from "../control-plane/memory-counter-store.js";
import { counterStoreContract } from "./counter-store-contract.js";
counterStoreContract("memory", async () => new MemoryCounterStore({ housekeepingMs: 0 }));
//# sourceMappingURL=memory-counter-store.test.js.map