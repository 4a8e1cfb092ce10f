import { Code, ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Tracer } from "@opentelemetry/api";
import type { Logger } from "pino";
import { AdmissionService } from "../gen/admission/v1/admission_pb.js";
import { PolicyService } from "../gen/admission/v1/policy_service_pb.js";
import type { AdmissionHandlers } from "./grpc/admission-handlers.js";
import type { CallContext } from "./grpc/call-context.js";
import type { PolicyHandlers } from "./grpc/policy-handlers.js";
import type { InFlightLimit } from "./in-flight-limit.js";
import { RpcError } from "./rpc-error.js";
import { rpcSpan } from "./tracing.js";

type Handler = (req: unknown, ctx: CallContext) => Promise<unknown>;

/**
 * AdmissionService and PolicyService over the Connect protocol (HTTP/1.1 +
 * JSON or binary) for callers without a gRPC client: curl, a Lua plugin, a
 * shell script. The same transport-free handlers as gRPC; gRPC status codes
 * and Connect codes share their numbers. Session needs a bidi stream: gRPC only.
 */
export function connectRoutes(deps: { admission: AdmissionHandlers; policy: PolicyHandlers; limit: InFlightLimit; logger: Logger; tracer?: Tracer }): (req: IncomingMessage, res: ServerResponse) => boolean {
  const { tracer } = deps;
  const wrap = (target: object, service: string, method: string, name: string): ((req: unknown, context: HandlerContext) => Promise<unknown>) => {
    const fn = (target as Record<string, Handler>)[name]!.bind(target);
    return async (req, context) => {
      try {
        const timeoutMs = context.timeoutMs();
        const state = { deadlineMs: timeoutMs === undefined ? Infinity : Date.now() + timeoutMs, cancelled: context.signal.aborted };
        const ctx: CallContext = { header: (h) => context.requestHeader.get(h) ?? undefined };
        const run = () => fn(req, ctx);
        return await deps.limit.run(state, tracer ? () => rpcSpan(tracer, { service, method, system: "connect_rpc", header: ctx.header }, run) : run);
      } catch (err) {
        if (err instanceof RpcError) throw new ConnectError(err.message, err.code as number as Code);
        deps.logger.error({ err, method: name }, "unexpected error in handler");
        throw new ConnectError("internal error", Code.Internal);
      }
    };
  };
  const routes = (router: ConnectRouter) => {
    const admission: Record<string, unknown> = {
      session: () => {
        throw new ConnectError("Session is a bidirectional stream: use gRPC", Code.Unimplemented);
      },
    };
    for (const m of AdmissionService.methods) if (m.localName !== "session") admission[m.localName] = wrap(deps.admission, AdmissionService.typeName, m.name, m.localName);
    const policy: Record<string, unknown> = {};
    for (const m of PolicyService.methods) policy[m.localName] = wrap(deps.policy, PolicyService.typeName, m.name, m.localName);
    router.service(AdmissionService, admission as never);
    router.service(PolicyService, policy as never);
  };
  const prefixes = [`/${AdmissionService.typeName}/`, `/${PolicyService.typeName}/`];
  // JSON must be UTF-8: invalid bytes are an invalid_argument, as they are in binary protobuf, not silently replaced.
  // (connect passes jsonOptions on to its JSON serialization, which takes a textDecoder.)
  // Unknown fields and enum values are refused (proto3 JSON's default; Connect's is to ignore them): an
  // ignored enum value reads as its zero, so a misspelt outcome would settle as SUCCESS and a misspelt
  // status apply as UNSPECIFIED. Binary protobuf keeps an unknown enum number, which the handlers refuse.
  const jsonOptions = { ignoreUnknownFields: false, textDecoder: new TextDecoder("utf-8", { fatal: true }) };
  const handler = connectNodeAdapter({ routes, readMaxBytes: 8 * 1024 * 1024, jsonOptions });
  return (req, res) => {
    if (!prefixes.some((p) => req.url?.startsWith(p))) return false;
    handler(req, res);
    return true;
  };
}
