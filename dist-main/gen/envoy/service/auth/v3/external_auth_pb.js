// Subset of Envoy's envoy/service/auth/v3/external_auth.proto: wire-compatible with
// Envoy's ext_authz gRPC client (same package, service, names and field numbers).
import { fileDesc, messageDesc, serviceDesc } from "@bufbuild/protobuf/codegenv2";
import { file_envoy_config_core_v3_base } from "../../../config/core/v3/base_pb.js";
import { file_envoy_service_auth_v3_attribute_context } from "./attribute_context_pb.js";
import { file_envoy_type_v3_http_status } from "../../../type/v3/http_status_pb.js";
import { file_google_protobuf_struct } from "@bufbuild/protobuf/wkt";
import { file_google_rpc_status } from "../../../../google/rpc/status_pb.js";
/**
 * Describes the file envoy/service/auth/v3/external_auth.proto.
 */
export const file_envoy_service_auth_v3_external_auth = /*@__PURE__*/ fileDesc("CillbnZveS9zZXJ2aWNlL2F1dGgvdjMvZXh0ZXJuYWxfYXV0aC5wcm90bxIVZW52b3kuc2VydmljZS5hdXRoLnYzIksKDENoZWNrUmVxdWVzdBI7CgphdHRyaWJ1dGVzGAEgASgLMicuZW52b3kuc2VydmljZS5hdXRoLnYzLkF0dHJpYnV0ZUNvbnRleHQihwEKEkRlbmllZEh0dHBSZXNwb25zZRIpCgZzdGF0dXMYASABKAsyGS5lbnZveS50eXBlLnYzLkh0dHBTdGF0dXMSOAoHaGVhZGVycxgCIAMoCzInLmVudm95LmNvbmZpZy5jb3JlLnYzLkhlYWRlclZhbHVlT3B0aW9uEgwKBGJvZHkYAyABKAki5gEKDk9rSHR0cFJlc3BvbnNlEjgKB2hlYWRlcnMYAiADKAsyJy5lbnZveS5jb25maWcuY29yZS52My5IZWFkZXJWYWx1ZU9wdGlvbhI1ChBkeW5hbWljX21ldGFkYXRhGAMgASgLMhcuZ29vZ2xlLnByb3RvYnVmLlN0cnVjdEICGAESGQoRaGVhZGVyc190b19yZW1vdmUYBSADKAkSSAoXcmVzcG9uc2VfaGVhZGVyc190b19hZGQYBiADKAsyJy5lbnZveS5jb25maWcuY29yZS52My5IZWFkZXJWYWx1ZU9wdGlvbiL7AQoNQ2hlY2tSZXNwb25zZRIiCgZzdGF0dXMYASABKAsyEi5nb29nbGUucnBjLlN0YXR1cxJECg9kZW5pZWRfcmVzcG9uc2UYAiABKAsyKS5lbnZveS5zZXJ2aWNlLmF1dGgudjMuRGVuaWVkSHR0cFJlc3BvbnNlSAASPAoLb2tfcmVzcG9uc2UYAyABKAsyJS5lbnZveS5zZXJ2aWNlLmF1dGgudjMuT2tIdHRwUmVzcG9uc2VIABIxChBkeW5hbWljX21ldGFkYXRhGAQgASgLMhcuZ29vZ2xlLnByb3RvYnVmLlN0cnVjdEIPCg1odHRwX3Jlc3BvbnNlMmMKDUF1dGhvcml6YXRpb24SUgoFQ2hlY2sSIy5lbnZveS5zZXJ2aWNlLmF1dGgudjMuQ2hlY2tSZXF1ZXN0GiQuZW52b3kuc2VydmljZS5hdXRoLnYzLkNoZWNrUmVzcG9uc2ViBnByb3RvMw", [file_envoy_config_core_v3_base, file_envoy_service_auth_v3_attribute_context, file_envoy_type_v3_http_status, file_google_protobuf_struct, file_google_rpc_status]);
/**
 * Describes the message envoy.service.auth.v3.CheckRequest.
 * Use `create(CheckRequestSchema)` to create a new message.
 */
export const CheckRequestSchema = /*@__PURE__*/ messageDesc(file_envoy_service_auth_v3_external_auth, 0);
/**
 * Describes the message envoy.service.auth.v3.DeniedHttpResponse.
 * Use `create(DeniedHttpResponseSchema)` to create a new message.
 */
export const DeniedHttpResponseSchema = /*@__PURE__*/ messageDesc(file_envoy_service_auth_v3_external_auth, 1);
/**
 * Describes the message envoy.service.auth.v3.OkHttpResponse.
 * Use `create(OkHttpResponseSchema)` to create a new message.
 */
export const OkHttpResponseSchema = /*@__PURE__*/ messageDesc(file_envoy_service_auth_v3_external_auth, 2);
/**
 * Describes the message envoy.service.auth.v3.CheckResponse.
 * Use `create(CheckResponseSchema)` to create a new message.
 */
export const CheckResponseSchema = /*@__PURE__*/ messageDesc(file_envoy_service_auth_v3_external_auth, 3);
/**
 * Admission control as Envoy's external authorization service: Check admits the
 * request (reserving its estimate) or denies it with the design's HTTP status.
 *
 * @generated from service envoy.service.auth.v3.Authorization
 */
export const Authorization = /*@__PURE__*/ serviceDesc(file_envoy_service_auth_v3_external_auth, 0);
//# sourceMappingURL=external_auth_pb.js.map