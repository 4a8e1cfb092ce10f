/** Exponential backoff with full jitter: the delay grows from minMs to maxMs and resets on success. */
export class Backoff {
    options;
    attempt = 0;
    constructor(options) {
        this.options = options;
    }
    /** The delay before the next attempt; each call doubles the ceiling. */
    nextDelayMs() {
        const ceiling = Math.min(this.options.maxMs, this.options.minMs * 2 ** Math.min(this.attempt, 30));
        this.attempt++;
        const random = this.options.random ?? Math.random;
        // Never below minMs, so a flapping peer is not hammered.
        return Math.round(this.options.minMs + random() * (ceiling - this.options.minMs));
    }
    reset() {
        this.attempt = 0;
    }
}
//# sourceMappingURL=backoff.js.map