import { create, fromJson, toJson, type DescMessage, type JsonValue } from "@bufbuild/protobuf";
import { status as Code } from "@grpc/grpc-js";
import type { Logger } from "pino";
import type { Change } from "../../gen/admission/v1/policy_service_pb.js";
import { ChangeAction, ChangeSchema } from "../../gen/admission/v1/policy_service_pb.js";
import type { ApiKey, Bundle, Webhook } from "../../gen/admission/v1/policy_pb.js";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { timestampMs } from "../timestamps.js";
import {
  ApiKeySchema, AtiTokenSchema, BundleSchema, FailurePolicy, ModelSchema, PlanSchema, TaskSchema, TenantSchema, UserSchema, WebhookSchema,
} from "../../gen/admission/v1/policy_pb.js";
import { sha256Hex } from "../credentials.js";
import { generateWebhookSecret } from "../webhook-signing.js";
import type { WebhookEvents } from "../webhook-events.js";
import type { Metrics } from "../metrics.js";
import { RpcError } from "../rpc-error.js";
import type { AuditLog } from "../store/audit-log.js";
import type { ConfigRepository, EntityRecord } from "../store/config-repository.js";
import { PolicySnapshot } from "./policy-snapshot.js";
import { BundleValidationError } from "./validate-bundle.js";

type ListField = "models" | "tasks" | "plans" | "atiTokens" | "tenants" | "users" | "apiKeys" | "webhooks";

interface EntityKind {
  readonly kind: string;
  readonly list: ListField;
  readonly schema: DescMessage;
  readonly id: (entity: any) => string;
}

/** Entity kinds in dependency order (a later kind refers to earlier ones). */
const entityKinds: readonly EntityKind[] = [
  { kind: "model", list: "models", schema: ModelSchema, id: (e) => e.name },
  { kind: "task", list: "tasks", schema: TaskSchema, id: (e) => e.code },
  { kind: "plan", list: "plans", schema: PlanSchema, id: (e) => e.code },
  { kind: "ati_token", list: "atiTokens", schema: AtiTokenSchema, id: (e) => e.id },
  { kind: "tenant", list: "tenants", schema: TenantSchema, id: (e) => e.id },
  { kind: "user", list: "users", schema: UserSchema, id: (e) => `${e.tenant}/${e.id}` },
  { kind: "api_key", list: "apiKeys", schema: ApiKeySchema, id: (e) => e.id },
  { kind: "webhook", list: "webhooks", schema: WebhookSchema, id: (e) => e.id },
];

export interface PolicyManagerDeps {
  readonly repository: ConfigRepository;
  readonly audit: Pick<AuditLog, "record">;
  /** admin.change events go to operator endpoints, committed with the change. */
  readonly events?: Pick<WebhookEvents, "event" | "write" | "committed">;
  readonly metrics: Metrics;
  readonly logger: Logger;
  readonly defaultFailurePolicy: FailurePolicy;
  /** Safety-net version check period, in addition to change notifications. */
  readonly pollIntervalMs: number;
  readonly clock?: () => number;
}

/**
 * Owns the policy: the immutable snapshot decisions read, swapped atomically;
 * admin changes validated as a whole, persisted, then swapped; changes made by
 * other replicas picked up through notifications and a periodic version check.
 */
export class PolicyManager {
  private current: PolicySnapshot;
  private queue: Promise<unknown> = Promise.resolve();
  private unwatch: (() => Promise<void>) | undefined;
  private poller: NodeJS.Timeout | undefined;
  private readonly clock: () => number;
  private readonly swapListeners: Array<(previous: PolicySnapshot, next: PolicySnapshot) => void> = [];

  constructor(private readonly deps: PolicyManagerDeps) {
    this.current = PolicySnapshot.empty(deps.defaultFailurePolicy);
    this.clock = deps.clock ?? Date.now;
  }

  /** The snapshot in use; never changes under a caller that holds it. */
  snapshot(): PolicySnapshot {
    return this.current;
  }

  /** Loads the stored config and starts following changes. */
  async start(): Promise<void> {
    await this.reload();
    this.unwatch = await this.deps.repository.watch((version) => {
      if (version > this.current.version) void this.serialized(() => this.reload());
    });
    if (this.deps.pollIntervalMs > 0) {
      this.poller = setInterval(() => void this.serialized(() => this.reloadIfStale()), this.deps.pollIntervalMs);
      this.poller.unref();
    }
  }

  async stop(): Promise<void> {
    if (this.poller) clearInterval(this.poller);
    await this.unwatch?.();
    await this.queue.catch(() => undefined);
  }

