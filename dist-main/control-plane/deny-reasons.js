import { status as GrpcStatus } from "@grpc/grpc-js";
import { DenyReason } from "../gen/admission/v1/admission_pb.js";
const table = {
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
};
export function reasonMapping(reason) {
    return table[reason] ?? table[DenyReason.INVALID_REQUEST];
}
/** Name of a reason without its prefix, e.g. "RATE_LIMITED". */
export function reasonName(reason) {
    return DenyReason[reason] ?? String(reason);
}
//# sourceMappingURL=deny-reasons.js.map