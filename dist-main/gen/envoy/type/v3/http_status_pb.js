// Subset of Envoy's envoy/type/v3/http_status.proto (the status codes this service answers with;
// the enum is open, any code travels on the wire).
import { enumDesc, fileDesc, messageDesc } from "@bufbuild/protobuf/codegenv2";
/**
 * Describes the file envoy/type/v3/http_status.proto.
 */
export const file_envoy_type_v3_http_status = /*@__PURE__*/ fileDesc("Ch9lbnZveS90eXBlL3YzL2h0dHBfc3RhdHVzLnByb3RvEg1lbnZveS50eXBlLnYzIjUKCkh0dHBTdGF0dXMSJwoEY29kZRgBIAEoDjIZLmVudm95LnR5cGUudjMuU3RhdHVzQ29kZSrYAQoKU3RhdHVzQ29kZRIJCgVFbXB0eRAAEgcKAk9LEMgBEg8KCkJhZFJlcXVlc3QQkAMSEQoMVW5hdXRob3JpemVkEJEDEhQKD1BheW1lbnRSZXF1aXJlZBCSAxIOCglGb3JiaWRkZW4QkwMSDQoITm90Rm91bmQQlAMSFAoPUGF5bG9hZFRvb0xhcmdlEJ0DEhQKD1Rvb01hbnlSZXF1ZXN0cxCtAxIYChNJbnRlcm5hbFNlcnZlckVycm9yEPQDEhcKElNlcnZpY2VVbmF2YWlsYWJsZRD3A2IGcHJvdG8z");
/**
 * Describes the message envoy.type.v3.HttpStatus.
 * Use `create(HttpStatusSchema)` to create a new message.
 */
export const HttpStatusSchema = /*@__PURE__*/ messageDesc(file_envoy_type_v3_http_status, 0);
/**
 * @generated from enum envoy.type.v3.StatusCode
 */
export var StatusCode;
(function (StatusCode) {
    /**
     * @generated from enum value: Empty = 0;
     */
    StatusCode[StatusCode["Empty"] = 0] = "Empty";
    /**
     * @generated from enum value: OK = 200;
     */
    StatusCode[StatusCode["OK"] = 200] = "OK";
    /**
     * @generated from enum value: BadRequest = 400;
     */
    StatusCode[StatusCode["BadRequest"] = 400] = "BadRequest";
    /**
     * @generated from enum value: Unauthorized = 401;
     */
    StatusCode[StatusCode["Unauthorized"] = 401] = "Unauthorized";
    /**
     * @generated from enum value: PaymentRequired = 402;
     */
    StatusCode[StatusCode["PaymentRequired"] = 402] = "PaymentRequired";
    /**
     * @generated from enum value: Forbidden = 403;
     */
    StatusCode[StatusCode["Forbidden"] = 403] = "Forbidden";
    /**
     * @generated from enum value: NotFound = 404;
     */
    StatusCode[StatusCode["NotFound"] = 404] = "NotFound";
    /**
     * @generated from enum value: PayloadTooLarge = 413;
     */
    StatusCode[StatusCode["PayloadTooLarge"] = 413] = "PayloadTooLarge";
    /**
     * @generated from enum value: TooManyRequests = 429;
     */
    StatusCode[StatusCode["TooManyRequests"] = 429] = "TooManyRequests";
    /**
     * @generated from enum value: InternalServerError = 500;
     */
    StatusCode[StatusCode["InternalServerError"] = 500] = "InternalServerError";
    /**
     * @generated from enum value: ServiceUnavailable = 503;
     */
    StatusCode[StatusCode["ServiceUnavailable"] = 503] = "ServiceUnavailable";
})(StatusCode || (StatusCode = {}));
/**
 * Describes the enum envoy.type.v3.StatusCode.
 */
export const StatusCodeSchema = /*@__PURE__*/ enumDesc(file_envoy_type_v3_http_status, 0);
//# sourceMappingURL=http_status_pb.js.map