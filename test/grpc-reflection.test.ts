import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import * as grpc from "@grpc/grpc-js";
import { create, createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { Health, HealthCheckResponse_ServingStatus } from "../gen/grpc/health/v1/health_pb.js";
import { grpcServiceDefinition } from "../control-plane/grpc/service-definition.js";
import { unaryClient, grpcCode } from "./support/grpc-clients.js";
import { startTestControlPlane, type TestControlPlane } from "./support/control-plane.js";

/** Sends reflection requests on one stream, the way grpcurl does, and collects the answers. */
async function reflect(address: string, mod: typeof v1 | typeof v1alpha, requests: Array<v1.ServerReflectionRequest["messageRequest"]>): Promise<v1.ServerReflectionResponse[]> {
  const Client = grpc.makeGenericClientConstructor(grpcServiceDefinition(mod.ServerReflection), "ServerReflection");
  const client = new Client(address, grpc.credentials.createInsecure()) as unknown as { serverReflectionInfo(): grpc.ClientDuplexStream<unknown, v1.ServerReflectionResponse>; close(): void };
  const stream = client.serverReflectionInfo();
  const answers: v1.ServerReflectionResponse[] = [];
  const done = new Promise<void>((resolve, reject) => {
    stream.on("data", (a) => answers.push(a));
    stream.on("end", resolve);
    stream.on("error", reject);
  });
  for (const messageRequest of requests) stream.write(create(mod.ServerReflectionRequestSchema as typeof v1.ServerReflectionRequestSchema, { messageRequest }));
  stream.end();
  await done;
  (client as unknown as grpc.Client).close();
  return answers;
}

describe("reflection and health", () => {
  let t: TestControlPlane;
  before(async () => (t = await startTestControlPlane()));
  after(() => t.close());

  for (const [name, mod] of [["v1", v1], ["v1alpha", v1alpha]] as const) {
    test(`${name}: list services and resolve a method the way grpcurl does`, async () => {
      const [list, method, message, enumValue, unknown] = await reflect(t.address, mod, [
        { case: "listServices", value: "*" },
        { case: "fileContainingSymbol", value: "admission.v1.AdmissionService.Admit" },
        { case: "fileContainingSymbol", value: "admission.v1.Bundle" },
        { case: "fileContainingSymbol", value: "admission.v1.LIMIT_KIND_TOKENS" },
        { case: "fileContainingSymbol", value: "admission.v1.Nope" },
      ]);
      assert.equal(list!.messageResponse.case, "listServicesResponse");
      const names = list!.messageResponse.case === "listServicesResponse" ? list!.messageResponse.value.service.map((s) => s.name) : [];
      for (const s of ["admission.v1.AdmissionService", "admission.v1.PolicyService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"]) {
        assert.ok(names.includes(s), `${s} listed`);
      }

      assert.equal(method!.messageResponse.case, "fileDescriptorResponse");
      const protos = method!.messageResponse.case === "fileDescriptorResponse" ? method!.messageResponse.value.fileDescriptorProto.map((b) => fromBinary(FileDescriptorProtoSchema, b)) : [];
      const fileNames = protos.map((p) => p.name);
      assert.ok(fileNames.includes("admission/v1/admission.proto"));
      assert.ok(fileNames.includes("admission/v1/policy.proto"), "imports come along");
      assert.ok(fileNames.includes("google/protobuf/timestamp.proto"), "well-known imports come along");
      // The server sends the requested file first, then its imports (as grpc-go does); a registry wants imports first.
      const ordered: typeof protos = [];
      const visit = (name: string) => {
        const p = protos.find((x) => x.name === name)!;
        if (ordered.includes(p)) return;
        p.dependency.forEach(visit);
        ordered.push(p);
      };
      protos.forEach((p) => visit(p.name));
      const registry = createFileRegistry(create(FileDescriptorSetSchema, { file: ordered }));
      const service = registry.getService("admission.v1.AdmissionService")!;
      const admit = service.methods.find((m) => m.name === "Admit")!;
      const inputTokens = admit.input.fields.find((f) => f.name === "input_tokens")!;
      assert.equal(inputTokens.number, 5, "original snake_case field names and numbers");
      const raw = protos.find((p) => p.name === "admission/v1/admission.proto")!;
      const attributes = raw.messageType.find((m) => m.name === "AdmitRequest")!.field.find((f) => f.name === "attributes")!;
      assert.equal(attributes.typeName, ".admission.v1.AdmitRequest.AttributesEntry", "fully-qualified map entry type");
      assert.equal(service.methods.find((m) => m.name === "Session")!.methodKind, "bidi_streaming");

      for (const answer of [message, enumValue]) assert.equal(answer!.messageResponse.case, "fileDescriptorResponse");
      assert.equal(unknown!.messageResponse.case, "errorResponse");
      assert.equal(unknown!.messageResponse.case === "errorResponse" && unknown!.messageResponse.value.errorCode, grpc.status.NOT_FOUND);
    });
  }

  test("health: SERVING for the server and its services, NOT_FOUND for others", async () => {
    const health = unaryClient(Health, t.address);
    assert.equal((await health.check({ service: "" })).status, HealthCheckResponse_ServingStatus.SERVING);
    assert.equal((await health.check({ service: "admission.v1.AdmissionService" })).status, HealthCheckResponse_ServingStatus.SERVING);
    assert.equal(await grpcCode(health.check({ service: "nope" })), grpc.status.NOT_FOUND);
    health.close();
  });
});
