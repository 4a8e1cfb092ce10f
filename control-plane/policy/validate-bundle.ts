import type { Bundle, Limit } from "../../gen/admission/v1/policy_pb.js";
import { LimitAlgorithm, LimitKind, Per, WebhookFormat, Window } from "../../gen/admission/v1/policy_pb.js";
import { operatorOnlyEvents, webhookEventTypes } from "../webhook-events.js";
import { webhookSecretProblem } from "../webhook-signing.js";
import { isValidTimestamp } from "../timestamps.js";
import { isTimeWindow } from "../windows.js";

/** A bundle (merged with the stored config) that does not validate. Nothing is changed. */
export class BundleValidationError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid policy: ${problems.slice(0, 20).join("; ")}${problems.length > 20 ? `; and ${problems.length - 20} more` : ""}`);
    this.name = "BundleValidationError";
  }
}

export const idPattern = /^[A-Za-z0-9._-]{1,64}$/;
export const userIdPattern = /^[^\s/]{1,128}$/;
const modelNamePattern = /^[A-Za-z0-9._:/@-]{1,128}$/;
const classPattern = /^[A-Z][A-Z0-9_]{0,63}$/;
const hexSha256 = /^[0-9a-f]{64}$/;
export const maxLimitValue = Number.MAX_SAFE_INTEGER;
const maxPriceMicrosPerMTok = 1_000_000_000_000n;

const perRequestKinds = new Set([
  LimitKind.INPUT_TOKENS, LimitKind.OUTPUT_TOKENS, LimitKind.AGENT_STEPS, LimitKind.FILES, LimitKind.API_CALLS,
]);

/** The windows a TOKEN_BUCKET refills over (DAY and MONTH stay calendar windows: a budget that refills continuously can never be spent). */
const bucketWindows = new Set([Window.SECOND, Window.MINUTE, Window.HOUR]);

export function isPerRequestKind(kind: LimitKind): boolean {
  return perRequestKinds.has(kind);
}

/**
 * Validates a whole config (catalog, plans, tokens, tenants, users, keys) and
 * returns every problem, each naming the entity and field. Empty when valid.
 */
/** A value quoted in a problem: JSON-escaped (no control characters reach a status line) and at most 64 characters. */
function q(value: string): string {
  return JSON.stringify(value.length > 64 ? `${value.slice(0, 64)}…` : value); // JSON escapes a lone surrogate
}

export function validateBundle(bundle: Bundle): string[] {
  const problems: string[] = [];
  const add = (entity: string, field: string, message: string) => problems.push(`${entity}: field ${field}: ${message}`);

  const unique = <T>(items: T[], id: (item: T) => string, label: string) => {
    const seen = new Set<string>();
    for (const item of items) {
      const key = id(item);
      if (seen.has(key)) add(`${label} ${q(key)}`, "id", "appears twice");
      seen.add(key);
    }
  };

  const classes = new Set<string>();
  unique(bundle.models, (m) => m.name, "model");
  for (const m of bundle.models) {
    const e = `model ${q(m.name)}`;
    if (!modelNamePattern.test(m.name)) add(e, "name", "must be 1-128 characters of [A-Za-z0-9._:/@-]");
    if (!classPattern.test(m.modelClass)) add(e, "model_class", `${q(m.modelClass)} must be an upper-case class name such as PRO_M`);
    if (!idPattern.test(m.provider)) add(e, "provider", "is required ([A-Za-z0-9._-], at most 64 characters)");
    const prices = [
      ["input_micros_per_mtok", m.inputMicrosPerMtok], ["output_micros_per_mtok", m.outputMicrosPerMtok],
      ["cache_read_micros_per_mtok", m.cacheReadMicrosPerMtok], ["cache_write_micros_per_mtok", m.cacheWriteMicrosPerMtok],
    ] as const;
    for (const [field, price] of prices) {
      if (price !== undefined && (price < 0n || price > maxPriceMicrosPerMTok)) add(e, field, `must be between 0 and ${maxPriceMicrosPerMTok}`);
    }
    if (m.providerModel && !modelNamePattern.test(m.providerModel)) add(e, "provider_model", "must be 1-128 characters of [A-Za-z0-9._:/@-]");
    classes.add(m.modelClass);
  }

  const tasks = new Set<string>();
  const features = new Set<string>();
  unique(bundle.tasks, (t) => t.code, "task");
  for (const t of bundle.tasks) {
    const e = `task ${q(t.code)}`;
    if (!idPattern.test(t.code)) add(e, "code", "must be 1-64 characters of [A-Za-z0-9._-]");
    if (!idPattern.test(t.feature)) add(e, "feature", "is required ([A-Za-z0-9._-], at most 64 characters)");
    tasks.add(t.code);
    features.add(t.feature);
  }

  /** TOKEN_BUCKET only for REQUESTS and TOKENS over SECOND, MINUTE or HOUR; burst only there, and not negative (0: the value). */
  const checkAlgorithm = (entity: string, f: (name: string) => string, l: Limit) => {
    if (LimitAlgorithm[l.algorithm] === undefined) {
      add(entity, f("algorithm"), `unknown value ${l.algorithm} (FIXED_WINDOW or TOKEN_BUCKET)`);
      return;
    }
    if (l.burst < 0n || l.burst > BigInt(maxLimitValue)) add(entity, f("burst"), `${l.burst} is out of range (0 means the value, at most ${maxLimitValue})`);
    if (l.algorithm !== LimitAlgorithm.TOKEN_BUCKET) {
      if (l.burst > 0n) add(entity, f("burst"), "is for TOKEN_BUCKET limits only (a fixed window has no burst)");
      return;
    }
    if (l.kind !== LimitKind.REQUESTS && l.kind !== LimitKind.TOKENS) {
      add(entity, f("algorithm"), `TOKEN_BUCKET is for REQUESTS and TOKENS limits, not ${LimitKind[l.kind]}${l.kind === LimitKind.BUDGET_MICROS ? " (a budget stays a fixed calendar window)" : ""}`);
    } else if (!bucketWindows.has(l.window)) {
      add(entity, f("algorithm"), `TOKEN_BUCKET needs a window of SECOND, MINUTE or HOUR, not ${Window[l.window] ?? l.window}${l.window === Window.DAY || l.window === Window.MONTH ? " (DAY and MONTH stay fixed calendar windows)" : ""}`);
    }
  };

  const checkLimits = (entity: string, limits: Limit[]) => {
    const seen = new Set<string>();
    limits.forEach((l, i) => {
      const f = (name: string) => `limits[${i}].${name}`;
      if (l.kind === LimitKind.UNSPECIFIED || LimitKind[l.kind] === undefined) {
        add(entity, f("kind"), "is required (REQUESTS, TOKENS, BUDGET_MICROS, CONCURRENCY, INPUT_TOKENS, OUTPUT_TOKENS, AGENT_STEPS, FILES, API_CALLS)");
        return;
      }
      if (l.kind === LimitKind.CREDITS_MICROS) {
        add(entity, f("kind"), "CREDITS_MICROS is not set in a bundle: it is derived from prepaid (set \"prepaid\": true on the plan or tenant, then GrantCredits)");
        return;
      }
      if (isPerRequestKind(l.kind)) {
        if (l.window !== Window.REQUEST && l.window !== Window.UNSPECIFIED) add(entity, f("window"), `${LimitKind[l.kind]} is a per-request cap: window must be REQUEST`);
      } else if (l.kind === LimitKind.CONCURRENCY) {
        if (l.window !== Window.UNSPECIFIED) add(entity, f("window"), "CONCURRENCY has no window: leave it unset");
      } else if (!isTimeWindow(l.window)) {
        add(entity, f("window"), `${LimitKind[l.kind]} needs a window: SECOND, MINUTE, HOUR, DAY or MONTH`);
      }
      if (l.value < -1n || l.value > BigInt(maxLimitValue)) add(entity, f("value"), `${l.value} is out of range (-1 lifts, 0 blocks, at most ${maxLimitValue})`);
      checkAlgorithm(entity, f, l);
      if (l.task && !tasks.has(l.task)) add(entity, f("task"), `unknown task ${q(l.task)}`);
      if (Per[l.per] === undefined) add(entity, f("per"), `unknown value ${l.per}`);
      const key = `${l.kind}|${normalizedWindow(l)}|${l.task}|${normalizedPer(l)}`;
      if (seen.has(key)) add(entity, f("kind"), "duplicates another limit with the same kind, window, task and per");
      seen.add(key);
    });
  };

  const plans = new Set<string>();
  unique(bundle.plans, (p) => p.code, "plan");
  for (const p of bundle.plans) {
    const e = `plan ${q(p.code)}`;
    if (!idPattern.test(p.code)) add(e, "code", "must be 1-64 characters of [A-Za-z0-9._-]");
    for (const feature of p.features) if (!features.has(feature)) add(e, "features", `unknown feature ${q(feature)} (no task belongs to it)`);
    p.taskAccess.forEach((access, i) => {
      if (!tasks.has(access.task)) add(e, `task_access[${i}].task`, `unknown task ${q(access.task)}`);
      if (access.modelClasses.length === 0) add(e, `task_access[${i}].model_classes`, "is empty");
      for (const c of access.modelClasses) if (!classes.has(c)) add(e, `task_access[${i}].model_classes`, `no model has class ${q(c)}`);
      const downgrades = new Set<string>();
      for (const c of access.downgradeClasses) {
        const f = `task_access[${i}].downgrade_classes`;
        if (!classes.has(c)) add(e, f, `no model has class ${q(c)}`);
        else if (!access.modelClasses.includes(c)) add(e, f, `class ${q(c)} is not one of the model_classes task ${q(access.task)} may use on this plan`);
        if (downgrades.has(c)) add(e, f, `lists class ${q(c)} twice`);
        downgrades.add(c);
      }
    });
    checkLimits(e, p.limits);
    plans.add(p.code);
  }

  const tokens = new Set<string>();
  unique(bundle.atiTokens, (t) => t.id, "ati_token");
  for (const t of bundle.atiTokens) {
    const e = `ati_token ${q(t.id)}`;
    if (!idPattern.test(t.id)) add(e, "id", "must be 1-64 characters of [A-Za-z0-9._-]");
    if (!plans.has(t.plan)) add(e, "plan", `unknown plan ${q(t.plan)}`);
    if (t.expiresAt && !isValidTimestamp(t.expiresAt)) add(e, "expires_at", "must be a time between years 0001 and 9999");
    tokens.add(t.id);
  }

  const tenants = new Set<string>();
  unique(bundle.tenants, (t) => t.id, "tenant");
  for (const t of bundle.tenants) {
    const e = `tenant ${q(t.id)}`;
    if (!idPattern.test(t.id)) add(e, "id", "must be 1-64 characters of [A-Za-z0-9._-]");
    if (!tokens.has(t.atiToken)) add(e, "ati_token", `unknown ATI token ${q(t.atiToken)}`);
    checkLimits(e, t.limits);
    tenants.add(t.id);
  }

  const users = new Set<string>();
  unique(bundle.users, (u) => `${u.tenant}/${u.id}`, "user");
  for (const u of bundle.users) {
    const e = `user ${q(`${u.tenant}/${u.id}`)}`;
    if (!userIdPattern.test(u.id)) add(e, "id", "must be 1-128 characters without spaces or '/'");
    if (!tenants.has(u.tenant)) add(e, "tenant", `unknown tenant ${q(u.tenant)}`);
    checkLimits(e, u.limits);
    users.add(`${u.tenant}/${u.id}`);
  }

  const hashes = new Set<string>();
  unique(bundle.apiKeys, (k) => k.id, "api_key");
  for (const k of bundle.apiKeys) {
    const e = `api_key ${q(k.id)}`;
    if (!idPattern.test(k.id)) add(e, "id", "must be 1-64 characters of [A-Za-z0-9._-]");
    if (!tenants.has(k.tenant)) add(e, "tenant", `unknown tenant ${q(k.tenant)}`);
    if (k.user && !users.has(`${k.tenant}/${k.user}`)) add(e, "user", `unknown user ${q(k.user)} in tenant ${q(k.tenant)}`);
    if (k.secret) {
      if (k.secret.length < 32 || k.secret.length > 512) add(e, "secret", "must be 32-512 characters");
    } else if (!hexSha256.test(k.secretSha256)) {
      add(e, "secret_sha256", "is required (64 lower-case hex characters) when no secret is given");
    }
    if (k.secretSha256) {
      if (hashes.has(k.secretSha256)) add(e, "secret_sha256", "another key has the same secret");
      hashes.add(k.secretSha256);
    }
    for (const task of k.tasks) if (!tasks.has(task)) add(e, "tasks", `unknown task ${q(task)}`);
    if (k.expiresAt && !isValidTimestamp(k.expiresAt)) add(e, "expires_at", "must be a time between years 0001 and 9999");
  }

  unique(bundle.webhooks, (w) => w.id, "webhook");
  for (const w of bundle.webhooks) {
    const e = `webhook ${q(w.id)}`;
    if (!idPattern.test(w.id)) add(e, "id", "must be 1-64 characters of [A-Za-z0-9._-]");
    if (w.tenant && !tenants.has(w.tenant)) add(e, "tenant", `unknown tenant ${q(w.tenant)}`);
    const urlProblem = webhookUrlProblem(w.url);
    if (urlProblem) add(e, "url", urlProblem);
    const secretProblem = webhookSecretProblem(w.secret);
    if (secretProblem) add(e, "secret", secretProblem);
    if (w.previousSecret && webhookSecretProblem(w.previousSecret)) add(e, "previous_secret", "is not a webhook secret (it is set by the control plane only)");
    if (w.events.length === 0) add(e, "events", `is empty (any of ${webhookEventTypes.join(", ")})`);
    for (const type of w.events) {
      if (!(webhookEventTypes as readonly string[]).includes(type)) add(e, "events", `unknown event ${q(type)} (${webhookEventTypes.join(", ")})`);
      else if (w.tenant && operatorOnlyEvents.has(type)) add(e, "events", `${type} goes to operator endpoints only (no tenant)`);
    }
    if (new Set(w.events).size !== w.events.length) add(e, "events", "lists an event twice");
    if (WebhookFormat[w.format] === undefined) add(e, "format", `unknown value ${w.format}`);
    if (w.description.length > 512) add(e, "description", "is at most 512 characters");
  }
  return problems;
}

/** Per-request caps may leave the window unset; it means REQUEST. */
export function normalizedWindow(limit: Limit): Window {
  return isPerRequestKind(limit.kind) ? Window.REQUEST : limit.window;
}

/** Metered limits default to PER_TENANT; per-request caps have no subject. */
export function normalizedPer(limit: Limit): Per {
  if (isPerRequestKind(limit.kind)) return Per.UNSPECIFIED;
  return limit.per === Per.UNSPECIFIED ? Per.TENANT : limit.per;
}

/** Why a webhook URL cannot be sent to, or undefined: an absolute http(s) URL without credentials, at most 2048 characters. */
function webhookUrlProblem(url: string): string | undefined {
  if (url.length > 2048) return "is at most 2048 characters";
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `${q(url)} is not a URL`;
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:") return `scheme ${q(parsed.protocol.slice(0, -1))} is not allowed (http or https)`;
  if (parsed.username || parsed.password) return "must not carry credentials (sign with the secret instead)";
  return undefined;
}
