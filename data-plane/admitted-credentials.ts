import { createHmac, randomBytes } from "node:crypto";
import type { Route } from "../gen/admission/v1/admission_pb.js";

/** What a request asks for: the API path (after /v1), the task and the model as the client named it. */
export interface AdmissionAsk {
  readonly path: string;
  readonly task: string;
  readonly model: string;
}

/** A remembered admission: whose credential it is and the route candidates it was given. */
export interface RememberedAdmission {
  readonly tenant: string;
  readonly routes: readonly Route[];
}

export interface AdmittedCredentialsOptions {
  /** An admission older than this is forgotten: its credential is served no more on it. */
  readonly ttlMs: number;
  /** Credentials remembered at most; the least recently admitted is forgotten first. */
  readonly maxCredentials: number;
  /** (path, task, model) asks remembered per credential at most; the least recently admitted is forgotten first. */
  readonly maxAsksPerCredential?: number;
  readonly clock?: () => number;
}

interface Entry {
  readonly tenant: string;
  /** By path, task and model, least recently admitted first. */
  readonly asks: Map<string, { routes: readonly Route[]; admittedAtMs: number }>;
  lastAdmittedAtMs: number;
}

/**
 * The credentials this data plane saw admitted recently, for FAIL_OPEN: what
 * it may serve while the control plane cannot be asked. A credential is known
 * only by an HMAC-SHA256 of it under a key drawn at random per process, so
 * this memory holds no secret and no plain hash that could be matched against
 * a credential elsewhere. An entry keeps the tenant and, per (path, task,
 * model), the routes of the last admission and when it happened; it is
 * bounded (least recently admitted evicted first) and expires `ttlMs` after
 * the admission. Any other answer of the control plane for a credential
 * (a denial, a refusal) forgets it at once.
 */
export class AdmittedCredentials {
  /** By digest, least recently admitted first (an admission moves its entry to the end). */
  private readonly entries = new Map<string, Entry>();
  private readonly key = randomBytes(32);
  private readonly clock: () => number;
  private readonly maxAsks: number;

  constructor(private readonly options: AdmittedCredentialsOptions) {
    this.clock = options.clock ?? Date.now;
    this.maxAsks = options.maxAsksPerCredential ?? 64;
  }

  /** The control plane allowed `ask` for this credential, on these routes. */
  admitted(credential: string, ask: AdmissionAsk, admission: RememberedAdmission): void {
    if (admission.routes.length === 0) return;
    const digest = this.digest(credential);
    const nowMs = this.clock();
    let entry = this.entries.get(digest);
    this.entries.delete(digest);
    if (!entry || entry.tenant !== admission.tenant) entry = { tenant: admission.tenant, asks: new Map(), lastAdmittedAtMs: nowMs };
    entry.lastAdmittedAtMs = nowMs;
    this.entries.set(digest, entry);
    const askKey = keyOf(ask);
    const known = entry.asks.get(askKey);
    entry.asks.delete(askKey);
    // Every decision decodes new route objects: keep the ones held when they are the same.
    entry.asks.set(askKey, { routes: known && sameRoutes(known.routes, admission.routes) ? known.routes : admission.routes, admittedAtMs: nowMs });
    if (entry.asks.size > this.maxAsks) entry.asks.delete(entry.asks.keys().next().value!);
    this.evict(nowMs);
  }

  /** The control plane said anything but "allowed" for this credential: forget it. */
  forget(credential: string): void {
    this.entries.delete(this.digest(credential));
  }

  /** The admission remembered for this credential and ask, if it is recent enough; undefined otherwise. */
  lookup(credential: string, ask: AdmissionAsk): RememberedAdmission | undefined {
    const digest = this.digest(credential);
    const entry = this.entries.get(digest);
    if (!entry) return undefined;
    const nowMs = this.clock();
    if (this.expired(entry.lastAdmittedAtMs, nowMs)) {
      this.entries.delete(digest);
      return undefined;
    }
    const askKey = keyOf(ask);
    const known = entry.asks.get(askKey);
    if (!known) return undefined;
    if (this.expired(known.admittedAtMs, nowMs)) {
      entry.asks.delete(askKey);
      return undefined;
    }
    return { tenant: entry.tenant, routes: known.routes };
  }

  /** Credentials remembered (expired ones included until they are swept). */
  size(): number {
    return this.entries.size;
  }

  private digest(credential: string): string {
    return createHmac("sha256", this.key).update(credential).digest("base64url");
  }

  private expired(atMs: number, nowMs: number): boolean {
    return nowMs - atMs >= this.options.ttlMs;
  }

  /** Drops entries over the bound and expired ones, from the least recently admitted on. */
  private evict(nowMs: number): void {
    for (const [digest, entry] of this.entries) {
      if (this.entries.size <= this.options.maxCredentials && !this.expired(entry.lastAdmittedAtMs, nowMs)) return;
      this.entries.delete(digest);
    }
  }
}

function keyOf(ask: AdmissionAsk): string {
  return `${ask.path}\u0000${ask.task}\u0000${ask.model}`;
}

/** The same candidates in the same order. */
function sameRoutes(a: readonly Route[], b: readonly Route[]): boolean {
  return a.length === b.length && a.every((r, i) => r.provider === b[i]!.provider && r.model === b[i]!.model && r.providerModel === b[i]!.providerModel && r.modelClass === b[i]!.modelClass);
}
