// Subset of Envoy's envoy/service/auth/v3/attribute_context.proto with Envoy's package,
// names and field numbers; fields left out (addresses, metadata, header_map) are skipped on decode.
import { fileDesc, messageDesc } from "@bufbuild/protobuf/codegenv2";
import { file_google_protobuf_timestamp } from "@bufbuild/protobuf/wkt";
/**
 * Describes the file envoy/service/auth/v3/attribute_context.proto.
 */
export const file_envoy_service_auth_v3_attribute_context = /*@__PURE__*/ fileDesc("Ci1lbnZveS9zZXJ2aWNlL2F1dGgvdjMvYXR0cmlidXRlX2NvbnRleHQucHJvdG8SFWVudm95LnNlcnZpY2UuYXV0aC52MyK+CAoQQXR0cmlidXRlQ29udGV4dBI8CgZzb3VyY2UYASABKAsyLC5lbnZveS5zZXJ2aWNlLmF1dGgudjMuQXR0cmlidXRlQ29udGV4dC5QZWVyEkEKC2Rlc3RpbmF0aW9uGAIgASgLMiwuZW52b3kuc2VydmljZS5hdXRoLnYzLkF0dHJpYnV0ZUNvbnRleHQuUGVlchJACgdyZXF1ZXN0GAQgASgLMi8uZW52b3kuc2VydmljZS5hdXRoLnYzLkF0dHJpYnV0ZUNvbnRleHQuUmVxdWVzdBJaChJjb250ZXh0X2V4dGVuc2lvbnMYCiADKAsyPi5lbnZveS5zZXJ2aWNlLmF1dGgudjMuQXR0cmlidXRlQ29udGV4dC5Db250ZXh0RXh0ZW5zaW9uc0VudHJ5EkcKC3Rsc19zZXNzaW9uGAwgASgLMjIuZW52b3kuc2VydmljZS5hdXRoLnYzLkF0dHJpYnV0ZUNvbnRleHQuVExTU2Vzc2lvbhq4AQoEUGVlchIPCgdzZXJ2aWNlGAIgASgJEkgKBmxhYmVscxgDIAMoCzI4LmVudm95LnNlcnZpY2UuYXV0aC52My5BdHRyaWJ1dGVDb250ZXh0LlBlZXIuTGFiZWxzRW50cnkSEQoJcHJpbmNpcGFsGAQgASgJEhMKC2NlcnRpZmljYXRlGAUgASgJGi0KC0xhYmVsc0VudHJ5EgsKA2tleRgBIAEoCRINCgV2YWx1ZRgCIAEoCToCOAEadgoHUmVxdWVzdBIoCgR0aW1lGAEgASgLMhouZ29vZ2xlLnByb3RvYnVmLlRpbWVzdGFtcBJBCgRodHRwGAIgASgLMjMuZW52b3kuc2VydmljZS5hdXRoLnYzLkF0dHJpYnV0ZUNvbnRleHQuSHR0cFJlcXVlc3QauQIKC0h0dHBSZXF1ZXN0EgoKAmlkGAEgASgJEg4KBm1ldGhvZBgCIAEoCRJRCgdoZWFkZXJzGAMgAygLMkAuZW52b3kuc2VydmljZS5hdXRoLnYzLkF0dHJpYnV0ZUNvbnRleHQuSHR0cFJlcXVlc3QuSGVhZGVyc0VudHJ5EgwKBHBhdGgYBCABKAkSDAoEaG9zdBgFIAEoCRIOCgZzY2hlbWUYBiABKAkSDQoFcXVlcnkYByABKAkSEAoIZnJhZ21lbnQYCCABKAkSDAoEc2l6ZRgJIAEoAxIQCghwcm90b2NvbBgKIAEoCRIMCgRib2R5GAsgASgJEhAKCHJhd19ib2R5GAwgASgMGi4KDEhlYWRlcnNFbnRyeRILCgNrZXkYASABKAkSDQoFdmFsdWUYAiABKAk6AjgBGhkKClRMU1Nlc3Npb24SCwoDc25pGAEgASgJGjgKFkNvbnRleHRFeHRlbnNpb25zRW50cnkSCwoDa2V5GAEgASgJEg0KBXZhbHVlGAIgASgJOgI4AWIGcHJvdG8z", [file_google_protobuf_timestamp]);
/**
 * Describes the message envoy.service.auth.v3.AttributeContext.
 * Use `create(AttributeContextSchema)` to create a new message.
 */
export const AttributeContextSchema = /*@__PURE__*/ messageDesc(file_envoy_service_auth_v3_attribute_context, 0);
/**
 * Describes the message envoy.service.auth.v3.AttributeContext.Peer.
 * Use `create(AttributeContext_PeerSchema)` to create a new message.
 */
export const AttributeContext_PeerSchema = /*@__PURE__*/ messageDesc(file_envoy_service_auth_v3_attribute_context, 0, 0);
/**
 * Describes the message envoy.service.auth.v3.AttributeContext.Request.
 * Use `create(AttributeContext_RequestSchema)` to create a new message.
 */
export const AttributeContext_RequestSchema = /*@__PURE__*/ messageDesc(file_envoy_service_auth_v3_attribute_context, 0, 1);
/**
 * Describes the message envoy.service.auth.v3.AttributeContext.HttpRequest.
 * Use `create(AttributeContext_HttpRequestSchema)` to create a new message.
 */
export const AttributeContext_HttpRequestSchema = /*@__PURE__*/ messageDesc(file_envoy_service_auth_v3_attribute_context, 0, 2);
/**
 * Describes the message envoy.service.auth.v3.AttributeContext.TLSSession.
 * Use `create(AttributeContext_TLSSessionSchema)` to create a new message.
 */
export const AttributeContext_TLSSessionSchema = /*@__PURE__*/ messageDesc(file_envoy_service_auth_v3_attribute_context, 0, 3);
//# sourceMappingURL=attribute_context_pb.js.map