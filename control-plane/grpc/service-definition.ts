import type { DescMessage, DescService, MessageShape } from "@bufbuild/protobuf";
import { fromBinary, toBinary } from "@bufbuild/protobuf";
import type { MethodDefinition, ServiceDefinition } from "@grpc/grpc-js";
import { statusMessage } from "../rpc-error.js";

/**
 * Builds a grpc-js service definition from a protobuf-es service descriptor, so
 * the server, the data plane and tests all (de)serialize with the generated
 * schemas in gen/ (no proto-loader, no hand-written codecs).
 */
export function grpcServiceDefinition(service: DescService, options: { tolerateMalformedRequests?: boolean } = {}): ServiceDefinition {
  const definition: Record<string, MethodDefinition<unknown, unknown>> = {};
  for (const method of service.methods) {
    const requestDeserialize = deserializer(method.input);
    definition[method.localName] = {
      path: `/${service.typeName}/${method.name}`,
      requestStream: method.methodKind === "client_streaming" || method.methodKind === "bidi_streaming",
      responseStream: method.methodKind === "server_streaming" || method.methodKind === "bidi_streaming",
      requestSerialize: serializer(method.input) as (value: unknown) => Buffer,
      requestDeserialize: options.tolerateMalformedRequests ? tolerant(requestDeserialize) : requestDeserialize,
      responseSerialize: serializer(method.output) as (value: unknown) => Buffer,
      responseDeserialize: deserializer(method.output),
      originalName: method.name,
    };
  }
  return definition as ServiceDefinition;
}

function serializer<D extends DescMessage>(schema: D): (message: MessageShape<D>) => Buffer {
  return (message) => {
    const bytes = toBinary(schema, message);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  };
}

function deserializer<D extends DescMessage>(schema: D): (bytes: Buffer) => MessageShape<D> {
  return (bytes) => fromBinary(schema, bytes);
}

/**
 * A request that did not decode (not protobuf, invalid UTF-8 in a string...).
 * Servers get it as the request instead of grpc-js answering INTERNAL by
 * itself, so they answer INVALID_ARGUMENT, and a Session stream can end
 * cleanly after answering the calls before it.
 */
export class MalformedRequest {
  constructor(readonly reason: string) {}

  get message(): string {
    return statusMessage(`malformed request: ${this.reason}`);
  }
}

function tolerant(deserialize: (bytes: Buffer) => unknown): (bytes: Buffer) => unknown {
  return (bytes) => {
    try {
      return deserialize(bytes);
    } catch (err) {
      return new MalformedRequest(err instanceof Error ? err.message.slice(0, 200) : "cannot decode");
    }
  };
}
