import { createHmac, randomBytes } from "node:crypto";

/** Standard Webhooks secrets: "whsec_" + base64 of the HMAC key. */
const secretPrefix = "whsec_";
const base64Pattern = /^[A-Za-z0-9+/]+={0,2}$/;
const minKeyBytes = 24;
const maxKeyBytes = 64;

/** A fresh secret: 32 random bytes. */
export function generateWebhookSecret(): string {
  return `${secretPrefix}${randomBytes(32).toString("base64")}`;
}

/** Why `secret` is not a usable Standard Webhooks secret, or undefined when it is. */
export function webhookSecretProblem(secret: string): string | undefined {
  const body = secret.startsWith(secretPrefix) ? secret.slice(secretPrefix.length) : undefined;
  if (body === undefined || !base64Pattern.test(body) || body.length % 4 !== 0) return `must be "${secretPrefix}" followed by base64`;
  const bytes = Buffer.from(body, "base64").length;
  if (bytes < minKeyBytes || bytes > maxKeyBytes) return `must hold ${minKeyBytes}-${maxKeyBytes} bytes of key (it holds ${bytes})`;
  return undefined;
}

/**
 * The `webhook-signature` header value for one message: "v1," + base64 HMAC-SHA256 of
 * "id.timestamp.body" under each secret's key, space-separated (several while a secret is rotated).
 */
export function webhookSignature(secrets: readonly string[], id: string, timestampSec: number, body: string): string {
  return secrets
    .map((secret) => {
      const key = Buffer.from(secret.slice(secretPrefix.length), "base64");
      return `v1,${createHmac("sha256", key).update(`${id}.${timestampSec}.${body}`).digest("base64")}`;
    })
    .join(" ");
}
