import { create, fromJson, toJson } from "@bufbuild/protobuf";
import { status as Code } from "@grpc/grpc-js";
import { ChangeAction, ChangeSchema } from "../../gen/admission/v1/policy_service_pb.js";
import { ApiKeySchema, AtiTokenSchema, BundleSchema, ModelSchema, PlanSchema, TaskSchema, TenantSchema, UserSchema, } from "../../gen/admission/v1/policy_pb.js";
import { sha256Hex } from "../credentials.js";
import { RpcError } from "../rpc-error.js";
import { PolicySnapshot } from "./policy-snapshot.js";
import { BundleValidationError } from "./validate-bundle.js";
/** Entity kinds in dependency order (a later kind refers to earlier ones). */
const entityKinds = [
    { kind: "model", list: "models", schema: ModelSchema, id: (e) => e.name },
    { kind: "task", list: "tasks", schema: TaskSchema, id: (e) => e.code },
    { kind: "plan", list: "plans", schema: PlanSchema, id: (e) => e.code },
    { kind: "ati_token", list: "atiTokens", schema: AtiTokenSchema, id: (e) => e.id },
    { kind: "tenant", list: "tenants", schema: TenantSchema, id: (e) => e.id },
    { kind: "user", list: "users", schema: UserSchema, id: (e) => `${e.tenant}/${e.id}` },
    { kind: "api_key", list: "apiKeys", schema: ApiKeySchema, id: (e) => e.id },
];
/**
 * Owns the policy: the immutable snapshot decisions read, swapped atomically;
 * admin changes validated as a whole, persisted, then swapped; changes made by
 * other replicas picked up through notifications and a periodic version check.
 */
