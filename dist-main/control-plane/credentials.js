import { hash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import * as jose from "jose";
const apiKeyPrefix = "ak_";
/** A new API key secret: 256 random bits, base64url, with a recognizable prefix. */
export function generateApiKeySecret(random = randomBytes) {
    return apiKeyPrefix + random(32).toString("base64url");
}
export function sha256Hex(secret) {
    return hash("sha256", secret, "hex");
}
function looksLikeJwt(credential) {
    return credential.startsWith("eyJ") && credential.split(".").length === 3;
}
/**
 * Authenticates API keys (SHA-256 lookup, constant-time compare, expiry,
 * revocation) and JWTs (algorithm allow-list, exp/nbf, issuer/audience).
 */
export class CredentialVerifier {
    jwt;
    clock;
    jwtKeys;
    jwtCache = new Map();
    static jwtCacheMax = 10_000;
    constructor(jwt, clock = Date.now) {
        this.jwt = jwt;
        this.clock = clock;
        this.jwtKeys = jwt.algorithms.length > 0 ? buildKeyResolver(jwt) : undefined;
    }
    /** Reads PEM files named in a comma-separated list. */
    static readPemFiles(paths) {
        return paths.split(",").map((p) => p.trim()).filter(Boolean).map((p) => readFileSync(p, "utf8"));
    }
    async authenticate(credential, snapshot) {
        if (!credential)
            return { ok: false, message: "missing credential" };
        if (credential.length > 8192)
            return { ok: false, message: "credential too long" };
        if (looksLikeJwt(credential))
            return this.authenticateJwt(credential, snapshot);
        return this.authenticateApiKey(credential, snapshot);
    }
    authenticateApiKey(secret, snapshot) {
        const hashHex = sha256Hex(secret);
        const key = snapshot.apiKeysByHash.get(hashHex);
        // The map lookup finds the candidate; the comparison of digests is constant-time.
        if (!key || !timingSafeEqual(key.hash, Buffer.from(hashHex, "hex")))
            return { ok: false, message: "invalid API key" };
        if (key.revoked)
            return { ok: false, message: `API key "${key.id}" is revoked` };
        if (key.expiresAtMs > 0 && this.clock() >= key.expiresAtMs)
            return { ok: false, message: `API key "${key.id}" expired` };
        return key.authenticated;
    }
    async authenticateJwt(token, snapshot) {
        if (!this.jwtKeys)
            return { ok: false, message: "JWT credentials are not enabled" };
        const nowMs = this.clock();
        const cached = this.jwtCache.get(token);
        if (cached && nowMs < cached.expiresAtMs)
            return this.checkJwtPrincipal(cached.principal, snapshot);
        let payload;
        try {
            ({ payload } = await jose.jwtVerify(token, this.jwtKeys, {
                algorithms: [...this.jwt.algorithms],
                issuer: this.jwt.issuer,
                audience: this.jwt.audience,
                clockTolerance: this.jwt.clockToleranceSec,
                currentDate: new Date(nowMs),
                requiredClaims: ["exp", "sub"],
            }));
        }
        catch (err) {
            return { ok: false, message: `invalid JWT: ${jwtErrorMessage(err)}` };
        }
        const tenant = typeof payload.tenant_id === "string" ? payload.tenant_id : "";
        if (!tenant || typeof payload.sub !== "string" || !payload.sub)
            return { ok: false, message: "invalid JWT: claims tenant_id and sub are required" };
        const principal = {
            tenant,
            user: payload.sub,
            keyId: "",
            tasks: null,
            atiId: typeof payload.ati_id === "string" ? payload.ati_id : undefined,
        };
        if (this.jwtCache.size >= CredentialVerifier.jwtCacheMax)
            this.jwtCache.clear();
        this.jwtCache.set(token, { principal, expiresAtMs: (payload.exp ?? 0) * 1000 });
        return this.checkJwtPrincipal(principal, snapshot);
    }
    checkJwtPrincipal(principal, snapshot) {
        const ctx = snapshot.tenantContext(principal.tenant);
        if (!ctx)
            return { ok: false, message: `invalid JWT: unknown tenant "${principal.tenant}"` };
        if (principal.atiId !== undefined && principal.atiId !== ctx.token.id) {
            return { ok: false, message: "invalid JWT: ati_id does not match the tenant's ATI token" };
        }
        return { ok: true, principal };
    }
}
function buildKeyResolver(settings) {
    const remote = settings.jwksUrl ? jose.createRemoteJWKSet(new URL(settings.jwksUrl)) : undefined;
    const secret = settings.hs256Secret ? new TextEncoder().encode(settings.hs256Secret) : undefined;
    const asymmetric = settings.algorithms.filter((alg) => alg !== "HS256");
    // Configured PEM keys become a local JWKS: jose then picks by kid/alg and
    // tries each matching key, which supports rotation without kids.
    const local = (settings.publicKeyPems ?? []).length > 0 ? localKeySet(settings.publicKeyPems, asymmetric) : undefined;
    return async (header, token) => {
        const alg = header.alg ?? "";
        if (!settings.algorithms.includes(alg))
            throw new jose.errors.JOSEAlgNotAllowed(`algorithm ${alg} is not allowed`);
        if (alg === "HS256") {
            if (!secret)
                throw new Error("no HS256 secret configured");
            return secret;
        }
        const keySet = remote ?? (local ? await local : undefined);
        if (!keySet)
            throw new Error(`no ${alg} key configured`);
        return keySet(header, token);
    };
}
async function localKeySet(pems, algorithms) {
    const keys = [];
    for (const pem of pems) {
        for (const alg of algorithms) {
            try {
                const key = await jose.importSPKI(pem, alg, { extractable: true });
                keys.push({ ...(await jose.exportJWK(key)), alg });
            }
            catch {
                // This PEM is not a key for this algorithm.
            }
        }
    }
    return jose.createLocalJWKSet({ keys });
}
function jwtErrorMessage(err) {
    if (err instanceof jose.errors.JWTExpired)
        return "expired";
    if (err instanceof jose.errors.JWTClaimValidationFailed)
        return `claim ${err.claim} ${err.reason === "check_failed" ? "is not valid" : err.reason}`;
    if (err instanceof jose.errors.JOSEAlgNotAllowed)
        return "algorithm not allowed";
    if (err instanceof jose.errors.JWSSignatureVerificationFailed)
        return "bad signature";
    if (err instanceof Error)
        return err.message.slice(0, 200);
    return "verification failed";
}
//# sourceMappingURL=credentials.js.map