import { create } from "@bufbuild/protobuf";
import * as grpc from "@grpc/grpc-js";
import type { Tracer } from "@opentelemetry/api";
import type { Logger } from "pino";
import type { SessionRequest, SessionResponse } from "../../gen/admission/v1/admission_pb.js";
import { AdmissionService, SessionErrorSchema } from "../../gen/admission/v1/admission_pb.js";
import { PolicyService } from "../../gen/admission/v1/policy_service_pb.js";
import { deadlineMs, type InFlightLimit } from "../in-flight-limit.js";
import type { Metrics } from "../metrics.js";
import { rpcSpan } from "../tracing.js";
import { RpcError } from "../rpc-error.js";
import type { AdmissionHandlers } from "./admission-handlers.js";
import type { CallContext } from "./call-context.js";
import type { PolicyHandlers } from "./policy-handlers.js";
import { grpcServiceDefinition, MalformedRequest } from "./service-definition.js";

export interface GrpcServerDeps {
  readonly admission: AdmissionHandlers;
  readonly policy: PolicyHandlers;
  readonly metrics: Metrics;
  readonly logger: Logger;
  /** The bound on calls in flight, shared with the other front ends. */
  readonly limit: InFlightLimit;
  /** Each call (and each Session message) in a span when tracing is on. */
  readonly tracer?: Tracer;
}

type Handler<Req, Res> = (req: Req, ctx: CallContext) => Promise<Res>;

/**
 * Registers AdmissionService (including the Session stream) and PolicyService
 * on a grpc-js server. Handlers are transport-free; this maps their errors to
 * gRPC statuses in one place.
 */
