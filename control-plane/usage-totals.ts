import { create } from "@bufbuild/protobuf";
import { UsageTotalsSchema, type UsageTotals as UsageTotalsMessage } from "../gen/admission/v1/policy_service_pb.js";
import type { UsageTotals } from "./store/ledger.js";

/** The ledger's totals as the API answers them (int64 fields). */
export function usageTotalsMessage(t: UsageTotals): UsageTotalsMessage {
  return create(UsageTotalsSchema, {
    requests: BigInt(t.requests), inputTokens: BigInt(t.inputTokens), outputTokens: BigInt(t.outputTokens), costMicros: BigInt(t.costMicros),
    cacheReadTokens: BigInt(t.cacheReadTokens), cacheWriteTokens: BigInt(t.cacheWriteTokens), reasoningTokens: BigInt(t.reasoningTokens),
  });
}
