import { lookup as dnsLookup, type LookupAddress } from "node:dns";
import http from "node:http";
import https from "node:https";
import { BlockList, isIP, type LookupFunction } from "node:net";

export interface WebhookSendSettings {
  /** The whole attempt (connect, send, answer) within this, else it fails as a timeout. */
  readonly timeoutMs: number;
  /** Send to loopback, private, link-local and metadata addresses too (ADMISSION_WEBHOOK_ALLOW_PRIVATE_NETWORKS=1). */
  readonly allowPrivateNetworks: boolean;
}

export interface WebhookRequest {
  readonly url: string;
  readonly headers: Readonly<Record<string, string>>;
  readonly body: string;
}

/** What one attempt got: an HTTP status (0: none) and, when it failed before or without one, why. */
export interface WebhookSendResult {
  readonly httpStatus: number;
  readonly latencyMs: number;
  readonly error: string;
}

/** Response bytes read at most; the rest is discarded. */
export const maxResponseBytes = 64 * 1024;

/** Addresses a webhook may not reach unless private networks are allowed. */
const blocked = new BlockList();
for (const [net, prefix] of [
  ["0.0.0.0", 8], ["10.0.0.0", 8], ["100.64.0.0", 10], ["127.0.0.0", 8], ["169.254.0.0", 16], ["172.16.0.0", 12],
  ["192.0.0.0", 24], ["192.168.0.0", 16], ["198.18.0.0", 15], ["224.0.0.0", 4], ["240.0.0.0", 4],
] as const) blocked.addSubnet(net, prefix, "ipv4");
for (const [net, prefix] of [["::", 128], ["::1", 128], ["fc00::", 7], ["fe80::", 10], ["ff00::", 8], ["64:ff9b::", 96], ["2001:db8::", 32]] as const) {
  blocked.addSubnet(net, prefix, "ipv6");
}

/** Whether an IP address is loopback, private, link-local (the cloud metadata service), multicast or reserved. */
export function isPrivateAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return blocked.check(address, "ipv4");
  if (family !== 6) return true;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return blocked.check(mapped[1]!, "ipv4");
  return blocked.check(address, "ipv6");
}

class RefusedTargetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RefusedTargetError";
  }
}

/** DNS lookup that refuses a name resolving to a private address: checked on the address actually connected to. */
const guardedLookup: LookupFunction = (hostname, options, callback) => {
  dnsLookup(hostname, { ...options, all: true }, (err, addresses: LookupAddress[]) => {
    if (err) return callback(err, "", 0);
    const refused = addresses.find((a) => isPrivateAddress(a.address));
    if (refused) return callback(new RefusedTargetError(`${hostname} resolves to ${refused.address}, a private or reserved address`), "", 0);
    if (options.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, addresses);
    callback(null, addresses[0]!.address, addresses[0]!.family);
  });
};

/**
 * POSTs one webhook: no redirects followed (a 3xx is a failed attempt), at most
 * maxResponseBytes of the answer read, the whole attempt bounded by timeoutMs.
 * Never throws: every failure is a result.
 */
export function sendWebhook(req: WebhookRequest, settings: WebhookSendSettings): Promise<WebhookSendResult> {
  const started = performance.now();
  const done = (httpStatus: number, error: string): WebhookSendResult => ({ httpStatus, latencyMs: Math.round(performance.now() - started), error });
  let url: URL;
  try {
    url = new URL(req.url);
  } catch {
    return Promise.resolve(done(0, "invalid URL"));
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return Promise.resolve(done(0, `scheme ${url.protocol} refused`));
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (!settings.allowPrivateNetworks && isIP(host) && isPrivateAddress(host)) {
    return Promise.resolve(done(0, `refused target: ${host} is a private or reserved address (ADMISSION_WEBHOOK_ALLOW_PRIVATE_NETWORKS=1 allows it)`));
  }
  return new Promise((resolve) => {
    let settled = false;
    const finish = (status: number, error: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      request.destroy();
      resolve(done(status, error));
    };
    const client = url.protocol === "https:" ? https : http;
    const request = client.request(url, {
      method: "POST",
      headers: { ...req.headers, "content-type": "application/json", "content-length": Buffer.byteLength(req.body), "user-agent": "admission-webhooks/1" },
      lookup: settings.allowPrivateNetworks ? undefined : guardedLookup,
      agent: false,
    });
    const timer = setTimeout(() => finish(0, `timed out after ${settings.timeoutMs} ms`), settings.timeoutMs);
    request.on("error", (err) => {
      const refused = err instanceof RefusedTargetError || (err as { cause?: unknown }).cause instanceof RefusedTargetError;
      finish(0, refused ? `refused target: ${err.message} (ADMISSION_WEBHOOK_ALLOW_PRIVATE_NETWORKS=1 allows it)` : `${(err as NodeJS.ErrnoException).code ?? "error"}: ${err.message}`.slice(0, 500));
    });
    request.on("response", (res) => {
      const status = res.statusCode ?? 0;
      let read = 0;
      res.on("data", (chunk: Buffer) => {
        read += chunk.length;
        if (read >= maxResponseBytes) finish(status, status >= 200 && status < 300 ? "" : `HTTP ${status}`);
      });
      res.on("end", () => finish(status, status >= 200 && status < 300 ? "" : status >= 300 && status < 400 ? `HTTP ${status}: redirects are not followed` : `HTTP ${status}`));
      res.on("error", () => finish(status, status >= 200 && status < 300 ? "" : `HTTP ${status}`));
    });
    request.end(req.body);
  });
}
