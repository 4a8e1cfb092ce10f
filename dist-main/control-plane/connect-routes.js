import { Code, ConnectError } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { AdmissionService } from "../gen/admission/v1/admission_pb.js";
import { PolicyService } from "../gen/admission/v1/policy_service_pb.js";
import { RpcError } from "./rpc-error.js";
/**
 * AdmissionService and PolicyService over the Connect protocol (HTTP/1.1 +
 * JSON or binary) for callers without a gRPC client: curl, a Lua plugin, a
 * shell script. The same transport-free handlers as gRPC; gRPC status codes
 * and Connect codes share their numbers. Session needs a bidi stream: gRPC only.
 */
export function connectRoutes(deps) {
    const wrap = (target, name) => {
        const fn = target[name].bind(target);
        return async (req, context) => {
            try {
                const timeoutMs = context.timeoutMs();
                const state = { deadlineMs: timeoutMs === undefined ? Infinity : Date.now() + timeoutMs, cancelled: context.signal.aborted };
                return await deps.limit.run(state, () => fn(req, { header: (h) => context.requestHeader.get(h) ?? undefined }));
            }
            catch (err) {
                if (err instanceof RpcError)
                    throw new ConnectError(err.message, err.code);
                deps.logger.error({ err, method: name }, "unexpected error in handler");
                throw new ConnectError("internal error", Code.Internal);
            }
        };
    };
    const routes = (router) => {
        const admission = {
            session: () => {
                throw new ConnectError("Session is a bidirectional stream: use gRPC", Code.Unimplemented);
            },
        };
        for (const m of AdmissionService.methods)
            if (m.localName !== "session")
                admission[m.localName] = wrap(deps.admission, m.localName);
        const policy = {};
        for (const m of PolicyService.methods)
            policy[m.localName] = wrap(deps.policy, m.localName);
        router.service(AdmissionService, admission);
        router.service(PolicyService, policy);
    };
    const prefixes = [`/${AdmissionService.typeName}/`, `/${PolicyService.typeName}/`];
    // JSON must be UTF-8: invalid bytes are an invalid_argument, as they are in binary protobuf, not silently replaced.
    // (connect passes jsonOptions on to its JSON serialization, which takes a textDecoder.)
    const jsonOptions = { ignoreUnknownFields: true, textDecoder: new TextDecoder("utf-8", { fatal: true }) };
    const handler = connectNodeAdapter({ routes, readMaxBytes: 8 * 1024 * 1024, jsonOptions });
    return (req, res) => {
        if (!prefixes.some((p) => req.url?.startsWith(p)))
            return false;
        handler(req, res);
        return true;
    };
}
//# sourceMappingURL=connect-routes.js.map