import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { status as Code } from "@grpc/grpc-js";
import { randomBytes } from "node:crypto";
import * as pb from "../../gen/admission/v1/policy_service_pb.js";
import type { Webhook } from "../../gen/admission/v1/policy_pb.js";
import { ApiKeySchema, BundleSchema, LimitKind, Per, WebhookSchema, Window } from "../../gen/admission/v1/policy_pb.js";
import type { DeliveryRecord, DeliveryState, WebhookOutbox } from "../store/webhook-outbox.js";
import { generateApiKeySecret } from "../credentials.js";
import { bucketMeterKey, bucketOf, isMeteredKind, meterKey } from "../meters.js";
import { bucketRemaining, type MeterBucket } from "../token-bucket.js";
import type { CounterStore } from "../counter-store.js";
import type { PolicyManager } from "../policy/policy-manager.js";
import { idPattern } from "../policy/validate-bundle.js";
import { RpcError } from "../rpc-error.js";
import type { AuditLog } from "../store/audit-log.js";
import type { Ledger, UsageDimension } from "../store/ledger.js";
import { usageTotalsMessage } from "../usage-totals.js";
import type { Timestamp } from "@bufbuild/protobuf/wkt";
import { isValidTimestamp, timestampMs } from "../timestamps.js";
import { isTimeWindow, windowSpan } from "../windows.js";
import type { CallContext } from "./call-context.js";
import { requireAdmin } from "./call-context.js";
import { adminSubject } from "./admin-subject.js";
import type { DecisionEngine } from "../decide.js";
import type { TenantStatusReader } from "../tenant-status.js";
import { AdmitRequestSchema, DenyReason } from "../../gen/admission/v1/admission_pb.js";
import type { CreditBalance, CreditBalances } from "../credit-balances.js";
import type { CreditGrantRecord } from "../store/credit-grants.js";

export interface PolicyHandlersDeps {
  readonly policy: PolicyManager;
  readonly ledger: Pick<Ledger, "usage">;
  readonly audit: Pick<AuditLog, "record" | "list">;
  readonly counters: CounterStore;
  readonly tenantStatus: Pick<TenantStatusReader, "list">;
  readonly engine: Pick<DecisionEngine, "simulate">;
  readonly outbox: Pick<WebhookOutbox, "list" | "redeliver">;
  /** Wakes this replica's delivery worker (a redelivery is due at once). */
  readonly deliverNow?: () => void;
  readonly credits: Pick<CreditBalances, "grant" | "balance" | "list">;
  readonly adminToken: string;
  readonly clock?: () => number;
}

const groupByNames: Record<number, UsageDimension> = {
  [pb.UsageGroupBy.USER]: "user",
  [pb.UsageGroupBy.TASK]: "task",
  [pb.UsageGroupBy.MODEL]: "model",
  [pb.UsageGroupBy.KEY]: "key",
  [pb.UsageGroupBy.DAY]: "day",
  [pb.UsageGroupBy.HOUR]: "hour",
};

/** The PolicyService (admin API), transport-free. Every call checks the admin token first. */
export class PolicyHandlers {
  private readonly clock: () => number;

  constructor(private readonly deps: PolicyHandlersDeps) {
    this.clock = deps.clock ?? Date.now;
  }

  private admin(ctx: CallContext): string {
    return requireAdmin(ctx, this.deps.adminToken);
  }

  private get snapshot() {
    return this.deps.policy.snapshot();
  }

  async applyBundle(req: pb.ApplyBundleRequest, ctx: CallContext): Promise<pb.ApplyBundleResponse> {
    const actor = this.admin(ctx);
    if (!req.bundle) throw new RpcError(Code.INVALID_ARGUMENT, "bundle is required");
    const { changes, version } = await this.deps.policy.apply(req.bundle, { dryRun: req.dryRun, actor });
    return create(pb.ApplyBundleResponseSchema, { changes, version: BigInt(version), applied: !req.dryRun });
  }

