import type { DescFile } from "@bufbuild/protobuf";
import { create, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { file_grpc_health_v1_health } from "../../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { grpcServiceDefinition } from "./service-definition.js";

/**
 * Indexes the descriptors that `buf generate` embedded in gen/ (full fidelity:
 * snake_case field names, fully-qualified type names, map entry types) by file
 * name and by symbol, with each file's transitive imports.
 */
export class DescriptorIndex {
  readonly services: string[] = [];
  private readonly files = new Map<string, DescFile>();
  private readonly symbols = new Map<string, DescFile>();
  private readonly encoded = new Map<string, Uint8Array>();

  constructor(roots: readonly DescFile[]) {
    for (const file of roots) this.add(file);
    for (const file of roots) for (const s of file.services) this.services.push(s.typeName);
  }

  private add(file: DescFile): void {
    if (this.files.has(file.name)) return;
    this.files.set(file.name, file);
    this.encoded.set(file.name, toBinary(FileDescriptorProtoSchema, file.proto));
    for (const dep of file.dependencies) this.add(dep);
    const pkg = file.proto.package ? `${file.proto.package}.` : "";
    for (const service of file.services) {
      this.symbols.set(service.typeName, file);
      for (const m of service.methods) this.symbols.set(`${service.typeName}.${m.name}`, file);
    }
    const addEnum = (e: DescFile["enums"][number], scope: string) => {
      this.symbols.set(e.typeName, file);
      // Enum values are siblings of their enum in proto scoping.
      for (const v of e.values) {
        this.symbols.set(`${scope}${v.name}`, file);
        this.symbols.set(`${e.typeName}.${v.name}`, file);
      }
    };
    const addMessage = (m: DescFile["messages"][number]) => {
      this.symbols.set(m.typeName, file);
      for (const f of m.fields) this.symbols.set(`${m.typeName}.${f.name}`, file);
      for (const o of m.oneofs) this.symbols.set(`${m.typeName}.${o.name}`, file);
      for (const n of m.nestedMessages) addMessage(n);
      for (const e of m.nestedEnums) addEnum(e, `${m.typeName}.`);
    };
    for (const m of file.messages) addMessage(m);
    for (const e of file.enums) addEnum(e, pkg);
  }

  /** The file and its transitive dependencies, serialized. */
  fileWithDependencies(name: string): Uint8Array[] | undefined {
    const root = this.files.get(name);
    if (!root) return undefined;
    const out: Uint8Array[] = [];
    const seen = new Set<string>();
    const visit = (file: DescFile) => {
      if (seen.has(file.name)) return;
      seen.add(file.name);
      out.push(this.encoded.get(file.name)!);
      for (const dep of file.dependencies) visit(dep);
    };
    visit(root);
    return out;
  }

  fileOfSymbol(symbol: string): string | undefined {
    return this.symbols.get(symbol.replace(/^\./, ""))?.name;
  }

  knownMessage(typeName: string): boolean {
    const file = this.symbols.get(typeName);
    return !!file && file.messages.some(function has(m): boolean {
      return m.typeName === typeName || m.nestedMessages.some(has);
    });
  }
}

type ReflectionModule = typeof v1 | typeof v1alpha;
type ReflectionRequest = v1.ServerReflectionRequest | v1alpha.ServerReflectionRequest;

/**
 * Serves grpc.reflection.v1 and v1alpha for the given service files (plus the
 * health and reflection services themselves), so grpcurl can list, describe
 * and call with no proto files at hand.
 */
export function addReflection(server: grpc.Server, serviceFiles: readonly DescFile[]): DescriptorIndex {
  const index = new DescriptorIndex([...serviceFiles, file_grpc_health_v1_health, v1.file_grpc_reflection_v1_reflection, v1alpha.file_grpc_reflection_v1alpha_reflection]);
  for (const mod of [v1, v1alpha] as const) {
    server.addService(grpcServiceDefinition(mod.ServerReflection), {
      serverReflectionInfo: (call: grpc.ServerDuplexStream<ReflectionRequest, unknown>) => {
        call.on("data", (request: ReflectionRequest) => {
          if (!call.cancelled) call.write(answer(mod, index, request));
        });
        call.on("end", () => call.end());
        call.on("error", () => undefined);
      },
    } as grpc.UntypedServiceImplementation);
  }
  return index;
}

function answer(mod: ReflectionModule, index: DescriptorIndex, request: ReflectionRequest): unknown {
  const respond = (messageResponse: unknown) =>
    create(mod.ServerReflectionResponseSchema as typeof v1.ServerReflectionResponseSchema, {
      validHost: request.host,
      originalRequest: request as v1.ServerReflectionRequest,
      messageResponse: messageResponse as v1.ServerReflectionResponse["messageResponse"],
    });
  const error = (code: grpc.status, message: string) => respond({ case: "errorResponse", value: { errorCode: code, errorMessage: message } });
  const files = (name: string | undefined, what: string) => {
    const encoded = name ? index.fileWithDependencies(name) : undefined;
    return encoded ? respond({ case: "fileDescriptorResponse", value: { fileDescriptorProto: encoded } }) : error(grpc.status.NOT_FOUND, `${what} not found`);
  };
  const r = request.messageRequest;
  switch (r.case) {
    case "listServices":
      return respond({ case: "listServicesResponse", value: { service: index.services.map((name) => ({ name })) } });
    case "fileByFilename":
      return files(r.value, `file "${r.value}"`);
    case "fileContainingSymbol":
      return files(index.fileOfSymbol(r.value), `symbol "${r.value}"`);
    case "fileContainingExtension":
      return error(grpc.status.NOT_FOUND, "no extensions are registered");
    case "allExtensionNumbersOfType":
      return index.knownMessage(r.value)
        ? respond({ case: "allExtensionNumbersResponse", value: { baseTypeName: r.value, extensionNumber: [] } })
        : error(grpc.status.NOT_FOUND, `type "${r.value}" not found`);
    default:
      return error(grpc.status.INVALID_ARGUMENT, "empty reflection request");
  }
}