  /** Upserts every entity of the bundle; with dryRun only returns the diff. */
  apply(bundle: Bundle, options: { dryRun: boolean; actor: string }): Promise<{ changes: Change[]; version: number }> {
    return this.serialized(() => this.applyNow(bundle, options));
  }

  /** Deletes one entity (and, for a tenant with cascade, its users and keys). */
  delete(kind: string, id: string, options: { actor: string; cascade?: boolean }): Promise<number> {
    return this.serialized(async () => {
      for (let attempt = 0; ; attempt++) {
        const base = this.current;
        const spec = entityKinds.find((k) => k.kind === kind)!;
        const existing = (base.bundle[spec.list] as any[]).find((e) => spec.id(e) === id);
        if (!existing) throw new RpcError(Code.NOT_FOUND, `${kind} "${id}" not found`);
        const deletes = [{ kind, id }];
        if (kind === "tenant") {
          const users = base.bundle.users.filter((u) => u.tenant === id).map((u) => ({ kind: "user", id: `${u.tenant}/${u.id}` }));
          const keys = base.bundle.apiKeys.filter((k) => k.tenant === id).map((k) => ({ kind: "api_key", id: k.id }));
          const webhooks = base.bundle.webhooks.filter((w) => w.tenant === id).map((w) => ({ kind: "webhook", id: w.id }));
          if (!options.cascade && users.length + keys.length + webhooks.length > 0) {
            throw new RpcError(Code.FAILED_PRECONDITION, `tenant "${id}" has ${users.length} users, ${keys.length} API keys and ${webhooks.length} webhooks; delete them first or set cascade`);
          }
          deletes.push(...users, ...keys, ...webhooks);
        }
        const merged = mergeBundle(base.bundle, undefined, deletes);
        try {
          PolicySnapshot.compile(merged, base.version, this.deps.defaultFailurePolicy);
        } catch (err) {
          if (err instanceof BundleValidationError) throw new RpcError(Code.FAILED_PRECONDITION, `cannot delete ${kind} "${id}": ${err.message}`);
          throw err;
        }
        const version = await this.save(base, merged, [], deletes, attempt, {
          actor: options.actor, changes: deletes.map((d) => ({ kind: d.kind, id: d.id, action: "DELETE", fields: [] })),
        });
        if (version === undefined) continue;
        this.deps.audit.record({ kind: "admin.delete", actor: options.actor, tenant: kind === "tenant" ? id : tenantOf(existing), message: `deleted ${deletes.map((d) => `${d.kind} "${d.id}"`).join(", ")}`, attributes: { version: String(version) } });
        return version;
      }
    });
  }

  /** Marks an API key revoked. */
  async revokeApiKey(id: string, actor: string): Promise<ApiKey> {
    const key = this.current.bundle.apiKeys.find((k) => k.id === id);
    if (!key) throw new RpcError(Code.NOT_FOUND, `api_key "${id}" not found`);
    const revoked = create(ApiKeySchema, { ...key, revoked: true });
    await this.apply(create(BundleSchema, { apiKeys: [revoked] }), { dryRun: false, actor });
    return this.current.bundle.apiKeys.find((k) => k.id === id)!;
  }

