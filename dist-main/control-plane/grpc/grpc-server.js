import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import { AdmissionService, SessionErrorSchema } from "../../gen/admission/v1/admission_pb.js";
import { PolicyService } from "../../gen/admission/v1/policy_service_pb.js";
import { deadlineMs } from "../in-flight-limit.js";
import { RpcError } from "../rpc-error.js";
import { grpcServiceDefinition, MalformedRequest } from "./service-definition.js";
/**
 * Registers AdmissionService (including the Session stream) and PolicyService
 * on a grpc-js server. Handlers are transport-free; this maps their errors to
 * gRPC statuses in one place.
 */
export function addAdmissionServices(server, deps) {
    const { logger, metrics, limit } = deps;
    const fail = (method, err) => {
        if (err instanceof RpcError) {
            metrics.rpcs.inc({ method, code: grpc.status[err.code] });
            return Object.assign(new Error(err.message), { code: err.code, details: err.message, metadata: new grpc.Metadata() });
        }
        metrics.rpcs.inc({ method, code: "INTERNAL" });
        logger.error({ err, method }, "unexpected error in handler");
        return Object.assign(new Error("internal error"), { code: grpc.status.INTERNAL, details: "internal error", metadata: new grpc.Metadata() });
    };
    const unary = (method, handler) => (call, callback) => {
        const request = call.request;
        if (request instanceof MalformedRequest)
            return callback(fail(method, new RpcError(grpc.status.INVALID_ARGUMENT, request.message)));
        const refused = limit.enter({ deadlineMs: deadlineMs(call.getDeadline()), cancelled: call.cancelled });
        if (refused)
            return callback(fail(method, refused));
        let answered;
        try {
            answered = handler(call.request, metadataContext(call.metadata));
        }
        catch (err) {
            answered = Promise.reject(err);
        }
        answered.then((response) => {
            limit.leave();
            metrics.rpcs.inc({ method, code: "OK" });
            callback(null, response);
        }, (err) => {
            limit.leave();
            callback(fail(method, err));
        });
    };
    const a = deps.admission;
    const session = (call) => {
        let pending = 0;
        let ended = false;
        /** A malformed message ends the stream with this status, once the calls before it are answered. */
        let malformed;
        const finish = () => {
            if (pending > 0 || call.writableEnded)
                return;
            // grpc-js turns an "error" on a server stream into the call's final status.
            if (malformed)
                call.emit("error", Object.assign(new Error(malformed.message), { code: malformed.code, details: malformed.message }));
            else if (ended)
                call.end();
        };
        const answer = (id, result) => {
            if (!call.cancelled && !call.destroyed && !call.writableEnded)
                call.write({ $typeName: "admission.v1.SessionResponse", id, result });
        };
        const failed = (msg, err) => {
            const e = fail(`Session.${msg.call.case ?? "none"}`, err);
            answer(msg.id, { case: "error", value: create(SessionErrorSchema, { code: e.code, message: e.details }) });
        };
        call.on("data", (msg) => {
            if (call.writableEnded || malformed)
                return;
            if (msg instanceof MalformedRequest) {
                malformed = new RpcError(grpc.status.INVALID_ARGUMENT, `${msg.message}; the stream ends here`);
                metrics.rpcs.inc({ method: "Session", code: "INVALID_ARGUMENT" });
                finish();
                return;
            }
            // Each message takes its own slot: a stream cannot queue more work than unary calls could.
            const refused = limit.enter({ deadlineMs: deadlineMs(call.getDeadline()), cancelled: call.cancelled });
            if (refused)
                return failed(msg, refused);
            pending++;
            let result;
            switch (msg.call.case) {
                case "admit":
                    result = a.admit(msg.call.value).then((value) => ({ case: "admit", value }));
                    break;
                case "settle":
                    result = a.settle(msg.call.value).then((value) => ({ case: "settle", value }));
                    break;
                case "renew":
                    result = a.renew(msg.call.value).then((value) => ({ case: "renew", value }));
                    break;
                default:
                    result = Promise.reject(new RpcError(grpc.status.INVALID_ARGUMENT, "session request carries no call (admit, settle or renew)"));
            }
            result.then((answered) => {
                limit.leave();
                pending--;
                answer(msg.id, answered);
                finish();
            }, (err) => {
                limit.leave();
                pending--;
                failed(msg, err);
                finish();
            });
        });
        call.on("end", () => {
            ended = true;
            finish();
        });
        call.on("error", (err) => logger.debug({ err: String(err) }, "session stream error"));
    };
    server.addService(grpcServiceDefinition(AdmissionService, { tolerateMalformedRequests: true }), {
        admit: unary("Admit", (req, _ctx) => a.admit(req)),
        settle: unary("Settle", (req, _ctx) => a.settle(req)),
        renew: unary("Renew", (req, _ctx) => a.renew(req)),
        session,
        getEffectivePolicy: unary("GetEffectivePolicy", (req, ctx) => a.getEffectivePolicy(req, ctx)),
    });
    const p = deps.policy;
    const policyImpl = {};
    for (const method of PolicyService.methods) {
        const fn = p[method.localName];
        if (typeof fn !== "function")
            throw new Error(`PolicyService.${method.name} has no handler`);
        policyImpl[method.localName] = unary(method.name, (req, ctx) => fn.call(p, req, ctx));
    }
    server.addService(grpcServiceDefinition(PolicyService, { tolerateMalformedRequests: true }), policyImpl);
}
function metadataContext(metadata) {
    return {
        header(name) {
            const value = metadata.get(name)[0];
            return typeof value === "string" ? value : value?.toString("utf8");
        },
    };
}
//# sourceMappingURL=grpc-server.js.map