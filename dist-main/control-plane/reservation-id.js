import { createHmac, createSecretKey, timingSafeEqual } from "node:crypto";
const version = "r1";
export class ReservationSigner {
    key;
    constructor(secret) {
        if (secret.length < 32)
            throw new Error("reservation signing secret must be at least 32 characters");
        this.key = createSecretKey(Buffer.from(secret, "utf8"));
    }
    sign(c) {
        const payload = Buffer.from(JSON.stringify([c.tenant, c.leaseId, c.user, c.keyId, c.task, c.model, c.provider, c.requestId, c.reservedAtMs, c.inputTokens, c.maxOutputTokens, c.costMicros])).toString("base64url");
        return `${version}.${payload}.${this.mac(payload)}`;
    }
    /** The claims of a genuine id, or undefined for anything else. */
    verify(id) {
        if (id.length > 2048)
            return undefined;
        const [prefix, payload, mac, extra] = id.split(".");
        if (prefix !== version || !payload || !mac || extra !== undefined)
            return undefined;
        const expected = Buffer.from(this.mac(payload));
        const given = Buffer.from(mac);
        if (expected.length !== given.length || !timingSafeEqual(expected, given))
            return undefined;
        try {
            const a = JSON.parse(Buffer.from(payload, "base64url").toString("utf8"));
            return {
                tenant: String(a[0]), leaseId: String(a[1]), user: String(a[2]), keyId: String(a[3]), task: String(a[4]),
                model: String(a[5]), provider: String(a[6]), requestId: String(a[7]), reservedAtMs: Number(a[8]),
                inputTokens: Number(a[9]), maxOutputTokens: Number(a[10]), costMicros: Number(a[11]),
            };
        }
        catch {
            return undefined;
        }
    }
    mac(payload) {
        // The first 18 bytes of the HMAC-SHA256, in base64url: the first 24 characters of the whole digest's.
        return createHmac("sha256", this.key).update(payload).digest("base64url").slice(0, 24);
    }
}
//# sourceMappingURL=reservation-id.js.map