  private async applyNow(bundle: Bundle, options: { dryRun: boolean; actor: string }): Promise<{ changes: Change[]; version: number }> {
    const incoming = hashSecrets(bundle, this.clock());
    // A webhook applied without a secret keeps the one it has; a new one gets a fresh one, returned once.
    const unsecured = incoming.webhooks.filter((w) => !w.secret);
    const generated = new Map<string, string>();
    for (let attempt = 0; ; attempt++) {
      const base = this.current;
      for (const w of unsecured) {
        const existing = base.webhooks.get(w.id)?.secret;
        if (existing) {
          w.secret = existing;
          generated.delete(w.id);
        } else {
          w.secret = generated.get(w.id) ?? generateWebhookSecret();
          generated.set(w.id, w.secret);
        }
      }
      for (const w of incoming.webhooks) rotateSecret(w, base.webhooks.get(w.id), this.clock());
      try {
        PolicySnapshot.compile(mergeBundle(base.bundle, incoming, []), base.version, this.deps.defaultFailurePolicy);
      } catch (err) {
        if (err instanceof BundleValidationError) throw new RpcError(Code.INVALID_ARGUMENT, err.message);
        throw err;
      }
      // Validated: from here on only the hash of an imported secret exists.
      for (const key of incoming.apiKeys) key.secret = "";
      const merged = mergeBundle(base.bundle, incoming, []);
      const { changes, upserts } = diff(base.bundle, incoming);
      if (options.dryRun) return { changes, version: base.version };
      for (const c of changes) if (c.kind === "webhook" && generated.has(c.id)) c.generatedSecret = generated.get(c.id)!;
      if (upserts.length === 0) return { changes, version: base.version };
      const changed = changes.filter((c) => c.action !== ChangeAction.UNCHANGED);
      const version = await this.save(base, merged, upserts, [], attempt, {
        actor: options.actor, changes: changed.map((c) => ({ kind: c.kind, id: c.id, action: ChangeAction[c.action], fields: c.fields })),
      });
      if (version === undefined) continue;
      const tenants = new Set(changed.map((c) => (c.kind === "tenant" ? c.id : c.kind === "user" ? c.id.split("/")[0]! : "")).filter(Boolean));
      this.deps.audit.record({
        kind: "admin.apply",
        actor: options.actor,
        tenant: tenants.size === 1 ? [...tenants][0]! : "",
        message: `applied bundle: ${changed.map((c) => `${ChangeAction[c.action].toLowerCase()} ${c.kind} "${c.id}"${c.fields.length ? ` (${c.fields.join(", ")})` : ""}`).join("; ").slice(0, 2000)}`,
        attributes: { version: String(version), changes: String(changed.length) },
      });
      return { changes, version };
    }
  }

  /**
   * Persists and swaps; undefined when another replica changed the config first (retry on the fresh one).
   * The admin.change event (`change`: who changed what, never a value) commits with it.
   */
  private async save(
    base: PolicySnapshot, merged: Bundle, upserts: EntityRecord[], deletes: Array<{ kind: string; id: string }>, attempt: number,
    change: { actor: string; changes: Array<{ kind: string; id: string; action: string; fields: string[] }> },
  ): Promise<number | undefined> {
    let version: number;
    // The endpoints as they are after the change: an operator endpoint hears of its own creation.
    const event = this.deps.events?.event("admin.change", "", { actor: change.actor, changes: change.changes }, merged.webhooks);
    try {
      version = await this.deps.repository.save({
        upserts, deletes, expectedVersion: base.version,
        alsoInTransaction: event && ((tx, v) => this.deps.events!.write(tx, [{ ...event, data: { ...event.data, version: v } }])),
      });
      if (event) this.deps.events!.committed();
    } catch (err) {
      if ((err as Error).name === "ConflictError" && attempt < 5) {
        await this.reload();
        return undefined;
      }
      throw err;
    }
    this.swap(PolicySnapshot.compile(merged, version, this.deps.defaultFailurePolicy));
    return version;
  }

  private async reloadIfStale(): Promise<void> {
    try {
      if ((await this.deps.repository.version()) > this.current.version) await this.reload();
    } catch (err) {
      this.deps.logger.warn({ err: String(err) }, "policy version check failed");
    }
  }

  /** Loads the stored config; a config that does not compile is rejected and the old snapshot keeps serving. */
  private async reload(): Promise<void> {
    const { version, entities } = await this.deps.repository.load();
    if (version <= this.current.version && this.current.version !== 0) return;
    try {
      this.swap(PolicySnapshot.compile(bundleFromEntities(entities), version, this.deps.defaultFailurePolicy));
      this.deps.metrics.policyReloads.inc({ result: "ok" });
    } catch (err) {
      this.deps.metrics.policyReloads.inc({ result: "rejected" });
      this.deps.logger.error({ err: String(err), version }, "stored policy rejected; the previous snapshot keeps serving");
    }
  }

  /** Calls `listener` after every snapshot swap, with the snapshot it replaced. */
  onSwap(listener: (previous: PolicySnapshot, next: PolicySnapshot) => void): void {
    this.swapListeners.push(listener);
  }

  private swap(next: PolicySnapshot): void {
    const previous = this.current;
    this.current = next;
    for (const listener of this.swapListeners) listener(previous, next);
    this.deps.metrics.policyVersion.set(next.version);
    this.deps.logger.info({ version: next.version, tenants: next.tenants.size, keys: next.apiKeys.size }, "policy snapshot swapped");
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.queue.then(fn, fn);
    this.queue = run.catch(() => undefined);
    return run;
  }
}

