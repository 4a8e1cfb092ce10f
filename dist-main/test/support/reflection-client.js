import * as grpc from "@grpc/grpc-js";
import { create, createFileRegistry, fromBinary, fromJson, toBinary, toJson } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { grpcServiceDefinition } from "../../control-plane/grpc/service-definition.js";
/**
 * What grpcurl does, with nothing but server reflection: list services, fetch
 * descriptors, and call a method with a JSON body, answering JSON.
 */
export class ReflectionClient {
    address;
    client;
    protos = new Map();
    constructor(address) {
        this.address = address;
        this.client = new grpc.Client(address, grpc.credentials.createInsecure());
    }
    close() {
        this.client.close();
    }
    /** `grpcurl -plaintext host:port list` */
    async list() {
        const [answer] = await this.reflect([{ case: "listServices", value: "*" }]);
        return answer.messageResponse.case === "listServicesResponse" ? answer.messageResponse.value.service.map((s) => s.name) : [];
    }
    /** The registry of the file declaring `symbol` and its imports (as grpcurl builds it). */
    async registry(symbol) {
        const [answer] = await this.reflect([{ case: "fileContainingSymbol", value: symbol }]);
        if (answer.messageResponse.case !== "fileDescriptorResponse")
            throw new Error(`symbol ${symbol} not found`);
        for (const bytes of answer.messageResponse.value.fileDescriptorProto) {
            const proto = fromBinary(FileDescriptorProtoSchema, bytes);
            this.protos.set(proto.name, proto);
        }
        const ordered = [];
        const visit = (name) => {
            const p = this.protos.get(name);
            if (!p || ordered.includes(p))
                return;
            p.dependency.forEach(visit);
            ordered.push(p);
        };
        [...this.protos.keys()].forEach(visit);
        return createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
    }
    /** `grpcurl describe <message>`: the field names a strict client sees. */
    async describeMessage(typeName) {
        const message = (await this.registry(typeName)).getMessage(typeName);
        if (!message)
            throw new Error(`${typeName} not found`);
        return message.fields.map((f) => `${f.name} = ${f.number}`);
    }
    /** `grpcurl -d '<json>' -H 'k: v' host:port service/Method` */
    async call(fullMethod, json, headers = {}) {
        const [serviceName, methodName] = fullMethod.split("/");
        const registry = await this.registry(serviceName);
        const service = registry.getService(serviceName);
        const method = service?.methods.find((m) => m.name === methodName);
        if (!method)
            throw new Error(`${fullMethod} not found`);
        const request = fromJson(method.input, json, { registry });
        const metadata = new grpc.Metadata();
        for (const [k, v] of Object.entries(headers))
            metadata.set(k, v);
        const response = await new Promise((resolve, reject) => {
            this.client.makeUnaryRequest(`/${serviceName}/${methodName}`, (m) => Buffer.from(toBinary(method.input, m)), (b) => fromBinary(method.output, b), request, metadata, (err, res) => (err ? reject(err) : resolve(res)));
        });
        return toJson(method.output, response, { registry });
    }
    reflect(requests) {
        const Client = grpc.makeGenericClientConstructor(grpcServiceDefinition(v1.ServerReflection), "ServerReflection");
        const client = new Client(this.address, grpc.credentials.createInsecure());
        const stream = client.serverReflectionInfo();
        const answers = [];
        return new Promise((resolve, reject) => {
            stream.on("data", (a) => answers.push(a));
            stream.on("end", () => (client.close(), resolve(answers)));
            stream.on("error", (e) => (client.close(), reject(e)));
            for (const messageRequest of requests)
                stream.write(create(v1.ServerReflectionRequestSchema, { messageRequest }));
            stream.end();
        });
    }
}
//# sourceMappingURL=reflection-client.js.map