import * as grpc from "@grpc/grpc-js";
import { create } from "@bufbuild/protobuf";
import { AdmissionService } from "../../gen/admission/v1/admission_pb.js";
import { PolicyService } from "../../gen/admission/v1/policy_service_pb.js";
import { grpcServiceDefinition } from "../../control-plane/grpc/service-definition.js";
/** A promise-based unary client over grpc-js, typed by the generated service descriptor. */
export function unaryClient(service, address) {
    const Ctor = grpc.makeGenericClientConstructor(grpcServiceDefinition(service), service.name);
    const raw = new Ctor(address, grpc.credentials.createInsecure());
    const caller = { raw, close: () => raw.close() };
    for (const method of service.methods) {
        if (method.methodKind !== "unary")
            continue;
        caller[method.localName] = (req, metadata = {}) => new Promise((resolve, reject) => {
            const md = new grpc.Metadata();
            for (const [k, v] of Object.entries(metadata))
                md.set(k, v);
            raw[method.localName].call(raw, create(method.input, req), md, (err, res) => err ? reject(err) : resolve(res));
        });
    }
    return caller;
}
export const admissionClient = (address) => unaryClient(AdmissionService, address);
export const policyClient = (address) => unaryClient(PolicyService, address);
/** Rejects with the gRPC status code of a failed call. */
export async function grpcCode(promise) {
    try {
        await promise;
        return "OK";
    }
    catch (err) {
        return err.code;
    }
}
//# sourceMappingURL=grpc-clients.js.map