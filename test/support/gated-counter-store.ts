import type { ReserveRequest, ReserveResult } from "../../control-plane/counter-store.js";
import { MemoryCounterStore } from "../../control-plane/memory-counter-store.js";

/**
 * Counters whose reserve() can be held at a gate: the calls being decided
 * stay in flight as long as the test wants, and the store counts how many
 * calls reached it and how many were ever inside at once. (A fake peer of the
 * control plane: what is under test is the control plane around it.)
 */
export class GatedCounterStore extends MemoryCounterStore {
  inside = 0;
  maxInside = 0;
  calls = 0;
  private gate: Promise<void> | undefined;
  private open: (() => void) | undefined;

  hold(): void {
    this.gate = new Promise((resolve) => (this.open = resolve));
  }

  release(): void {
    this.open?.();
    this.gate = undefined;
  }

  override async reserve(request: ReserveRequest): Promise<ReserveResult> {
    this.calls++;
    this.inside++;
    this.maxInside = Math.max(this.maxInside, this.inside);
    try {
      await this.gate;
      return await super.reserve(request);
    } finally {
      this.inside--;
    }
  }
}
