import { status as GrpcStatus } from "@grpc/grpc-js";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";

/** The one table from deny reason to HTTP status and gRPC code, used by every front end. */
export interface ReasonMapping {
  readonly httpStatus: number;
  readonly grpcCode: GrpcStatus;
  /** Stable lowercase code for HTTP bodies (OpenAI-style `error.code`). */
  readonly code: string;
}

const table: Record<DenyReason, ReasonMapping> = {
  [DenyReason.UNSPECIFIED]: { httpStatus: 200, grpcCode: GrpcStatus.OK, code: "ok" },
  [DenyReason.UNAUTHENTICATED]: { httpStatus: 401, grpcCode: GrpcStatus.UNAUTHENTICATED, code: "unauthenticated" },
  [DenyReason.TENANT_INACTIVE]: { httpStatus: 403, grpcCode: GrpcStatus.PERMISSION_DENIED, code: "tenant_inactive" },
  [DenyReason.TOKEN_INACTIVE]: { httpStatus: 403, grpcCode: GrpcStatus.PERMISSION_DENIED, code: "token_inactive" },
  [DenyReason.FEATURE_NOT_IN_PLAN]: { httpStatus: 403, grpcCode: GrpcStatus.PERMISSION_DENIED, code: "feature_not_in_plan" },
  [DenyReason.MODEL_NOT_ALLOWED]: { httpStatus: 403, grpcCode: GrpcStatus.PERMISSION_DENIED, code: "model_not_allowed" },
  [DenyReason.TASK_UNKNOWN]: { httpStatus: 403, grpcCode: GrpcStatus.PERMISSION_DENIED, code: "task_unknown" },
  [DenyReason.REQUEST_TOO_LARGE]: { httpStatus: 413, grpcCode: GrpcStatus.INVALID_ARGUMENT, code: "request_too_large" },
  [DenyReason.RATE_LIMITED]: { httpStatus: 429, grpcCode: GrpcStatus.RESOURCE_EXHAUSTED, code: "rate_limited" },
  [DenyReason.CONCURRENCY_LIMITED]: { httpStatus: 429, grpcCode: GrpcStatus.RESOURCE_EXHAUSTED, code: "concurrency_limited" },
  [DenyReason.QUOTA_EXCEEDED]: { httpStatus: 402, grpcCode: GrpcStatus.RESOURCE_EXHAUSTED, code: "quota_exceeded" },
  [DenyReason.BUDGET_EXCEEDED]: { httpStatus: 402, grpcCode: GrpcStatus.RESOURCE_EXHAUSTED, code: "budget_exceeded" },
  [DenyReason.INVALID_REQUEST]: { httpStatus: 400, grpcCode: GrpcStatus.INVALID_ARGUMENT, code: "invalid_request" },
  [DenyReason.UNAVAILABLE]: { httpStatus: 503, grpcCode: GrpcStatus.UNAVAILABLE, code: "unavailable" },
  [DenyReason.CREDITS_EXHAUSTED]: { httpStatus: 402, grpcCode: GrpcStatus.RESOURCE_EXHAUSTED, code: "credits_exhausted" },
};

export function reasonMapping(reason: DenyReason): ReasonMapping {
  return table[reason] ?? table[DenyReason.INVALID_REQUEST];
}

/** Name of a reason without its prefix, e.g. "RATE_LIMITED". */
export function reasonName(reason: DenyReason): string {
  return DenyReason[reason] ?? String(reason);
}
