import type { Bundle } from "../../gen/admission/v1/policy_pb.js";
import { BundleSchema } from "../../gen/admission/v1/policy_pb.js";
import { sha256Hex } from "../../control-plane/credentials.js";
import { parseProtoJson } from "../../control-plane/policy/proto-json.js";
import { catalogJson, secretOf } from "../support/scenario.js";

/**
 * The plan every benchmark tenant is on: nine metered limits, so each decision
 * reserves nine meters (requests per key and user, tokens, budget, concurrency
 * per tenant), high enough never to deny. OUTPUT_TOKENS per request is a check,
 * not a meter.
 */
export const benchPlanLimits = [
  { kind: "REQUESTS", window: "MINUTE", per: "KEY", value: 1e12 },
  { kind: "REQUESTS", window: "HOUR", per: "USER", value: 1e12 },
  { kind: "REQUESTS", window: "DAY", per: "TENANT", value: 1e12 },
  { kind: "TOKENS", window: "MINUTE", per: "TENANT", value: 1e15 },
  { kind: "TOKENS", window: "DAY", per: "USER", value: 1e15 },
  { kind: "TOKENS", window: "MONTH", per: "TENANT", value: 1e15 },
  { kind: "BUDGET_MICROS", window: "DAY", per: "TENANT", value: 1e15 },
  { kind: "BUDGET_MICROS", window: "MONTH", per: "TENANT", value: 1e15 },
  { kind: "CONCURRENCY", per: "TENANT", value: 1e9 },
  { kind: "OUTPUT_TOKENS", window: "REQUEST", value: 4000 },
];
export const metersPerDecision = benchPlanLimits.filter((l) => l.kind !== "OUTPUT_TOKENS").length;

export interface BenchSizes {
  readonly tenants: number;
  /** Users, each with one API key, spread evenly over the tenants. */
  readonly keys: number;
}

/** A model served on Anthropic's Messages API (provider "p-anthropic"), for the data plane's Messages rows; priced as m-pro. */
export const benchAnthropicModel = "m-claude";

/** Key i's id; its secret is secretOf(id). */
export const keyId = (i: number) => `bk${i}`;

/**
 * The token-bucket tenants (as many as the others) override two of the plan's limits with
 * TOKEN_BUCKET ones of the same kind, window and per: a decision there reserves the same nine
 * meters, two of them buckets (never empty: the burst is huge, the refill realistic enough
 * for the TAT to move).
 */
export const bucketTenantLimits = [
  { kind: "REQUESTS", window: "MINUTE", per: "KEY", value: 1e6, algorithm: "LIMIT_ALGORITHM_TOKEN_BUCKET", burst: 1e12 },
  { kind: "TOKENS", window: "MINUTE", per: "TENANT", value: 1e9, algorithm: "LIMIT_ALGORITHM_TOKEN_BUCKET", burst: 1e15 },
];

/** Keys of the token-bucket tenants: as many as the first fixed-window keys they are compared with, spread the same way. */
export const bucketKeyCount = (sizes: BenchSizes) => Math.min(sizes.keys, 1_000);

/** Token-bucket key i's id; its secret is secretOf(id). */
export const bucketKeyId = (i: number) => `bkb${i}`;

/**
 * A realistic bundle: the shared catalog, the bench plan, `tenants` tenants and
 * `keys` users with one key each. Keys carry the SHA-256 of their secret, as an
 * export would, so loading 100,000 of them does not hash on the way in.
 */
export function benchBundle(sizes: BenchSizes): Bundle {
  const tenantOf = (i: number) => `bt${i % sizes.tenants}`;
  return parseProtoJson(BundleSchema, {
    ...catalogJson,
    models: [...catalogJson.models, { name: benchAnthropicModel, modelClass: "BASE_S", provider: "p-anthropic", inputMicrosPerMtok: 1_000_000, outputMicrosPerMtok: 2_000_000 }],
    plans: [{ ...catalogJson.plans[0], code: "PRO", limits: benchPlanLimits }],
    tenants: [
      ...Array.from({ length: sizes.tenants }, (_, i) => ({ id: `bt${i}`, atiToken: "ati-pro", status: "ACTIVE", mode: "ENFORCE" })),
      ...Array.from({ length: sizes.tenants }, (_, i) => ({ id: `btb${i}`, atiToken: "ati-pro", status: "ACTIVE", mode: "ENFORCE", limits: bucketTenantLimits })),
    ],
    users: [
      ...Array.from({ length: sizes.keys }, (_, i) => ({ id: `bu${i}`, tenant: tenantOf(i), status: "ACTIVE" })),
      ...Array.from({ length: bucketKeyCount(sizes) }, (_, i) => ({ id: `bub${i}`, tenant: `btb${i % sizes.tenants}`, status: "ACTIVE" })),
    ],
    apiKeys: [
      ...Array.from({ length: sizes.keys }, (_, i) => ({
        id: keyId(i), tenant: tenantOf(i), user: `bu${i}`, secretSha256: sha256Hex(secretOf(keyId(i))),
      })),
      ...Array.from({ length: bucketKeyCount(sizes) }, (_, i) => ({
        id: bucketKeyId(i), tenant: `btb${i % sizes.tenants}`, user: `bub${i}`, secretSha256: sha256Hex(secretOf(bucketKeyId(i))),
      })),
    ],
  });
}