  async exportBundle(_req: pb.ExportBundleRequest, ctx: CallContext): Promise<pb.ExportBundleResponse> {
    this.admin(ctx);
    const s = this.snapshot;
    const bundle = create(BundleSchema, { ...s.bundle, webhooks: s.bundle.webhooks.map(withoutSecret) });
    return create(pb.ExportBundleResponseSchema, { bundle, version: BigInt(s.version) });
  }

  async getPlan(req: pb.GetPlanRequest, ctx: CallContext): Promise<pb.GetPlanResponse> {
    this.admin(ctx);
    return create(pb.GetPlanResponseSchema, { plan: found("plan", req.code, this.snapshot.plans.get(req.code)) });
  }

  async listPlans(_req: pb.ListPlansRequest, ctx: CallContext): Promise<pb.ListPlansResponse> {
    this.admin(ctx);
    return create(pb.ListPlansResponseSchema, { plans: this.snapshot.bundle.plans });
  }

  async deletePlan(req: pb.DeletePlanRequest, ctx: CallContext): Promise<pb.DeletePlanResponse> {
    const version = await this.deps.policy.delete("plan", req.code, { actor: this.admin(ctx) });
    return create(pb.DeletePlanResponseSchema, { version: BigInt(version) });
  }

  async getAtiToken(req: pb.GetAtiTokenRequest, ctx: CallContext): Promise<pb.GetAtiTokenResponse> {
    this.admin(ctx);
    return create(pb.GetAtiTokenResponseSchema, { atiToken: found("ati_token", req.id, this.snapshot.atiTokens.get(req.id)) });
  }

  async listAtiTokens(_req: pb.ListAtiTokensRequest, ctx: CallContext): Promise<pb.ListAtiTokensResponse> {
    this.admin(ctx);
    return create(pb.ListAtiTokensResponseSchema, { atiTokens: this.snapshot.bundle.atiTokens });
  }

  async deleteAtiToken(req: pb.DeleteAtiTokenRequest, ctx: CallContext): Promise<pb.DeleteAtiTokenResponse> {
    const version = await this.deps.policy.delete("ati_token", req.id, { actor: this.admin(ctx) });
    return create(pb.DeleteAtiTokenResponseSchema, { version: BigInt(version) });
  }

  async getTenant(req: pb.GetTenantRequest, ctx: CallContext): Promise<pb.GetTenantResponse> {
    this.admin(ctx);
    return create(pb.GetTenantResponseSchema, { tenant: found("tenant", req.id, this.snapshot.tenants.get(req.id)) });
  }

  async listTenants(_req: pb.ListTenantsRequest, ctx: CallContext): Promise<pb.ListTenantsResponse> {
    this.admin(ctx);
    return create(pb.ListTenantsResponseSchema, { tenants: this.snapshot.bundle.tenants });
  }

  async deleteTenant(req: pb.DeleteTenantRequest, ctx: CallContext): Promise<pb.DeleteTenantResponse> {
    const version = await this.deps.policy.delete("tenant", req.id, { actor: this.admin(ctx), cascade: req.cascade });
    return create(pb.DeleteTenantResponseSchema, { version: BigInt(version) });
  }

  async getUser(req: pb.GetUserRequest, ctx: CallContext): Promise<pb.GetUserResponse> {
    this.admin(ctx);
    return create(pb.GetUserResponseSchema, { user: found("user", `${req.tenant}/${req.id}`, this.snapshot.user(req.tenant, req.id)) });
  }

  async listUsers(req: pb.ListUsersRequest, ctx: CallContext): Promise<pb.ListUsersResponse> {
    this.admin(ctx);
    return create(pb.ListUsersResponseSchema, { users: this.snapshot.bundle.users.filter((u) => !req.tenant || u.tenant === req.tenant) });
  }

