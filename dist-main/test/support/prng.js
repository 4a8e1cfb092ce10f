/**
 * A seeded, reproducible pseudo-random generator (mulberry32) for fuzz tests:
 * the same seed replays the same inputs.
 */
export class Prng {
    seed;
    state;
    constructor(seed) {
        this.seed = seed;
        this.state = seed >>> 0;
    }
    /** Uniform in [0, 1). */
    next() {
        this.state = (this.state + 0x6d2b79f5) >>> 0;
        let t = this.state;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    }
    /** Integer in [0, n). */
    int(n) {
        return Math.floor(this.next() * n);
    }
    chance(p) {
        return this.next() < p;
    }
    pick(items) {
        return items[this.int(items.length)];
    }
    bytes(n) {
        const out = new Uint8Array(n);
        for (let i = 0; i < n; i++)
            out[i] = this.int(256);
        return out;
    }
    /** A string of `length` code points mixing ASCII, control characters, multi-byte and astral ones (always valid UTF-16). */
    string(length) {
        const points = [];
        while (points.length < length) {
            const alphabet = this.pick(alphabets);
            points.push(alphabet[this.int(alphabet.length)]);
        }
        return points.join("");
    }
    /** A length biased to small values with occasional large ones. */
    size(max) {
        const r = this.next();
        if (r < 0.6)
            return this.int(Math.min(16, max + 1));
        if (r < 0.9)
            return this.int(Math.min(1024, max + 1));
        return this.int(max + 1);
    }
}
const alphabets = ["abcXYZ019_-. ", "\u0000\u0001\t\r\n\"\\'<>{}", "éüß漢字дж", "😀🚀\u{103ff}"].map((a) => [...a]);
/** The seed: FUZZ_SEED when given (to replay a failure), otherwise a fresh one. */
export function fuzzSeed() {
    const given = process.env.FUZZ_SEED;
    if (given !== undefined && given !== "") {
        const seed = Number(given);
        if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff)
            throw new Error(`FUZZ_SEED must be an integer in [0, 2^32), got "${given}"`);
        return seed;
    }
    return Math.floor(Math.random() * 0xffffffff);
}
//# sourceMappingURL=prng.js.map