import { create, toBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { file_grpc_health_v1_health } from "../../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { grpcServiceDefinition } from "./service-definition.js";
/**
 * The descriptors `buf generate` embedded in gen/, by file name and by
 * symbol. They are the compiler's own FileDescriptorProtos (snake_case field
 * names, fully-qualified type names, map entry types), unlike proto-loader's.
 */
export class DescriptorIndex {
    /** Full names of the services declared in the root files, in order. */
    services;
    files = new Map();
    encoded = new Map();
    symbols = new Map();
    messages = new Set();
    constructor(roots) {
        for (const file of roots)
            this.add(file);
        this.services = [...new Set(roots.flatMap((file) => file.services.map((s) => s.typeName)))];
    }
    /** The serialized file first, then its transitive imports (the order grpc-go uses and older grpcurl relies on). */
    fileWithImports(fileName) {
        const root = this.files.get(fileName);
        if (!root)
            return undefined;
        const seen = new Set();
        const out = [];
        const visit = (file) => {
            if (seen.has(file))
                return;
            seen.add(file);
            out.push(this.encoded.get(file));
            file.dependencies.forEach(visit);
        };
        visit(root);
        return out;
    }
    /** The name of the file declaring a fully-qualified symbol (a leading dot is allowed). */
    fileOfSymbol(symbol) {
        return this.symbols.get(symbol.replace(/^\./, ""))?.proto.name;
    }
    isMessage(typeName) {
        return this.messages.has(typeName.replace(/^\./, ""));
    }
    add(file) {
        // DescFile.name lacks the ".proto" suffix; reflection speaks in proto file names.
        if (this.files.has(file.proto.name))
            return;
        this.files.set(file.proto.name, file);
        this.encoded.set(file, toBinary(FileDescriptorProtoSchema, file.proto));
        file.dependencies.forEach((dep) => this.add(dep));
        // Walk the served FileDescriptorProto itself: it also has the map entry types DescMessage hides.
        const define = (name) => this.symbols.set(name, file);
        const pkg = file.proto.package;
        const join = (scope, name) => (scope ? `${scope}.${name}` : name);
        const addEnum = (e, scope) => {
            define(join(scope, e.name));
            // Enum values are siblings of their enum: admission.v1.LIMIT_KIND_TOKENS.
            for (const value of e.value)
                define(join(scope, value.name));
        };
        const addMessage = (m, scope) => {
            const name = join(scope, m.name);
            define(name);
            this.messages.add(name);
            for (const member of [...m.field, ...m.oneofDecl, ...m.extension])
                define(join(name, member.name));
            for (const nested of m.nestedType)
                addMessage(nested, name);
            for (const e of m.enumType)
                addEnum(e, name);
        };
        for (const service of file.proto.service) {
            const name = join(pkg, service.name);
            define(name);
            for (const method of service.method)
                define(join(name, method.name));
        }
        for (const m of file.proto.messageType)
            addMessage(m, pkg);
        for (const e of file.proto.enumType)
            addEnum(e, pkg);
        for (const x of file.proto.extension)
            define(join(pkg, x.name));
    }
}
/**
 * Serves grpc.reflection.v1 and v1alpha ServerReflectionInfo for the given
 * files (their imports come along), listing their services plus
 * grpc.health.v1.Health and reflection itself, so grpcurl can list, describe
 * and call with no proto files at hand. Failed lookups are answered with an
 * error_response on the stream, which stays open.
 */
export function addReflection(server, serviceFiles) {
    const index = new DescriptorIndex([
        ...serviceFiles,
        file_grpc_health_v1_health,
        v1.file_grpc_reflection_v1_reflection,
        v1alpha.file_grpc_reflection_v1alpha_reflection,
    ]);
    for (const version of [v1, v1alpha]) {
        // v1alpha is wire- and shape-identical to v1; only the type names differ.
        const responseSchema = version.ServerReflectionResponseSchema;
        const serverReflectionInfo = (call) => {
            call.on("data", (request) => {
                if (call.cancelled)
                    return;
                call.write(create(responseSchema, { validHost: request.host, originalRequest: request, messageResponse: answer(index, request) }));
            });
            call.on("end", () => call.end());
            call.on("error", () => undefined);
        };
        server.addService(grpcServiceDefinition(version.ServerReflection), { serverReflectionInfo });
    }
    return index;
}
function answer(index, request) {
    const error = (code, message) => ({ case: "errorResponse", value: { errorCode: code, errorMessage: message } });
    const files = (fileName, what) => {
        const encoded = fileName === undefined ? undefined : index.fileWithImports(fileName);
        return encoded ? { case: "fileDescriptorResponse", value: { fileDescriptorProto: encoded } } : error(grpc.status.NOT_FOUND, `${what} not found`);
    };
    const r = request.messageRequest;
    switch (r.case) {
        case "listServices":
            return { case: "listServicesResponse", value: { service: index.services.map((name) => ({ name })) } };
        case "fileByFilename":
            return files(r.value, `file "${r.value}"`);
        case "fileContainingSymbol":
            return files(index.fileOfSymbol(r.value), `symbol "${r.value}"`);
        case "fileContainingExtension":
            return error(grpc.status.NOT_FOUND, `no extension ${r.value.extensionNumber} of "${r.value.containingType}" is registered`);
        case "allExtensionNumbersOfType":
            return index.isMessage(r.value)
                ? { case: "allExtensionNumbersResponse", value: { baseTypeName: r.value.replace(/^\./, ""), extensionNumber: [] } }
                : error(grpc.status.NOT_FOUND, `message type "${r.value}" not found`);
        default:
            return error(grpc.status.INVALID_ARGUMENT, "the reflection request names no lookup");
    }
}
//# sourceMappingURL=reflection.js.map