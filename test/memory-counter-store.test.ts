import { MemoryCounterStore } from "../control-plane/memory-counter-store.js";
import { counterStoreContract } from "./counter-store-contract.js";

counterStoreContract("memory", async (clock) => new MemoryCounterStore({ housekeepingMs: 0, clock }));