  async deleteUser(req: pb.DeleteUserRequest, ctx: CallContext): Promise<pb.DeleteUserResponse> {
    const version = await this.deps.policy.delete("user", `${req.tenant}/${req.id}`, { actor: this.admin(ctx) });
    return create(pb.DeleteUserResponseSchema, { version: BigInt(version) });
  }

  async getApiKey(req: pb.GetApiKeyRequest, ctx: CallContext): Promise<pb.GetApiKeyResponse> {
    this.admin(ctx);
    return create(pb.GetApiKeyResponseSchema, { apiKey: found("api_key", req.id, this.snapshot.bundle.apiKeys.find((k) => k.id === req.id)) });
  }

  async listApiKeys(req: pb.ListApiKeysRequest, ctx: CallContext): Promise<pb.ListApiKeysResponse> {
    this.admin(ctx);
    return create(pb.ListApiKeysResponseSchema, { apiKeys: this.snapshot.bundle.apiKeys.filter((k) => !req.tenant || k.tenant === req.tenant) });
  }

  async deleteApiKey(req: pb.DeleteApiKeyRequest, ctx: CallContext): Promise<pb.DeleteApiKeyResponse> {
    const version = await this.deps.policy.delete("api_key", req.id, { actor: this.admin(ctx) });
    return create(pb.DeleteApiKeyResponseSchema, { version: BigInt(version) });
  }

  async createApiKey(req: pb.CreateApiKeyRequest, ctx: CallContext): Promise<pb.CreateApiKeyResponse> {
    const actor = this.admin(ctx);
    if (!req.tenant) throw new RpcError(Code.INVALID_ARGUMENT, "tenant is required");
    if (!this.snapshot.tenants.has(req.tenant)) throw new RpcError(Code.NOT_FOUND, `tenant "${req.tenant}" not found`);
    const id = req.id || `key_${randomBytes(8).toString("hex")}`;
    if (!idPattern.test(id)) throw new RpcError(Code.INVALID_ARGUMENT, "id must be 1-64 characters of [A-Za-z0-9._-]");
    if (this.snapshot.apiKeys.has(id)) throw new RpcError(Code.ALREADY_EXISTS, `api_key "${id}" already exists`);
    if (req.expiresAt && requestTimeMs(req.expiresAt, "expires_at") <= this.clock()) throw new RpcError(Code.INVALID_ARGUMENT, "expires_at is in the past");
    const secret = generateApiKeySecret();
    const key = create(ApiKeySchema, {
      id, tenant: req.tenant, user: req.user, secret, tasks: req.tasks, expiresAt: req.expiresAt, description: req.description,
      createdAt: timestampFromMs(this.clock()),
    });
    await this.deps.policy.apply(create(BundleSchema, { apiKeys: [key] }), { dryRun: false, actor });
    this.deps.audit.record({ kind: "admin.create_key", actor, tenant: req.tenant, message: `created API key "${id}"`, attributes: { key_id: id, user: req.user } });
    const stored = this.snapshot.bundle.apiKeys.find((k) => k.id === id)!;
    return create(pb.CreateApiKeyResponseSchema, { apiKey: stored, secret });
  }

  async revokeApiKey(req: pb.RevokeApiKeyRequest, ctx: CallContext): Promise<pb.RevokeApiKeyResponse> {
    const actor = this.admin(ctx);
    const key = await this.deps.policy.revokeApiKey(req.id, actor);
    this.deps.audit.record({ kind: "admin.revoke_key", actor, tenant: key.tenant, message: `revoked API key "${key.id}"`, attributes: { key_id: key.id } });
    return create(pb.RevokeApiKeyResponseSchema, { apiKey: key });
  }

