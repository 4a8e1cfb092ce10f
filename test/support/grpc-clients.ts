import * as grpc from "@grpc/grpc-js";
import type { DescService, MessageInitShape, MessageShape } from "@bufbuild/protobuf";
import { create } from "@bufbuild/protobuf";
import { AdmissionService } from "../../gen/admission/v1/admission_pb.js";
import { PolicyService } from "../../gen/admission/v1/policy_service_pb.js";
import { grpcServiceDefinition } from "../../control-plane/grpc/service-definition.js";

type Methods<S extends DescService> = S["method"];
type UnaryCaller<S extends DescService> = {
  [K in keyof Methods<S>]: Methods<S>[K] extends { methodKind: "unary"; input: infer I; output: infer O }
    ? I extends import("@bufbuild/protobuf").DescMessage
      ? O extends import("@bufbuild/protobuf").DescMessage
        ? (req: MessageInitShape<I>, metadata?: Record<string, string>) => Promise<MessageShape<O>>
        : never
      : never
    : never;
};

/** A promise-based unary client over grpc-js, typed by the generated service descriptor (plaintext unless given credentials). */
export function unaryClient<S extends DescService>(service: S, address: string, credentials = grpc.credentials.createInsecure()): UnaryCaller<S> & { raw: grpc.Client; close(): void } {
  const Ctor = grpc.makeGenericClientConstructor(grpcServiceDefinition(service), service.name);
  const raw = new Ctor(address, credentials);
  const caller: Record<string, unknown> = { raw, close: () => raw.close() };
  for (const method of service.methods) {
    if (method.methodKind !== "unary") continue;
    caller[method.localName] = (req: never, metadata: Record<string, string> = {}) =>
      new Promise((resolve, reject) => {
        const md = new grpc.Metadata();
        for (const [k, v] of Object.entries(metadata)) md.set(k, v);
        (raw as unknown as Record<string, Function>)[method.localName]!.call(raw, create(method.input, req), md, (err: grpc.ServiceError | null, res: unknown) =>
          err ? reject(err) : resolve(res),
        );
      });
  }
  return caller as UnaryCaller<S> & { raw: grpc.Client; close(): void };
}

export const admissionClient = (address: string, credentials?: grpc.ChannelCredentials) => unaryClient(AdmissionService, address, credentials);
export const policyClient = (address: string, credentials?: grpc.ChannelCredentials) => unaryClient(PolicyService, address, credentials);

/** Rejects with the gRPC status code of a failed call. */
export async function grpcCode(promise: Promise<unknown>): Promise<grpc.status | "OK"> {
  try {
    await promise;
    return "OK";
  } catch (err) {
    return (err as grpc.ServiceError).code;
  }
}
