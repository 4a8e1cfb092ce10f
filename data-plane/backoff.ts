/** Exponential backoff with full jitter: the delay grows from minMs to maxMs and resets on success. */
export class Backoff {
  private attempt = 0;

  constructor(private readonly options: { readonly minMs: number; readonly maxMs: number; readonly random?: () => number }) {}

  /** The delay before the next attempt; each call doubles the ceiling. */
  nextDelayMs(): number {
    const ceiling = Math.min(this.options.maxMs, this.options.minMs * 2 ** Math.min(this.attempt, 30));
    this.attempt++;
    const random = this.options.random ?? Math.random;
    // Never below minMs, so a flapping peer is not hammered.
    return Math.round(this.options.minMs + random() * (ceiling - this.options.minMs));
  }

  reset(): void {
    this.attempt = 0;
  }
}