  async getUsage(req: pb.GetUsageRequest, ctx: CallContext): Promise<pb.GetUsageResponse> {
    this.admin(ctx);
    if (!req.tenant) throw new RpcError(Code.INVALID_ARGUMENT, "tenant is required");
    if (!this.snapshot.tenants.has(req.tenant)) throw new RpcError(Code.NOT_FOUND, `tenant "${req.tenant}" not found`);
    const nowMs = this.clock();
    const startMs = req.start ? requestTimeMs(req.start, "start") : windowSpan(Window.MONTH, nowMs).startMs;
    const endMs = req.end ? requestTimeMs(req.end, "end") : nowMs + 1;
    if (endMs <= startMs) throw new RpcError(Code.INVALID_ARGUMENT, "end must be after start");
    const groupBy = req.groupBy.map((g) => {
      const name = groupByNames[g];
      if (!name) throw new RpcError(Code.INVALID_ARGUMENT, `unknown group_by value ${g}`);
      return name;
    });
    const usage = await this.deps.ledger.usage({
      tenant: req.tenant, user: textFilter(req.user, "user"), task: textFilter(req.task, "task"), model: textFilter(req.model, "model"), startMs, endMs, groupBy,
    });
    const { $typeName: _, ...totals } = usageTotalsMessage(usage.totals);
    return create(pb.GetUsageResponseSchema, {
      ...totals,
      rows: usage.rows.map((r) => create(pb.UsageRowSchema, { group: r.group, totals: usageTotalsMessage(r.totals) })),
    });
  }

  async listAuditEvents(req: pb.ListAuditEventsRequest, ctx: CallContext): Promise<pb.ListAuditEventsResponse> {
    this.admin(ctx);
    if (req.pageSize < 0 || req.pageSize > 1000) throw new RpcError(Code.INVALID_ARGUMENT, "page_size must be between 0 and 1000");
    const pageSize = req.pageSize || 100;
    let beforeId: number | undefined;
    if (req.pageToken) {
      beforeId = Number(Buffer.from(req.pageToken, "base64url").toString("utf8"));
      if (!Number.isSafeInteger(beforeId) || beforeId <= 0) throw new RpcError(Code.INVALID_ARGUMENT, "invalid page_token");
    }
    const sinceMs = req.since ? requestTimeMs(req.since, "since") : undefined;
    const untilMs = req.until ? requestTimeMs(req.until, "until") : undefined;
    if (sinceMs !== undefined && untilMs !== undefined && untilMs <= sinceMs) throw new RpcError(Code.INVALID_ARGUMENT, "until must be after since");
    const events = await this.deps.audit.list({
      tenant: textFilter(req.tenant, "tenant"), kindPrefix: textFilter(req.kind, "kind"), actor: textFilter(req.actor, "actor"), sinceMs, untilMs, pageSize, beforeId,
    });
    const last = events.at(-1);
    return create(pb.ListAuditEventsResponseSchema, {
      events: events.map((e) => create(pb.AuditEventSchema, {
        id: BigInt(e.id), time: timestampFromMs(e.atMs), kind: e.kind, actor: e.actor, tenant: e.tenant, message: e.message, attributes: e.attributes,
      })),
      nextPageToken: events.length === pageSize && last ? Buffer.from(String(last.id)).toString("base64url") : "",
    });
  }