/** Replaces a key's secret by its hash; keeps the secret only until validation is done. */
function hashSecrets(bundle: Bundle, nowMs: number): Bundle {
  const copy = create(BundleSchema, bundle);
  copy.apiKeys = bundle.apiKeys.map((k) => {
    const key = create(ApiKeySchema, k);
    if (key.secret) key.secretSha256 = sha256Hex(key.secret);
    if (!key.createdAt) key.createdAt = { $typeName: "google.protobuf.Timestamp", seconds: BigInt(Math.floor(nowMs / 1000)), nanos: 0 };
    return key;
  });
  copy.webhooks = bundle.webhooks.map((w) => create(WebhookSchema, w));
  return copy;
}

/** How long a replaced webhook secret still signs, next to the new one. */
export const webhookSecretOverlapMs = 86_400_000;

/**
 * A webhook's previous secret is the control plane's to set: the one a change of secret
 * replaced, kept signing for webhookSecretOverlapMs; an unchanged secret keeps the rotation
 * under way (until it ends).
 */
function rotateSecret(w: Webhook, existing: Webhook | undefined, nowMs: number): void {
  w.previousSecret = "";
  w.previousSecretExpiresAt = undefined;
  if (!existing) return;
  if (existing.secret !== w.secret) {
    w.previousSecret = existing.secret;
    w.previousSecretExpiresAt = timestampFromMs(nowMs + webhookSecretOverlapMs);
  } else if (existing.previousSecret && timestampMs(existing.previousSecretExpiresAt) > nowMs) {
    w.previousSecret = existing.previousSecret;
    w.previousSecretExpiresAt = existing.previousSecretExpiresAt;
  }
}

function mergeBundle(base: Bundle, upserts: Bundle | undefined, deletes: ReadonlyArray<{ kind: string; id: string }>): Bundle {
  const merged = create(BundleSchema);
  for (const spec of entityKinds) {
    const byId = new Map<string, unknown>();
    for (const e of base[spec.list] as any[]) byId.set(spec.id(e), e);
    for (const e of (upserts?.[spec.list] ?? []) as any[]) {
      const previous = byId.get(spec.id(e)) as ApiKey | undefined;
      // Re-applying an exported key (hash only) or a revoked flag keeps its creation time.
      if (spec.kind === "api_key" && previous && !e.createdAt) e.createdAt = previous.createdAt;
      byId.set(spec.id(e), e);
    }
    for (const d of deletes) if (d.kind === spec.kind) byId.delete(d.id);
    (merged[spec.list] as unknown[]) = [...byId.values()];
  }
  return merged;
}

function entityJson(spec: EntityKind, entity: any): Record<string, JsonValue> {
  const json = toJson(spec.schema, entity) as Record<string, JsonValue>;
  // An API key keeps only its secret's hash; a webhook needs its secret to sign (it is never returned).
  if (spec.kind !== "webhook") delete json.secret;
  return json;
}

function diff(base: Bundle, incoming: Bundle): { changes: Change[]; upserts: EntityRecord[] } {
  const changes: Change[] = [];
  const upserts: EntityRecord[] = [];
  for (const spec of entityKinds) {
    const existing = new Map((base[spec.list] as any[]).map((e) => [spec.id(e), entityJson(spec, e)]));
    for (const entity of incoming[spec.list] as any[]) {
      const id = spec.id(entity);
      const after = entityJson(spec, entity);
      if (spec.kind === "api_key" && !after.createdAt) delete after.createdAt;
      const before = existing.get(id);
      const fields = before ? changedFields(before, after, spec.kind === "api_key" ? ["createdAt"] : []) : [];
      const action = !before ? ChangeAction.CREATE : fields.length > 0 ? ChangeAction.UPDATE : ChangeAction.UNCHANGED;
      changes.push(create(ChangeSchema, { kind: spec.kind, id, action, fields }));
      if (action !== ChangeAction.UNCHANGED) upserts.push({ kind: spec.kind, id, body: before?.createdAt && !after.createdAt ? { ...after, createdAt: before.createdAt } : after });
    }
  }
  return { changes, upserts };
}

function changedFields(before: Record<string, JsonValue>, after: Record<string, JsonValue>, ignore: string[]): string[] {
  const names = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...names].filter((n) => !ignore.includes(n) && JSON.stringify(before[n]) !== JSON.stringify(after[n]));
}

export function bundleFromEntities(entities: readonly EntityRecord[]): Bundle {
  const bundle = create(BundleSchema);
  for (const spec of entityKinds) {
    (bundle[spec.list] as unknown[]) = entities.filter((e) => e.kind === spec.kind).map((e) => fromJson(spec.schema, e.body as JsonValue));
  }
  return bundle;
}

function tenantOf(entity: any): string {
  return typeof entity?.tenant === "string" ? entity.tenant : "";
}
