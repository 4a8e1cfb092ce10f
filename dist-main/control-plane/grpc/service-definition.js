import { statusMessage } from "../rpc-error.js";
import { messageCodec } from "./message-codec.js";
/**
 * Builds a grpc-js service definition from a protobuf-es service descriptor, so
 * the server, the data plane and tests all (de)serialize the generated schemas
 * in gen/ (no proto-loader), with codecs compiled from them (message-codec.ts).
 */
export function grpcServiceDefinition(service, options = {}) {
    const definition = {};
    for (const method of service.methods) {
        const input = messageCodec(method.input);
        const output = messageCodec(method.output);
        definition[method.localName] = {
            path: `/${service.typeName}/${method.name}`,
            requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
            responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
            requestSerialize: input.encode,
            requestDeserialize: options.tolerateMalformedRequests ? tolerant(input.decode) : input.decode,
            responseSerialize: output.encode,
            responseDeserialize: output.decode,
            originalName: method.name,
        };
    }
    return definition;
}
/**
 * A request that did not decode (not protobuf, invalid UTF-8 in a string...).
 * Servers get it as the request instead of grpc-js answering INTERNAL by
 * itself, so they answer INVALID_ARGUMENT, and a Session stream can end
 * cleanly after answering the calls before it.
 */
export class MalformedRequest {
    reason;
    constructor(reason) {
        this.reason = reason;
    }
    get message() {
        return statusMessage(`malformed request: ${this.reason}`);
    }
}
function tolerant(deserialize) {
    return (bytes) => {
        try {
            return deserialize(bytes);
        }
        catch (err) {
            return new MalformedRequest(err instanceof Error ? err.message.slice(0, 200) : "cannot decode");
        }
    };
}
//# sourceMappingURL=service-definition.js.map