  async resetMeter(req: pb.ResetMeterRequest, ctx: CallContext): Promise<pb.ResetMeterResponse> {
    const actor = this.admin(ctx);
    if (!this.snapshot.tenants.has(req.tenant)) throw new RpcError(Code.NOT_FOUND, `tenant "${req.tenant}" not found`);
    if (req.kind === LimitKind.CREDITS_MICROS) throw new RpcError(Code.INVALID_ARGUMENT, "kind CREDITS_MICROS cannot be reset: credits change only by GrantCredits (a negative amount takes some back)");
    if (!isMeteredKind(req.kind)) throw new RpcError(Code.INVALID_ARGUMENT, "kind must be REQUESTS, TOKENS, BUDGET_MICROS or CONCURRENCY");
    if (req.kind !== LimitKind.CONCURRENCY && !isTimeWindow(req.window)) throw new RpcError(Code.INVALID_ARGUMENT, "window must be SECOND, MINUTE, HOUR, DAY or MONTH");
    if (req.task && !this.snapshot.tasks.has(req.task)) throw new RpcError(Code.NOT_FOUND, `unknown task "${req.task}"`);
    const per = req.per === Per.UNSPECIFIED ? Per.TENANT : req.per;
    if (Per[per] === undefined) throw new RpcError(Code.INVALID_ARGUMENT, `unknown per value ${req.per}`);
    const subject = per === Per.TENANT ? req.tenant : req.subject;
    if (!subject) throw new RpcError(Code.INVALID_ARGUMENT, "subject is required for PER_USER and PER_KEY");
    const window = req.kind === LimitKind.CONCURRENCY ? Window.UNSPECIFIED : req.window;
    const startMs = req.kind === LimitKind.CONCURRENCY ? 0 : windowSpan(window, this.clock()).startMs;
    const bucket = this.bucketOf(req.tenant, req.kind, window, req.task, per, subject);
    const held = await this.deps.counters.reset(req.tenant, bucket ? bucketMeterKey(req.kind, window, req.task, per, subject) : meterKey(req.kind, window, req.task, per, subject, startMs));
    // A token bucket held its backlog: reported as the units it lacked (it is full now).
    const previous = bucket ? bucket.burst - bucketRemaining(bucket, held) : held;
    this.deps.audit.record({
      kind: "admin.reset_meter", actor, tenant: req.tenant,
      message: `reset ${LimitKind[req.kind]}/${Window[window]} of ${Per[per]} ${subject}${req.task ? ` for task ${req.task}` : ""} (was ${previous})`,
    });
    return create(pb.ResetMeterResponseSchema, { previousUsed: BigInt(previous) });
  }

  /**
   * The bucket of the tenant's TOKEN_BUCKET limit for this meter, if it is one: the tenant's
   * effective limit, a user's own for PER_USER (a key's user is not known here: PER_KEY takes
   * the tenant's).
   */
  private bucketOf(tenant: string, kind: LimitKind, window: Window, task: string, per: Per, subject: string): MeterBucket | undefined {
    const snapshot = this.snapshot;
    const ctx = snapshot.tenantContext(tenant);
    if (!ctx || (kind !== LimitKind.REQUESTS && kind !== LimitKind.TOKENS)) return undefined;
    const limit = snapshot.effectiveLimits(ctx, per === Per.USER ? subject : "", task || "*")
      .find((l) => l.kind === kind && l.window === window && l.task === task && l.per === per);
    return limit ? bucketOf(limit) : undefined;
  }

  async listTenantStatus(req: pb.ListTenantStatusRequest, ctx: CallContext): Promise<pb.ListTenantStatusResponse> {
    this.admin(ctx);
    if (req.nearest < 0 || req.nearest > 100) throw new RpcError(Code.INVALID_ARGUMENT, "nearest must be between 0 and 100");
    if (req.tenant && !this.snapshot.tenants.has(req.tenant)) throw new RpcError(Code.NOT_FOUND, `tenant "${req.tenant}" not found`);
    const tenants = await this.deps.tenantStatus.list({ tenant: req.tenant || undefined, nearest: req.nearest || 3 });
    return create(pb.ListTenantStatusResponseSchema, { tenants });
  }

  async simulateAdmit(req: pb.SimulateAdmitRequest, ctx: CallContext): Promise<pb.SimulateAdmitResponse> {
    this.admin(ctx);
    const principal = adminSubject(req, this.snapshot);
    const decision = await this.deps.engine.simulate(principal, create(AdmitRequestSchema, {
      task: req.task, model: req.model, inputTokens: req.inputTokens, maxOutputTokens: req.maxOutputTokens, files: req.files, agentSteps: req.agentSteps, apiCalls: req.apiCalls,
    }));
    // As on Admit: malformed input is a status, every other denial a decision.
    if (decision.reason === DenyReason.INVALID_REQUEST) throw new RpcError(Code.INVALID_ARGUMENT, decision.message);
    return create(pb.SimulateAdmitResponseSchema, { decision });
  }

