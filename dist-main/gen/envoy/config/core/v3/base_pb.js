// Subset of Envoy's envoy/config/core/v3/base.proto: the messages ext_authz uses,
// with Envoy's package, names and field numbers.
import { enumDesc, fileDesc, messageDesc } from "@bufbuild/protobuf/codegenv2";
import { file_google_protobuf_wrappers } from "@bufbuild/protobuf/wkt";
/**
 * Describes the file envoy/config/core/v3/base.proto.
 */
export const file_envoy_config_core_v3_base = /*@__PURE__*/ fileDesc("Ch9lbnZveS9jb25maWcvY29yZS92My9iYXNlLnByb3RvEhRlbnZveS5jb25maWcuY29yZS52MyI8CgtIZWFkZXJWYWx1ZRILCgNrZXkYASABKAkSDQoFdmFsdWUYAiABKAkSEQoJcmF3X3ZhbHVlGAMgASgMIuICChFIZWFkZXJWYWx1ZU9wdGlvbhIxCgZoZWFkZXIYASABKAsyIS5lbnZveS5jb25maWcuY29yZS52My5IZWFkZXJWYWx1ZRIuCgZhcHBlbmQYAiABKAsyGi5nb29nbGUucHJvdG9idWYuQm9vbFZhbHVlQgIYARJRCg1hcHBlbmRfYWN0aW9uGAMgASgOMjouZW52b3kuY29uZmlnLmNvcmUudjMuSGVhZGVyVmFsdWVPcHRpb24uSGVhZGVyQXBwZW5kQWN0aW9uEhgKEGtlZXBfZW1wdHlfdmFsdWUYBCABKAgifQoSSGVhZGVyQXBwZW5kQWN0aW9uEhsKF0FQUEVORF9JRl9FWElTVFNfT1JfQUREEAASEQoNQUREX0lGX0FCU0VOVBABEh4KGk9WRVJXUklURV9JRl9FWElTVFNfT1JfQUREEAISFwoTT1ZFUldSSVRFX0lGX0VYSVNUUxADYgZwcm90bzM", [file_google_protobuf_wrappers]);
/**
 * Describes the message envoy.config.core.v3.HeaderValue.
 * Use `create(HeaderValueSchema)` to create a new message.
 */
export const HeaderValueSchema = /*@__PURE__*/ messageDesc(file_envoy_config_core_v3_base, 0);
/**
 * Describes the message envoy.config.core.v3.HeaderValueOption.
 * Use `create(HeaderValueOptionSchema)` to create a new message.
 */
export const HeaderValueOptionSchema = /*@__PURE__*/ messageDesc(file_envoy_config_core_v3_base, 1);
/**
 * @generated from enum envoy.config.core.v3.HeaderValueOption.HeaderAppendAction
 */
export var HeaderValueOption_HeaderAppendAction;
(function (HeaderValueOption_HeaderAppendAction) {
    /**
     * @generated from enum value: APPEND_IF_EXISTS_OR_ADD = 0;
     */
    HeaderValueOption_HeaderAppendAction[HeaderValueOption_HeaderAppendAction["APPEND_IF_EXISTS_OR_ADD"] = 0] = "APPEND_IF_EXISTS_OR_ADD";
    /**
     * @generated from enum value: ADD_IF_ABSENT = 1;
     */
    HeaderValueOption_HeaderAppendAction[HeaderValueOption_HeaderAppendAction["ADD_IF_ABSENT"] = 1] = "ADD_IF_ABSENT";
    /**
     * @generated from enum value: OVERWRITE_IF_EXISTS_OR_ADD = 2;
     */
    HeaderValueOption_HeaderAppendAction[HeaderValueOption_HeaderAppendAction["OVERWRITE_IF_EXISTS_OR_ADD"] = 2] = "OVERWRITE_IF_EXISTS_OR_ADD";
    /**
     * @generated from enum value: OVERWRITE_IF_EXISTS = 3;
     */
    HeaderValueOption_HeaderAppendAction[HeaderValueOption_HeaderAppendAction["OVERWRITE_IF_EXISTS"] = 3] = "OVERWRITE_IF_EXISTS";
})(HeaderValueOption_HeaderAppendAction || (HeaderValueOption_HeaderAppendAction = {}));
/**
 * Describes the enum envoy.config.core.v3.HeaderValueOption.HeaderAppendAction.
 */
export const HeaderValueOption_HeaderAppendActionSchema = /*@__PURE__*/ enumDesc(file_envoy_config_core_v3_base, 1, 0);
//# sourceMappingURL=base_pb.js.map