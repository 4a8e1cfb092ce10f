import * as grpc from "@grpc/grpc-js";
import { create, createFileRegistry, fromBinary, fromJson, toBinary, toJson, type FileRegistry, type JsonValue } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema, type FileDescriptorProto } from "@bufbuild/protobuf/wkt";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import { grpcServiceDefinition } from "../../control-plane/grpc/service-definition.js";

/**
 * What grpcurl does, with nothing but server reflection: list services, fetch
 * descriptors, and call a method with a JSON body, answering JSON.
 */
export class ReflectionClient {
  private readonly client: grpc.Client;
  private readonly protos = new Map<string, FileDescriptorProto>();

  constructor(private readonly address: string) {
    this.client = new grpc.Client(address, grpc.credentials.createInsecure());
  }

  close(): void {
    this.client.close();
  }

  /** `grpcurl -plaintext host:port list` */
  async list(): Promise<string[]> {
    const [answer] = await this.reflect([{ case: "listServices", value: "*" }]);
    return answer!.messageResponse.case === "listServicesResponse" ? answer!.messageResponse.value.service.map((s) => s.name) : [];
  }

  /** The registry of the file declaring `symbol` and its imports (as grpcurl builds it). */
  async registry(symbol: string): Promise<FileRegistry> {
    const [answer] = await this.reflect([{ case: "fileContainingSymbol", value: symbol }]);
    if (answer!.messageResponse.case !== "fileDescriptorResponse") throw new Error(`symbol ${symbol} not found`);
    for (const bytes of answer!.messageResponse.value.fileDescriptorProto) {
      const proto = fromBinary(FileDescriptorProtoSchema, bytes);
      this.protos.set(proto.name, proto);
    }
    const ordered: FileDescriptorProto[] = [];
    const visit = (name: string) => {
      const p = this.protos.get(name);
      if (!p || ordered.includes(p)) return;
      p.dependency.forEach(visit);
      ordered.push(p);
    };
    [...this.protos.keys()].forEach(visit);
    return createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
  }

  /** `grpcurl describe <message>`: the field names a strict client sees. */
  async describeMessage(typeName: string): Promise<string[]> {
    const message = (await this.registry(typeName)).getMessage(typeName);
    if (!message) throw new Error(`${typeName} not found`);
    return message.fields.map((f) => `${f.name} = ${f.number}`);
  }

  /** `grpcurl -d '<json>' -H 'k: v' host:port service/Method` */
  async call(fullMethod: string, json: unknown, headers: Record<string, string> = {}): Promise<any> {
    const [serviceName, methodName] = fullMethod.split("/") as [string, string];
    const registry = await this.registry(serviceName);
    const service = registry.getService(serviceName);
    const method = service?.methods.find((m) => m.name === methodName);
    if (!method) throw new Error(`${fullMethod} not found`);
    const request = fromJson(method.input, json as JsonValue, { registry });
    const metadata = new grpc.Metadata();
    for (const [k, v] of Object.entries(headers)) metadata.set(k, v);
    const response = await new Promise<unknown>((resolve, reject) => {
      this.client.makeUnaryRequest(`/${serviceName}/${methodName}`, (m: typeof request) => Buffer.from(toBinary(method.input, m)), (b: Buffer) => fromBinary(method.output, b), request, metadata, (err, res) => (err ? reject(err) : resolve(res)));
    });
    return toJson(method.output, response as never, { registry });
  }

  private reflect(requests: Array<v1.ServerReflectionRequest["messageRequest"]>): Promise<v1.ServerReflectionResponse[]> {
    const Client = grpc.makeGenericClientConstructor(grpcServiceDefinition(v1.ServerReflection), "ServerReflection");
    const client = new Client(this.address, grpc.credentials.createInsecure()) as unknown as grpc.Client & { serverReflectionInfo(): grpc.ClientDuplexStream<unknown, v1.ServerReflectionResponse> };
    const stream = client.serverReflectionInfo();
    const answers: v1.ServerReflectionResponse[] = [];
    return new Promise((resolve, reject) => {
      stream.on("data", (a) => answers.push(a));
      stream.on("end", () => (client.close(), resolve(answers)));
      stream.on("error", (e) => (client.close(), reject(e)));
      for (const messageRequest of requests) stream.write(create(v1.ServerReflectionRequestSchema, { messageRequest }));
      stream.end();
    });
  }
}