export function addAdmissionServices(server: grpc.Server, deps: GrpcServerDeps): void {
  const { logger, metrics, limit, tracer } = deps;

  const fail = (method: string, err: unknown): grpc.ServiceError => {
    if (err instanceof RpcError) {
      metrics.rpcs.inc({ method, code: grpc.status[err.code] });
      return Object.assign(new Error(err.message), { code: err.code, details: err.message, metadata: new grpc.Metadata() });
    }
    metrics.rpcs.inc({ method, code: "INTERNAL" });
    logger.error({ err, method }, "unexpected error in handler");
    return Object.assign(new Error("internal error"), { code: grpc.status.INTERNAL, details: "internal error", metadata: new grpc.Metadata() });
  };

  const unary = <Req, Res>(service: string, method: string, handler: Handler<Req, Res>): grpc.handleUnaryCall<Req, Res> => (call, callback) => {
    const request: unknown = call.request;
    if (request instanceof MalformedRequest) return callback(fail(method, new RpcError(grpc.status.INVALID_ARGUMENT, request.message)));
    const ctx = callContext(call);
    const refused = limit.enter({ deadlineMs: deadlineMs(call.getDeadline()), cancelled: call.cancelled });
    if (refused) return callback(fail(method, refused));
    let answered: Promise<Res>;
    try {
      answered = tracer ? rpcSpan(tracer, { service, method, header: ctx.header }, () => handler(call.request, ctx)) : handler(call.request, ctx);
    } catch (err) {
      answered = Promise.reject(err);
    }
    answered.then(
      (response) => {
        limit.leave();
        metrics.rpcs.inc({ method, code: "OK" });
        callback(null, response);
      },
      (err) => {
        limit.leave();
        callback(fail(method, err));
      },
    );
  };

  const a = deps.admission;
  const session: grpc.handleBidiStreamingCall<SessionRequest, SessionResponse> = (call) => {
    const ctx = callContext(call);
    let pending = 0;
    let ended = false;
    /** A malformed message ends the stream with this status, once the calls before it are answered. */
    let malformed: RpcError | undefined;
    const finish = () => {
      if (pending > 0 || call.writableEnded) return;
      // grpc-js turns an "error" on a server stream into the call's final status.
      if (malformed) call.emit("error", Object.assign(new Error(malformed.message), { code: malformed.code, details: malformed.message }));
      else if (ended) call.end();
    };
    const answer = (id: bigint, result: SessionResponse["result"]) => {
      if (!call.cancelled && !call.destroyed && !call.writableEnded) call.write({ $typeName: "admission.v1.SessionResponse", id, result } satisfies SessionResponse);
    };
    const failed = (msg: SessionRequest, err: unknown) => {
      const e = fail(`Session.${msg.call.case ?? "none"}`, err);
      answer(msg.id, { case: "error", value: create(SessionErrorSchema, { code: e.code, message: e.details }) });
    };
    call.on("data", (msg: SessionRequest | MalformedRequest) => {
      if (call.writableEnded || malformed) return;
      if (msg instanceof MalformedRequest) {
        malformed = new RpcError(grpc.status.INVALID_ARGUMENT, `${msg.message}; the stream ends here`);
        metrics.rpcs.inc({ method: "Session", code: "INVALID_ARGUMENT" });
        finish();
        return;
      }
      // Each message takes its own slot: a stream cannot queue more work than unary calls could.
      const refused = limit.enter({ deadlineMs: deadlineMs(call.getDeadline()), cancelled: call.cancelled });
      if (refused) return failed(msg, refused);
      pending++;
      const run = (): Promise<SessionResponse["result"]> => {
        switch (msg.call.case) {
          case "admit":
            return a.admit(msg.call.value, ctx).then((value) => ({ case: "admit", value }));
          case "settle":
            return a.settle(msg.call.value).then((value) => ({ case: "settle", value }));
          case "renew":
            return a.renew(msg.call.value).then((value) => ({ case: "renew", value }));
          default:
            return Promise.reject(new RpcError(grpc.status.INVALID_ARGUMENT, "session request carries no call (admit, settle or renew)"));
        }
      };
      // The trace context travels on each message: one stream carries the calls of many traces.
      const result = tracer && msg.call.case
        ? rpcSpan(tracer, { service: AdmissionService.typeName, method: methodNames[msg.call.case], header: messageTraceHeader(msg) }, run)
        : run();
      result.then(
        (answered) => {
          limit.leave();
          pending--;
          answer(msg.id, answered);
          finish();
        },
        (err) => {
          limit.leave();
          pending--;
          failed(msg, err);
          finish();
        },
      );
    });
    call.on("end", () => {
      ended = true;
      finish();
    });
    call.on("error", (err) => logger.debug({ err: String(err) }, "session stream error"));
  };

  server.addService(grpcServiceDefinition(AdmissionService, { tolerateMalformedRequests: true }), {
    admit: unary(AdmissionService.typeName, "Admit", (req, ctx) => a.admit(req, ctx)),
    settle: unary(AdmissionService.typeName, "Settle", (req, _ctx) => a.settle(req)),
    renew: unary(AdmissionService.typeName, "Renew", (req, _ctx) => a.renew(req)),
    session,
    getEffectivePolicy: unary(AdmissionService.typeName, "GetEffectivePolicy", (req, ctx) => a.getEffectivePolicy(req, ctx)),
  } as grpc.UntypedServiceImplementation);

  const p = deps.policy;
  const policyImpl: grpc.UntypedServiceImplementation = {};
  for (const method of PolicyService.methods) {
    const fn = (p as unknown as Record<string, Handler<unknown, unknown>>)[method.localName];
    if (typeof fn !== "function") throw new Error(`PolicyService.${method.name} has no handler`);
    policyImpl[method.localName] = unary(PolicyService.typeName, method.name, (req, ctx) => fn.call(p, req, ctx));
  }
  server.addService(grpcServiceDefinition(PolicyService, { tolerateMalformedRequests: true }), policyImpl);
}

const methodNames = { admit: "Admit", settle: "Settle", renew: "Renew" } as const;

/** The trace context a Session message carries (not the stream's: it carries many traces). */
function messageTraceHeader(msg: SessionRequest): (name: string) => string | undefined {
  return (name) => (name === "traceparent" ? msg.traceparent : name === "tracestate" ? msg.tracestate : undefined) || undefined;
}

function callContext(call: { readonly metadata: grpc.Metadata; readonly cancelled: boolean }): CallContext {
  return {
    header(name) {
      const value = call.metadata.get(name)[0];
      return typeof value === "string" ? value : value?.toString("utf8");
    },
    get cancelled() {
      return call.cancelled;
    },
  };
}