export class PolicyManager {
    deps;
    current;
    queue = Promise.resolve();
    unwatch;
    poller;
    clock;
    swapListeners = [];
    constructor(deps) {
        this.deps = deps;
        this.current = PolicySnapshot.empty(deps.defaultFailurePolicy);
        this.clock = deps.clock ?? Date.now;
    }
    /** The snapshot in use; never changes under a caller that holds it. */
    snapshot() {
        return this.current;
    }
    /** Loads the stored config and starts following changes. */
    async start() {
        await this.reload();
        this.unwatch = await this.deps.repository.watch((version) => {
            if (version > this.current.version)
                void this.serialized(() => this.reload());
        });
        if (this.deps.pollIntervalMs > 0) {
            this.poller = setInterval(() => void this.serialized(() => this.reloadIfStale()), this.deps.pollIntervalMs);
            this.poller.unref();
        }
    }
    async stop() {
        if (this.poller)
            clearInterval(this.poller);
        await this.unwatch?.();
        await this.queue.catch(() => undefined);
    }
    /** Upserts every entity of the bundle; with dryRun only returns the diff. */
    apply(bundle, options) {
        return this.serialized(() => this.applyNow(bundle, options));
    }
    /** Deletes one entity (and, for a tenant with cascade, its users and keys). */
    delete(kind, id, options) {
        return this.serialized(async () => {
            for (let attempt = 0;; attempt++) {
                const base = this.current;
                const spec = entityKinds.find((k) => k.kind === kind);
                const existing = base.bundle[spec.list].find((e) => spec.id(e) === id);
                if (!existing)
                    throw new RpcError(Code.NOT_FOUND, `${kind} "${id}" not found`);
                const deletes = [{ kind, id }];
                if (kind === "tenant") {
                    const users = base.bundle.users.filter((u) => u.tenant === id).map((u) => ({ kind: "user", id: `${u.tenant}/${u.id}` }));
                    const keys = base.bundle.apiKeys.filter((k) => k.tenant === id).map((k) => ({ kind: "api_key", id: k.id }));
                    if (!options.cascade && users.length + keys.length > 0) {
                        throw new RpcError(Code.FAILED_PRECONDITION, `tenant "${id}" has ${users.length} users and ${keys.length} API keys; delete them first or set cascade`);
                    }
                    deletes.push(...users, ...keys);
                }
                const merged = mergeBundle(base.bundle, undefined, deletes);
                try {
                    PolicySnapshot.compile(merged, base.version, this.deps.defaultFailurePolicy);
                }
                catch (err) {
                    if (err instanceof BundleValidationError)
                        throw new RpcError(Code.FAILED_PRECONDITION, `cannot delete ${kind} "${id}": ${err.message}`);
                    throw err;
                }
                const version = await this.save(base, merged, [], deletes, attempt);
                if (version === undefined)
                    continue;
                this.deps.audit.record({ kind: "admin.delete", actor: options.actor, tenant: kind === "tenant" ? id : tenantOf(existing), message: `deleted ${deletes.map((d) => `${d.kind} "${d.id}"`).join(", ")}`, attributes: { version: String(version) } });
                return version;
            }
        });
    }
    /** Marks an API key revoked. */
    async revokeApiKey(id, actor) {
        const key = this.current.bundle.apiKeys.find((k) => k.id === id);
        if (!key)
            throw new RpcError(Code.NOT_FOUND, `api_key "${id}" not found`);
        const revoked = create(ApiKeySchema, { ...key, revoked: true });
        await this.apply(create(BundleSchema, { apiKeys: [revoked] }), { dryRun: false, actor });
        return this.current.bundle.apiKeys.find((k) => k.id === id);
    }
    async applyNow(bundle, options) {
        const incoming = hashSecrets(bundle, this.clock());
        for (let attempt = 0;; attempt++) {
            const base = this.current;
            try {
                PolicySnapshot.compile(mergeBundle(base.bundle, incoming, []), base.version, this.deps.defaultFailurePolicy);
            }
            catch (err) {
                if (err instanceof BundleValidationError)
                    throw new RpcError(Code.INVALID_ARGUMENT, err.message);
                throw err;
            }
            // Validated: from here on only the hash of an imported secret exists.
            for (const key of incoming.apiKeys)
                key.secret = "";
            const merged = mergeBundle(base.bundle, incoming, []);
            const { changes, upserts } = diff(base.bundle, incoming);
            if (options.dryRun)
                return { changes, version: base.version };
            if (upserts.length === 0)
                return { changes, version: base.version };
            const version = await this.save(base, merged, upserts, [], attempt);
            if (version === undefined)
                continue;
            const changed = changes.filter((c) => c.action !== ChangeAction.UNCHANGED);
            const tenants = new Set(changed.map((c) => (c.kind === "tenant" ? c.id : c.kind === "user" ? c.id.split("/")[0] : "")).filter(Boolean));
            this.deps.audit.record({
                kind: "admin.apply",
                actor: options.actor,
                tenant: tenants.size === 1 ? [...tenants][0] : "",
                message: `applied bundle: ${changed.map((c) => `${ChangeAction[c.action].toLowerCase()} ${c.kind} "${c.id}"${c.fields.length ? ` (${c.fields.join(", ")})` : ""}`).join("; ").slice(0, 2000)}`,
                attributes: { version: String(version), changes: String(changed.length) },
            });
            return { changes, version };
        }
    }
    /** Persists and swaps; undefined when another replica changed the config first (retry on the fresh one). */
    async save(base, merged, upserts, deletes, attempt) {
        let version;
        try {
            version = await this.deps.repository.save({ upserts, deletes, expectedVersion: base.version });
        }
        catch (err) {
            if (err.name === "ConflictError" && attempt < 5) {
                await this.reload();
                return undefined;
            }
            throw err;
        }
        this.swap(PolicySnapshot.compile(merged, version, this.deps.defaultFailurePolicy));
        return version;
    }
    async reloadIfStale() {
        try {
            if ((await this.deps.repository.version()) > this.current.version)
                await this.reload();
        }
        catch (err) {
            this.deps.logger.warn({ err: String(err) }, "policy version check failed");
        }
    }
    /** Loads the stored config; a config that does not compile is rejected and the old snapshot keeps serving. */
    async reload() {
        const { version, entities } = await this.deps.repository.load();
        if (version <= this.current.version && this.current.version !== 0)
            return;
        try {
            this.swap(PolicySnapshot.compile(bundleFromEntities(entities), version, this.deps.defaultFailurePolicy));
            this.deps.metrics.policyReloads.inc({ result: "ok" });
        }
        catch (err) {
            this.deps.metrics.policyReloads.inc({ result: "rejected" });
            this.deps.logger.error({ err: String(err), version }, "stored policy rejected; the previous snapshot keeps serving");
        }
    }
    /** Calls `listener` after every snapshot swap, with the snapshot it replaced. */
    onSwap(listener) {
        this.swapListeners.push(listener);
    }
    swap(next) {
        const previous = this.current;
        this.current = next;
        for (const listener of this.swapListeners)
            listener(previous, next);
        this.deps.metrics.policyVersion.set(next.version);
        this.deps.logger.info({ version: next.version, tenants: next.tenants.size, keys: next.apiKeys.size }, "policy snapshot swapped");
    }
    serialized(fn) {
        const run = this.queue.then(fn, fn);
        this.queue = run.catch(() => undefined);
        return run;
    }
}
/** Replaces a key's secret by its hash; keeps the secret only until validation is done. */
function hashSecrets(bundle, nowMs) {
    const copy = create(BundleSchema, bundle);
    copy.apiKeys = bundle.apiKeys.map((k) => {
        const key = create(ApiKeySchema, k);
        if (key.secret)
            key.secretSha256 = sha256Hex(key.secret);
        if (!key.createdAt)
            key.createdAt = { $typeName: "google.protobuf.Timestamp", seconds: BigInt(Math.floor(nowMs / 1000)), nanos: 0 };
        return key;
    });
    return copy;
}
function mergeBundle(base, upserts, deletes) {
    const merged = create(BundleSchema);
    for (const spec of entityKinds) {
        const byId = new Map();
        for (const e of base[spec.list])
            byId.set(spec.id(e), e);
        for (const e of (upserts?.[spec.list] ?? [])) {
            const previous = byId.get(spec.id(e));
            // Re-applying an exported key (hash only) or a revoked flag keeps its creation time.
            if (spec.kind === "api_key" && previous && !e.createdAt)
                e.createdAt = previous.createdAt;
            byId.set(spec.id(e), e);
        }
        for (const d of deletes)
            if (d.kind === spec.kind)
                byId.delete(d.id);
        merged[spec.list] = [...byId.values()];
    }
    return merged;
}
function entityJson(spec, entity) {
    const json = toJson(spec.schema, entity);
    delete json.secret;
    return json;
}
function diff(base, incoming) {
    const changes = [];
    const upserts = [];
    for (const spec of entityKinds) {
        const existing = new Map(base[spec.list].map((e) => [spec.id(e), entityJson(spec, e)]));
        for (const entity of incoming[spec.list]) {
            const id = spec.id(entity);
            const after = entityJson(spec, entity);
            if (spec.kind === "api_key" && !after.createdAt)
                delete after.createdAt;
            const before = existing.get(id);
            const fields = before ? changedFields(before, after, spec.kind === "api_key" ? ["createdAt"] : []) : [];
            const action = !before ? ChangeAction.CREATE : fields.length > 0 ? ChangeAction.UPDATE : ChangeAction.UNCHANGED;
            changes.push(create(ChangeSchema, { kind: spec.kind, id, action, fields }));
            if (action !== ChangeAction.UNCHANGED)
                upserts.push({ kind: spec.kind, id, body: before?.createdAt && !after.createdAt ? { ...after, createdAt: before.createdAt } : after });
        }
    }
    return { changes, upserts };
}
function changedFields(before, after, ignore) {
    const names = new Set([...Object.keys(before), ...Object.keys(after)]);
    return [...names].filter((n) => !ignore.includes(n) && JSON.stringify(before[n]) !== JSON.stringify(after[n]));
}
export function bundleFromEntities(entities) {
    const bundle = create(BundleSchema);
    for (const spec of entityKinds) {
        bundle[spec.list] = entities.filter((e) => e.kind === spec.kind).map((e) => fromJson(spec.schema, e.body));
    }
    return bundle;
}
function tenantOf(entity) {
    return typeof entity?.tenant === "string" ? entity.tenant : "";
}
//# sourceMappingURL=policy-manager.js.map