  async getWebhook(req: pb.GetWebhookRequest, ctx: CallContext): Promise<pb.GetWebhookResponse> {
    this.admin(ctx);
    return create(pb.GetWebhookResponseSchema, { webhook: withoutSecret(found("webhook", req.id, this.snapshot.webhooks.get(req.id))) });
  }

  async listWebhooks(req: pb.ListWebhooksRequest, ctx: CallContext): Promise<pb.ListWebhooksResponse> {
    this.admin(ctx);
    return create(pb.ListWebhooksResponseSchema, { webhooks: this.snapshot.bundle.webhooks.filter((w) => !req.tenant || w.tenant === req.tenant).map(withoutSecret) });
  }

  async deleteWebhook(req: pb.DeleteWebhookRequest, ctx: CallContext): Promise<pb.DeleteWebhookResponse> {
    const version = await this.deps.policy.delete("webhook", req.id, { actor: this.admin(ctx) });
    return create(pb.DeleteWebhookResponseSchema, { version: BigInt(version) });
  }

  async listWebhookDeliveries(req: pb.ListWebhookDeliveriesRequest, ctx: CallContext): Promise<pb.ListWebhookDeliveriesResponse> {
    this.admin(ctx);
    if (req.pageSize < 0 || req.pageSize > 500) throw new RpcError(Code.INVALID_ARGUMENT, "page_size must be between 0 and 500");
    const pageSize = req.pageSize || 50;
    const state = req.state === pb.WebhookDeliveryState.UNSPECIFIED ? undefined : deliveryStates[req.state];
    if (req.state !== pb.WebhookDeliveryState.UNSPECIFIED && !state) throw new RpcError(Code.INVALID_ARGUMENT, `unknown state ${req.state}`);
    let beforeId: number | undefined;
    if (req.pageToken) {
      beforeId = Number(Buffer.from(req.pageToken, "base64url").toString("utf8"));
      if (!Number.isSafeInteger(beforeId) || beforeId <= 0) throw new RpcError(Code.INVALID_ARGUMENT, "invalid page_token");
    }
    const deliveries = await this.deps.outbox.list({ webhook: textFilter(req.webhook, "webhook"), tenant: textFilter(req.tenant, "tenant"), state, pageSize, beforeId });
    const last = deliveries.at(-1);
    return create(pb.ListWebhookDeliveriesResponseSchema, {
      deliveries: deliveries.map(deliveryMessage),
      nextPageToken: deliveries.length === pageSize && last ? Buffer.from(String(last.id)).toString("base64url") : "",
    });
  }

  async redeliverWebhook(req: pb.RedeliverWebhookRequest, ctx: CallContext): Promise<pb.RedeliverWebhookResponse> {
    const actor = this.admin(ctx);
    if (req.id <= 0n || req.id > BigInt(Number.MAX_SAFE_INTEGER)) throw new RpcError(Code.INVALID_ARGUMENT, "id must be a delivery id");
    const delivery = await this.deps.outbox.redeliver(Number(req.id), this.clock());
    if (!delivery) throw new RpcError(Code.NOT_FOUND, `webhook delivery ${req.id} not found`);
    this.deps.audit.record({
      kind: "admin.redeliver_webhook", actor, tenant: delivery.tenant,
      message: `queued delivery ${delivery.id} of event ${delivery.eventId} to webhook "${delivery.webhook}" again`, attributes: { webhook: delivery.webhook },
    });
    this.deps.deliverNow?.();
    return create(pb.RedeliverWebhookResponseSchema, { delivery: deliveryMessage(delivery) });
  }

  async grantCredits(req: pb.GrantCreditsRequest, ctx: CallContext): Promise<pb.GrantCreditsResponse> {
    const actor = this.admin(ctx);
    const { grant, replayed, balance } = await this.deps.credits.grant(req, actor);
    return create(pb.GrantCreditsResponseSchema, { grant: grantMessage(grant), replayed, balance: balanceMessage(balance) });
  }

