import assert from "node:assert/strict";
import { after, test } from "node:test";
import { create, createFileRegistry, fromBinary } from "@bufbuild/protobuf";
import { FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import * as grpc from "@grpc/grpc-js";
import { AdmissionService, file_admission_v1_admission } from "../gen/admission/v1/admission_pb.js";
import { PolicyService, file_admission_v1_policy_service } from "../gen/admission/v1/policy_service_pb.js";
import { Health, HealthCheckRequestSchema, HealthListRequestSchema } from "../gen/grpc/health/v1/health_pb.js";
import * as v1 from "../gen/grpc/reflection/v1/reflection_pb.js";
import * as v1alpha from "../gen/grpc/reflection/v1alpha/reflection_pb.js";
import { addHealthService, ServingStatus } from "../control-plane/grpc/health.js";
import { addReflection } from "../control-plane/grpc/reflection.js";
import { grpcServiceDefinition } from "../control-plane/grpc/service-definition.js";
/** Handlers that answer UNIMPLEMENTED: this file is about reflection and health, not admission. */
function unimplemented(service) {
    const error = { code: grpc.status.UNIMPLEMENTED, details: "not implemented in this test" };
    const impl = {};
    for (const method of service.methods) {
        impl[method.localName] =
            method.methodKind === "unary" || method.methodKind === "client_streaming"
                ? (_call, callback) => callback(error)
                : (call) => call.emit("error", error);
    }
    return impl;
}
const server = new grpc.Server();
server.addService(grpcServiceDefinition(AdmissionService), unimplemented(AdmissionService));
server.addService(grpcServiceDefinition(PolicyService), unimplemented(PolicyService));
const health = addHealthService(server, [AdmissionService.typeName, PolicyService.typeName]);
addReflection(server, [file_admission_v1_admission, file_admission_v1_policy_service]);
const port = await new Promise((resolve, reject) => server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
const address = `127.0.0.1:${port}`;
after(() => server.forceShutdown());
function client(service) {
    const Client = grpc.makeGenericClientConstructor(grpcServiceDefinition(service), service.name);
    return new Client(address, grpc.credentials.createInsecure());
}
/** Sends lookups on one ServerReflectionInfo stream, as grpcurl does, and collects the answers. */
async function reflect(version, lookups) {
    const c = client(version.ServerReflection);
    const stream = c.serverReflectionInfo();
    const answers = [];
    const done = new Promise((resolve, reject) => {
        stream.on("data", (answer) => answers.push(answer));
        stream.on("end", resolve);
        stream.on("error", reject);
    });
    const requestSchema = version.ServerReflectionRequestSchema;
    for (const messageRequest of lookups)
        stream.write(create(requestSchema, { host: "localhost", messageRequest }));
    stream.end();
    await done;
    c.close();
    assert.equal(answers.length, lookups.length, "one answer per request, the stream never fails");
    for (const [i, answer] of answers.entries()) {
        assert.equal(answer.$typeName, `${version.ServerReflectionResponseSchema.typeName}`);
        assert.equal(answer.originalRequest?.messageRequest.case, lookups[i].case, "answers come in request order");
    }
    return answers.map((a) => a.messageResponse);
}
function descriptors(answer) {
    assert.equal(answer?.case, "fileDescriptorResponse", JSON.stringify(answer));
    return answer.value.fileDescriptorProto.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
}
function errorCode(answer) {
    return answer?.case === "errorResponse" ? answer.value.errorCode : undefined;
}
for (const [name, version] of [["v1", v1], ["v1alpha", v1alpha]]) {
    test(`${name}: list_services names every service on the server`, async () => {
        const [list] = await reflect(version, [{ case: "listServices", value: "" }]);
        assert.equal(list?.case, "listServicesResponse");
        assert.deepEqual(list.value.service.map((s) => s.name).sort(), [
            "admission.v1.AdmissionService",
            "admission.v1.PolicyService",
            "grpc.health.v1.Health",
            "grpc.reflection.v1.ServerReflection",
            "grpc.reflection.v1alpha.ServerReflection",
        ]);
    });
    test(`${name}: a method resolves to its file and imports, with the compiler's own descriptors`, async () => {
        const [admit] = await reflect(version, [{ case: "fileContainingSymbol", value: "admission.v1.AdmissionService.Admit" }]);
        const protos = descriptors(admit);
        assert.equal(protos[0].name, "admission/v1/admission.proto", "the requested file comes first");
        assert.deepEqual(protos.map((p) => p.name).sort(), ["admission/v1/admission.proto", "admission/v1/policy.proto", "google/protobuf/timestamp.proto"]);
        // What grpcurl does next: a registry from the answer, imports resolved by name.
        const registry = createFileRegistry(protos[0], (file) => protos.find((p) => p.name === file));
        const method = registry.getService("admission.v1.AdmissionService").methods.find((m) => m.name === "Admit");
        assert.equal(method.input.typeName, "admission.v1.AdmitRequest");
        const inputTokens = method.input.fields.find((f) => f.name === "input_tokens");
        assert.equal(inputTokens?.number, 5, "snake_case field name and number as written in the proto");
        assert.equal(registry.getMessage("admission.v1.AdmitResponse").field.meters.message.typeName, "admission.v1.Meter");
        assert.equal(registry.getService("admission.v1.AdmissionService").method.session.methodKind, "bidi_streaming");
        const admitRequest = protos[0].messageType.find((m) => m.name === "AdmitRequest");
        const attributes = admitRequest.field.find((f) => f.name === "attributes");
        assert.equal(attributes.typeName, ".admission.v1.AdmitRequest.AttributesEntry", "fully-qualified map entry type");
        assert.equal(admitRequest.nestedType.find((n) => n.name === "AttributesEntry")?.options?.mapEntry, true);
        const meters = protos[0].messageType.find((m) => m.name === "AdmitResponse").field.find((f) => f.name === "meters");
        assert.equal(meters.typeName, ".admission.v1.Meter");
        assert.equal(meters.jsonName, "meters");
        assert.deepEqual(protos[0].dependency, ["admission/v1/policy.proto", "google/protobuf/timestamp.proto"]);
    });
    test(`${name}: messages, nested messages, enums, enum values, fields and files resolve; misses are error responses`, async () => {
        const answers = await reflect(version, [
            { case: "fileContainingSymbol", value: "admission.v1.Meter" },
            { case: "fileContainingSymbol", value: "admission.v1.AdmitRequest.AttributesEntry" },
            { case: "fileContainingSymbol", value: "admission.v1.DenyReason" },
            { case: "fileContainingSymbol", value: "admission.v1.LIMIT_KIND_TOKENS" },
            { case: "fileContainingSymbol", value: "admission.v1.AdmitRequest.input_tokens" },
            { case: "fileContainingSymbol", value: ".admission.v1.PolicyService" },
            { case: "fileContainingSymbol", value: "admission.v1.Nope" },
            { case: "fileContainingSymbol", value: "google.protobuf.Timestamp" },
            { case: "fileByFilename", value: "admission/v1/policy.proto" },
            { case: "fileByFilename", value: "nope.proto" },
            { case: "fileContainingExtension", value: { containingType: "admission.v1.Meter", extensionNumber: 100 } },
            { case: "allExtensionNumbersOfType", value: "admission.v1.Meter" },
            { case: "allExtensionNumbersOfType", value: "admission.v1.Nope" },
        ]);
        const firstFile = (i) => descriptors(answers[i])[0].name;
        assert.equal(firstFile(0), "admission/v1/admission.proto");
        assert.equal(firstFile(1), "admission/v1/admission.proto");
        assert.equal(firstFile(2), "admission/v1/admission.proto");
        assert.equal(firstFile(3), "admission/v1/policy.proto", "enum values are scoped like their enum's siblings");
        assert.equal(firstFile(4), "admission/v1/admission.proto");
        assert.equal(firstFile(5), "admission/v1/policy_service.proto");
        assert.equal(errorCode(answers[6]), grpc.status.NOT_FOUND);
        assert.equal(firstFile(7), "google/protobuf/timestamp.proto");
        assert.deepEqual(descriptors(answers[8]).map((p) => p.name), ["admission/v1/policy.proto", "google/protobuf/timestamp.proto"]);
        assert.equal(errorCode(answers[9]), grpc.status.NOT_FOUND);
        assert.equal(errorCode(answers[10]), grpc.status.NOT_FOUND);
        assert.deepEqual(answers[11], {
            case: "allExtensionNumbersResponse",
            value: create(version.ExtensionNumberResponseSchema, { baseTypeName: "admission.v1.Meter" }),
        });
        assert.equal(errorCode(answers[12]), grpc.status.NOT_FOUND);
    });
}
test("the registered services answer UNIMPLEMENTED (the handlers are stand-ins)", async () => {
    const admission = client(AdmissionService);
    const err = await new Promise((resolve) => admission.admit(create(AdmissionService.method.admit.input), (e) => resolve(e)));
    admission.close();
    assert.equal(err?.code, grpc.status.UNIMPLEMENTED);
});
function unary(c, method, request) {
    return new Promise((resolve, reject) => c[method](request, (err, res) => (err ? reject(err) : resolve(res))));
}
test("health: Check answers SERVING for the server and its services, NOT_FOUND for others; List shows them all", async () => {
    const c = client(Health);
    const check = (service) => unary(c, "check", create(HealthCheckRequestSchema, { service }));
    assert.equal((await check("")).status, ServingStatus.SERVING);
    assert.equal((await check("admission.v1.AdmissionService")).status, ServingStatus.SERVING);
    await assert.rejects(check("nope"), (err) => err.code === grpc.status.NOT_FOUND);
    const list = await unary(c, "list", create(HealthListRequestSchema));
    assert.deepEqual(Object.fromEntries(Object.entries(list.statuses).map(([s, r]) => [s, r.status])), {
        "": ServingStatus.SERVING,
        "admission.v1.AdmissionService": ServingStatus.SERVING,
        "admission.v1.PolicyService": ServingStatus.SERVING,
    });
    c.close();
});
/** A Watch stream and a way to await its next status. */
function watch(service) {
    const c = client(Health);
    const stream = c.watch(create(HealthCheckRequestSchema, { service }), { deadline: Date.now() + 10_000 });
    const messages = stream[Symbol.asyncIterator]();
    return {
        next: async () => {
            const r = await messages.next();
            return r.done ? "ended" : r.value.status;
        },
        close: () => (stream.cancel(), c.close()),
    };
}
test("health: Watch sends the current status, then each change, and SERVICE_UNKNOWN until a service is known", async () => {
    const w = watch("admission.v1.PolicyService");
    assert.equal(await w.next(), ServingStatus.SERVING);
    health.setStatus("admission.v1.PolicyService", ServingStatus.NOT_SERVING);
    assert.equal(await w.next(), ServingStatus.NOT_SERVING);
    health.setStatus("admission.v1.PolicyService", ServingStatus.NOT_SERVING); // no change, nothing sent
    health.setStatus("admission.v1.PolicyService", ServingStatus.SERVING);
    assert.equal(await w.next(), ServingStatus.SERVING);
    w.close();
    const later = watch("later.v1.Service");
    assert.equal(await later.next(), ServingStatus.SERVICE_UNKNOWN);
    health.setStatus("later.v1.Service", ServingStatus.SERVING);
    assert.equal(await later.next(), ServingStatus.SERVING);
    later.close();
});
test("health: shutdown() turns everything NOT_SERVING, tells watchers and ends their streams", async () => {
    const w = watch("");
    assert.equal(await w.next(), ServingStatus.SERVING);
    health.shutdown();
    assert.equal(await w.next(), ServingStatus.NOT_SERVING);
    assert.equal(await w.next(), "ended");
    w.close();
    health.setStatus("", ServingStatus.SERVING); // ignored once shutting down
    const c = client(Health);
    for (const service of ["", "admission.v1.AdmissionService"]) {
        assert.equal((await unary(c, "check", create(HealthCheckRequestSchema, { service }))).status, ServingStatus.NOT_SERVING);
    }
    c.close();
});
//# sourceMappingURL=grpc-reflection.test.js.map