import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { status as Code } from "@grpc/grpc-js";
import { randomBytes } from "node:crypto";
import * as pb from "../../gen/admission/v1/policy_service_pb.js";
import { ApiKeySchema, BundleSchema, LimitKind, Per, Window } from "../../gen/admission/v1/policy_pb.js";
import { generateApiKeySecret } from "../credentials.js";
import { isMeteredKind, meterKey } from "../meters.js";
import { idPattern } from "../policy/validate-bundle.js";
import { RpcError } from "../rpc-error.js";
import { isValidTimestamp, timestampMs } from "../timestamps.js";
import { isTimeWindow, windowSpan } from "../windows.js";
import { requireAdmin } from "./call-context.js";
const groupByNames = {
    [pb.UsageGroupBy.USER]: "user",
    [pb.UsageGroupBy.TASK]: "task",
    [pb.UsageGroupBy.MODEL]: "model",
    [pb.UsageGroupBy.KEY]: "key",
    [pb.UsageGroupBy.DAY]: "day",
};
/** The PolicyService (admin API), transport-free. Every call checks the admin token first. */
export class PolicyHandlers {
    deps;
    clock;
    constructor(deps) {
        this.deps = deps;
        this.clock = deps.clock ?? Date.now;
    }
    admin(ctx) {
        return requireAdmin(ctx, this.deps.adminToken);
    }
    get snapshot() {
        return this.deps.policy.snapshot();
    }
    async applyBundle(req, ctx) {
        const actor = this.admin(ctx);
        if (!req.bundle)
            throw new RpcError(Code.INVALID_ARGUMENT, "bundle is required");
        const { changes, version } = await this.deps.policy.apply(req.bundle, { dryRun: req.dryRun, actor });
        return create(pb.ApplyBundleResponseSchema, { changes, version: BigInt(version), applied: !req.dryRun });
    }
    async exportBundle(_req, ctx) {
        this.admin(ctx);
        const s = this.snapshot;
        return create(pb.ExportBundleResponseSchema, { bundle: s.bundle, version: BigInt(s.version) });
    }
    async getPlan(req, ctx) {
        this.admin(ctx);
        return create(pb.GetPlanResponseSchema, { plan: found("plan", req.code, this.snapshot.plans.get(req.code)) });
    }
    async listPlans(_req, ctx) {
        this.admin(ctx);
        return create(pb.ListPlansResponseSchema, { plans: this.snapshot.bundle.plans });
    }
    async deletePlan(req, ctx) {
        const version = await this.deps.policy.delete("plan", req.code, { actor: this.admin(ctx) });
        return create(pb.DeletePlanResponseSchema, { version: BigInt(version) });
    }
    async getAtiToken(req, ctx) {
        this.admin(ctx);
        return create(pb.GetAtiTokenResponseSchema, { atiToken: found("ati_token", req.id, this.snapshot.atiTokens.get(req.id)) });
    }
    async listAtiTokens(_req, ctx) {
        this.admin(ctx);
        return create(pb.ListAtiTokensResponseSchema, { atiTokens: this.snapshot.bundle.atiTokens });
    }
    async deleteAtiToken(req, ctx) {
        const version = await this.deps.policy.delete("ati_token", req.id, { actor: this.admin(ctx) });
        return create(pb.DeleteAtiTokenResponseSchema, { version: BigInt(version) });
    }
    async getTenant(req, ctx) {
        this.admin(ctx);
        return create(pb.GetTenantResponseSchema, { tenant: found("tenant", req.id, this.snapshot.tenants.get(req.id)) });
    }
    async listTenants(_req, ctx) {
        this.admin(ctx);
        return create(pb.ListTenantsResponseSchema, { tenants: this.snapshot.bundle.tenants });
    }
    async deleteTenant(req, ctx) {
        const version = await this.deps.policy.delete("tenant", req.id, { actor: this.admin(ctx), cascade: req.cascade });
        return create(pb.DeleteTenantResponseSchema, { version: BigInt(version) });
    }
    async getUser(req, ctx) {
        this.admin(ctx);
        return create(pb.GetUserResponseSchema, { user: found("user", `${req.tenant}/${req.id}`, this.snapshot.user(req.tenant, req.id)) });
    }
    async listUsers(req, ctx) {
        this.admin(ctx);
        return create(pb.ListUsersResponseSchema, { users: this.snapshot.bundle.users.filter((u) => !req.tenant || u.tenant === req.tenant) });
    }
    async deleteUser(req, ctx) {
        const version = await this.deps.policy.delete("user", `${req.tenant}/${req.id}`, { actor: this.admin(ctx) });
        return create(pb.DeleteUserResponseSchema, { version: BigInt(version) });
    }
    async getApiKey(req, ctx) {
        this.admin(ctx);
        return create(pb.GetApiKeyResponseSchema, { apiKey: found("api_key", req.id, this.snapshot.bundle.apiKeys.find((k) => k.id === req.id)) });
    }
    async listApiKeys(req, ctx) {
        this.admin(ctx);
        return create(pb.ListApiKeysResponseSchema, { apiKeys: this.snapshot.bundle.apiKeys.filter((k) => !req.tenant || k.tenant === req.tenant) });
    }
    async deleteApiKey(req, ctx) {
        const version = await this.deps.policy.delete("api_key", req.id, { actor: this.admin(ctx) });
        return create(pb.DeleteApiKeyResponseSchema, { version: BigInt(version) });
    }
    async createApiKey(req, ctx) {
        const actor = this.admin(ctx);
        if (!req.tenant)
            throw new RpcError(Code.INVALID_ARGUMENT, "tenant is required");
        if (!this.snapshot.tenants.has(req.tenant))
            throw new RpcError(Code.NOT_FOUND, `tenant "${req.tenant}" not found`);
        const id = req.id || `key_${randomBytes(8).toString("hex")}`;
        if (!idPattern.test(id))
            throw new RpcError(Code.INVALID_ARGUMENT, "id must be 1-64 characters of [A-Za-z0-9._-]");
        if (this.snapshot.apiKeys.has(id))
            throw new RpcError(Code.ALREADY_EXISTS, `api_key "${id}" already exists`);
        if (req.expiresAt && requestTimeMs(req.expiresAt, "expires_at") <= this.clock())
            throw new RpcError(Code.INVALID_ARGUMENT, "expires_at is in the past");
        const secret = generateApiKeySecret();
        const key = create(ApiKeySchema, {
            id, tenant: req.tenant, user: req.user, secret, tasks: req.tasks, expiresAt: req.expiresAt, description: req.description,
            createdAt: timestampFromMs(this.clock()),
        });
        await this.deps.policy.apply(create(BundleSchema, { apiKeys: [key] }), { dryRun: false, actor });
        this.deps.audit.record({ kind: "admin.create_key", actor, tenant: req.tenant, message: `created API key "${id}"`, attributes: { key_id: id, user: req.user } });
        const stored = this.snapshot.bundle.apiKeys.find((k) => k.id === id);
        return create(pb.CreateApiKeyResponseSchema, { apiKey: stored, secret });
    }
    async revokeApiKey(req, ctx) {
        const actor = this.admin(ctx);
        const key = await this.deps.policy.revokeApiKey(req.id, actor);
        this.deps.audit.record({ kind: "admin.revoke_key", actor, tenant: key.tenant, message: `revoked API key "${key.id}"`, attributes: { key_id: key.id } });
        return create(pb.RevokeApiKeyResponseSchema, { apiKey: key });
    }
    async getUsage(req, ctx) {
        this.admin(ctx);
        if (!req.tenant)
            throw new RpcError(Code.INVALID_ARGUMENT, "tenant is required");
        if (!this.snapshot.tenants.has(req.tenant))
            throw new RpcError(Code.NOT_FOUND, `tenant "${req.tenant}" not found`);
        const nowMs = this.clock();
        const startMs = req.start ? requestTimeMs(req.start, "start") : windowSpan(Window.MONTH, nowMs).startMs;
        const endMs = req.end ? requestTimeMs(req.end, "end") : nowMs + 1;
        if (endMs <= startMs)
            throw new RpcError(Code.INVALID_ARGUMENT, "end must be after start");
        const groupBy = req.groupBy.map((g) => {
            const name = groupByNames[g];
            if (!name)
                throw new RpcError(Code.INVALID_ARGUMENT, `unknown group_by value ${g}`);
            return name;
        });
        const usage = await this.deps.ledger.usage({
            tenant: req.tenant, user: textFilter(req.user, "user"), task: textFilter(req.task, "task"), model: textFilter(req.model, "model"), startMs, endMs, groupBy,
        });
        const totals = (t) => ({
            requests: BigInt(t.requests), inputTokens: BigInt(t.inputTokens), outputTokens: BigInt(t.outputTokens), costMicros: BigInt(t.costMicros),
        });
        return create(pb.GetUsageResponseSchema, {
            ...totals(usage.totals),
            rows: usage.rows.map((r) => create(pb.UsageRowSchema, { group: r.group, totals: create(pb.UsageTotalsSchema, totals(r.totals)) })),
        });
    }
    async listAuditEvents(req, ctx) {
        this.admin(ctx);
        if (req.pageSize < 0 || req.pageSize > 1000)
            throw new RpcError(Code.INVALID_ARGUMENT, "page_size must be between 0 and 1000");
        const pageSize = req.pageSize || 100;
        let beforeId;
        if (req.pageToken) {
            beforeId = Number(Buffer.from(req.pageToken, "base64url").toString("utf8"));
            if (!Number.isSafeInteger(beforeId) || beforeId <= 0)
                throw new RpcError(Code.INVALID_ARGUMENT, "invalid page_token");
        }
        const events = await this.deps.audit.list({ tenant: textFilter(req.tenant, "tenant"), kindPrefix: textFilter(req.kind, "kind"), sinceMs: req.since ? requestTimeMs(req.since, "since") : undefined, pageSize, beforeId });
        const last = events.at(-1);
        return create(pb.ListAuditEventsResponseSchema, {
            events: events.map((e) => create(pb.AuditEventSchema, {
                id: BigInt(e.id), time: timestampFromMs(e.atMs), kind: e.kind, actor: e.actor, tenant: e.tenant, message: e.message, attributes: e.attributes,
            })),
            nextPageToken: events.length === pageSize && last ? Buffer.from(String(last.id)).toString("base64url") : "",
        });
    }
    async resetMeter(req, ctx) {
        const actor = this.admin(ctx);
        if (!this.snapshot.tenants.has(req.tenant))
            throw new RpcError(Code.NOT_FOUND, `tenant "${req.tenant}" not found`);
        if (!isMeteredKind(req.kind))
            throw new RpcError(Code.INVALID_ARGUMENT, "kind must be REQUESTS, TOKENS, BUDGET_MICROS or CONCURRENCY");
        if (req.kind !== LimitKind.CONCURRENCY && !isTimeWindow(req.window))
            throw new RpcError(Code.INVALID_ARGUMENT, "window must be SECOND, MINUTE, HOUR, DAY or MONTH");
        if (req.task && !this.snapshot.tasks.has(req.task))
            throw new RpcError(Code.NOT_FOUND, `unknown task "${req.task}"`);
        const per = req.per === Per.UNSPECIFIED ? Per.TENANT : req.per;
        if (Per[per] === undefined)
            throw new RpcError(Code.INVALID_ARGUMENT, `unknown per value ${req.per}`);
        const subject = per === Per.TENANT ? req.tenant : req.subject;
        if (!subject)
            throw new RpcError(Code.INVALID_ARGUMENT, "subject is required for PER_USER and PER_KEY");
        const window = req.kind === LimitKind.CONCURRENCY ? Window.UNSPECIFIED : req.window;
        const startMs = req.kind === LimitKind.CONCURRENCY ? 0 : windowSpan(window, this.clock()).startMs;
        const previous = await this.deps.counters.reset(req.tenant, meterKey(req.kind, window, req.task, per, subject, startMs));
        this.deps.audit.record({
            kind: "admin.reset_meter", actor, tenant: req.tenant,
            message: `reset ${LimitKind[req.kind]}/${Window[window]} of ${Per[per]} ${subject}${req.task ? ` for task ${req.task}` : ""} (was ${previous})`,
        });
        return create(pb.ResetMeterResponseSchema, { previousUsed: BigInt(previous) });
    }
}
function found(kind, id, value) {
    if (value === undefined)
        throw new RpcError(Code.NOT_FOUND, `${kind} "${id}" not found`);
    return value;
}
/** A Timestamp from a request in ms, or INVALID_ARGUMENT naming the field when it is not a real instant. */
function requestTimeMs(ts, field) {
    if (!isValidTimestamp(ts))
        throw new RpcError(Code.INVALID_ARGUMENT, `${field} must be a time between years 0001 and 9999 with nanos in [0, 999999999]`);
    return timestampMs(ts);
}
/** An optional text filter for a store query: undefined when empty; INVALID_ARGUMENT when no stored value could match it. */
function textFilter(value, field) {
    if (!value)
        return undefined;
    if (value.length > 256 || value.includes("\u0000"))
        throw new RpcError(Code.INVALID_ARGUMENT, `${field} must be at most 256 characters without NUL`);
    return value;
}
//# sourceMappingURL=policy-handlers.js.map