  async getCreditBalance(req: pb.GetCreditBalanceRequest, ctx: CallContext): Promise<pb.GetCreditBalanceResponse> {
    this.admin(ctx);
    return balanceMessage(await this.deps.credits.balance(req.tenant));
  }

  async listCreditGrants(req: pb.ListCreditGrantsRequest, ctx: CallContext): Promise<pb.ListCreditGrantsResponse> {
    this.admin(ctx);
    return create(pb.ListCreditGrantsResponseSchema, { grants: (await this.deps.credits.list(req.tenant, req.limit)).map(grantMessage) });
  }

  async listCatalog(_req: pb.ListCatalogRequest, ctx: CallContext): Promise<pb.ListCatalogResponse> {
    this.admin(ctx);
    return create(pb.ListCatalogResponseSchema, { models: this.snapshot.bundle.models, tasks: this.snapshot.bundle.tasks });
  }
}

const deliveryStates: Record<number, DeliveryState> = {
  [pb.WebhookDeliveryState.PENDING]: "pending",
  [pb.WebhookDeliveryState.DELIVERED]: "delivered",
  [pb.WebhookDeliveryState.FAILED]: "failed",
};

/** A webhook as the API shows it: never with its secret. */
function withoutSecret(webhook: Webhook): Webhook {
  return create(WebhookSchema, { ...webhook, secret: "", previousSecret: "" });
}

function deliveryMessage(d: DeliveryRecord): pb.WebhookDelivery {
  const state = Number(Object.entries(deliveryStates).find(([, name]) => name === d.state)?.[0] ?? 0);
  return create(pb.WebhookDeliverySchema, {
    id: BigInt(d.id), eventId: d.eventId, eventType: d.type, webhook: d.webhook, tenant: d.tenant, state,
    createdAt: timestampFromMs(d.createdAtMs), nextAttemptAt: d.state === "pending" ? timestampFromMs(d.nextAttemptAtMs) : undefined,
    attempts: d.attempts.map((a) => create(pb.WebhookAttemptSchema, { time: timestampFromMs(a.atMs), httpStatus: a.httpStatus, latencyMs: BigInt(a.latencyMs), error: a.error })),
    dataJson: JSON.stringify(d.data),
  });
}

function grantMessage(g: CreditGrantRecord): pb.CreditGrant {
  return create(pb.CreditGrantSchema, {
    grantId: g.grantId, tenant: g.tenant, amountMicros: BigInt(g.amountMicros), note: g.note, actor: g.actor, createdAt: timestampFromMs(g.createdAtMs),
  });
}

function balanceMessage(b: CreditBalance): pb.GetCreditBalanceResponse {
  return create(pb.GetCreditBalanceResponseSchema, {
    tenant: b.tenant, balanceMicros: BigInt(b.balanceMicros), reservedMicros: BigInt(b.reservedMicros), grantedMicros: BigInt(b.grantedMicros),
    spentMicros: BigInt(b.spentMicros), prepaid: b.prepaid,
  });
}

function found<T>(kind: string, id: string, value: T | undefined): T {
  if (value === undefined) throw new RpcError(Code.NOT_FOUND, `${kind} "${id}" not found`);
  return value;
}

/** A Timestamp from a request in ms, or INVALID_ARGUMENT naming the field when it is not a real instant. */
function requestTimeMs(ts: Timestamp, field: string): number {
  if (!isValidTimestamp(ts)) throw new RpcError(Code.INVALID_ARGUMENT, `${field} must be a time between years 0001 and 9999 with nanos in [0, 999999999]`);
  return timestampMs(ts);
}

/** An optional text filter for a store query: undefined when empty; INVALID_ARGUMENT when no stored value could match it. */
function textFilter(value: string, field: string): string | undefined {
  if (!value) return undefined;
  if (value.length > 256 || value.includes("\u0000")) throw new RpcError(Code.INVALID_ARGUMENT, `${field} must be at most 256 characters without NUL`);
  return value;
}
