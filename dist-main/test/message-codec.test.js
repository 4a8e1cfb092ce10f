import assert from "node:assert/strict";
import { test } from "node:test";
import { create, createFileRegistry, fromBinary, toBinary } from "@bufbuild/protobuf";
import { nestedTypes } from "@bufbuild/protobuf/reflect";
import { FileDescriptorProtoSchema, file_google_protobuf_struct, file_google_protobuf_wrappers } from "@bufbuild/protobuf/wkt";
import { messageCodec } from "../control-plane/grpc/message-codec.js";
import { file_admission_v1_admission } from "../gen/admission/v1/admission_pb.js";
import { file_admission_v1_policy } from "../gen/admission/v1/policy_pb.js";
import { file_admission_v1_policy_service } from "../gen/admission/v1/policy_service_pb.js";
import { file_envoy_service_auth_v3_external_auth } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import { file_grpc_health_v1_health } from "../gen/grpc/health/v1/health_pb.js";
import { fuzzSeed, Prng } from "./support/prng.js";
import { randomMessage } from "./support/random-message.js";
/**
 * A proto3 message with every field kind the codec compiles: each scalar type
 * singular, optional, packed and unpacked repeated, maps with every key type,
 * a oneof, nested and recursive messages, wrappers and Struct.
 */
const allKinds = (() => {
    const scalars = ["double", "float", "int64", "uint64", "int32", "fixed64", "fixed32", "bool", "string", "bytes", "uint32", "sfixed32", "sfixed64", "sint32", "sint64"];
    const typeOf = {
        double: 1, float: 2, int64: 3, uint64: 4, int32: 5, fixed64: 6, fixed32: 7, bool: 8, string: 9, bytes: 12, uint32: 13, sfixed32: 15, sfixed64: 16, sint32: 17, sint64: 18,
    };
    const field = [];
    const nested = [];
    let no = 1;
    for (const s of scalars) {
        field.push({ name: `s_${s}`, number: no++, label: 1, type: typeOf[s] });
        field.push({ name: `o_${s}`, number: no++, label: 1, type: typeOf[s], proto3Optional: true });
        field.push({ name: `r_${s}`, number: no++, label: 3, type: typeOf[s] });
        if (s !== "string" && s !== "bytes")
            field.push({ name: `u_${s}`, number: no++, label: 3, type: typeOf[s], options: { packed: false } });
    }
    // proto3 optional fields live in synthetic oneofs, one each.
    const oneofDecl = [];
    for (const f of field) {
        if (f.proto3Optional) {
            f.oneofIndex = oneofDecl.length;
            oneofDecl.push({ name: `_${f.name}` });
        }
    }
    const choice = oneofDecl.length;
    oneofDecl.push({ name: "choice" });
    field.push({ name: "c_string", number: no++, label: 1, type: 9, oneofIndex: choice });
    field.push({ name: "c_int64", number: no++, label: 1, type: 3, oneofIndex: choice });
    field.push({ name: "c_self", number: no++, label: 1, type: 11, typeName: ".t.All", oneofIndex: choice });
    field.push({ name: "c_wrapped", number: no++, label: 1, type: 11, typeName: ".google.protobuf.Int32Value", oneofIndex: choice });
    field.push({ name: "e", number: no++, label: 1, type: 14, typeName: ".t.Color" });
    field.push({ name: "r_e", number: no++, label: 3, type: 14, typeName: ".t.Color" });
    field.push({ name: "child", number: no++, label: 1, type: 11, typeName: ".t.All" });
    field.push({ name: "children", number: no++, label: 3, type: 11, typeName: ".t.All" });
    for (const w of ["BoolValue", "StringValue", "Int64Value", "UInt32Value", "DoubleValue", "BytesValue"]) {
        field.push({ name: `w_${w.toLowerCase()}`, number: no++, label: 1, type: 11, typeName: `.google.protobuf.${w}` });
    }
    field.push({ name: "r_wrapped", number: no++, label: 3, type: 11, typeName: ".google.protobuf.StringValue" });
    field.push({ name: "meta", number: no++, label: 1, type: 11, typeName: ".google.protobuf.Struct" });
    field.push({ name: "metas", number: no++, label: 3, type: 11, typeName: ".google.protobuf.Struct" });
    field.push({ name: "value", number: no++, label: 1, type: 11, typeName: ".google.protobuf.Value" });
    let entry = 0;
    const map = (key, value, typeName) => {
        const name = `M${entry++}Entry`;
        nested.push({ name, field: [{ name: "key", number: 1, label: 1, type: key }, { name: "value", number: 2, label: 1, type: value, typeName }], options: { mapEntry: true } });
        field.push({ name: `m${entry - 1}`, number: no++, label: 3, type: 11, typeName: `.t.All.${name}` });
    };
    for (const k of [9, 5, 3, 13, 4, 17, 18, 7, 6, 15, 16, 8])
        map(k, 9);
    map(9, 11, ".t.All");
    map(9, 14, ".t.Color");
    map(9, 12);
    map(9, 11, ".google.protobuf.Struct");
    map(5, 1);
    field.push({ name: "big_number", number: 536_870_911, label: 1, type: 13 });
    const file = create(FileDescriptorProtoSchema, {
        name: "t.proto", package: "t", syntax: "proto3", dependency: ["google/protobuf/wrappers.proto", "google/protobuf/struct.proto"],
        messageType: [{ name: "All", field, nestedType: nested, oneofDecl }],
        enumType: [{ name: "Color", value: [{ name: "COLOR_UNSPECIFIED", number: 0 }, { name: "RED", number: 1 }, { name: "BLUE", number: -5 }] }],
    });
    const wkt = { "google/protobuf/wrappers.proto": file_google_protobuf_wrappers, "google/protobuf/struct.proto": file_google_protobuf_struct };
    return createFileRegistry(file, (name) => wkt[name]).getMessage("t.All");
})();
/** The varint bytes of v (64-bit two's complement for negatives). */
function varint(v) {
    const out = [];
    let u = BigInt.asUintN(64, BigInt(v));
    while (u > 0x7fn) {
        out.push(Number(u & 0x7fn) | 0x80);
        u >>= 7n;
    }
    out.push(Number(u));
    return out;
}
const numberOf = (name) => allKinds.fields.find((f) => f.name === name).number;
const apiFiles = [file_admission_v1_admission, file_admission_v1_policy, file_admission_v1_policy_service, file_envoy_service_auth_v3_external_auth, file_grpc_health_v1_health];
const apiMessages = apiFiles.flatMap((f) => [...nestedTypes(f)].filter((t) => t.kind === "message" && !t.typeName.endsWith("Entry")));
/** protobuf-es's decoding, without the unknown fields it keeps (the codec skips them). */
function reference(schema, bytes) {
    return fromBinary(schema, new Uint8Array(bytes), { readUnknownFields: false });
}
function sameAsProtobufEs(schema, rng, rounds) {
    const codec = messageCodec(schema);
    for (let i = 0; i < rounds; i++) {
        const message = randomMessage(schema, rng, { maxDepth: 2, maxStringChars: 200 });
        const expected = toBinary(schema, message);
        const encoded = codec.encode(message);
        assert.deepEqual(new Uint8Array(encoded), expected, `${schema.typeName}: the same bytes as protobuf-es`);
        assert.deepStrictEqual(codec.decode(expected), reference(schema, expected), `${schema.typeName}: the same message as protobuf-es`);
    }
}
test("every message of the API encodes to protobuf-es's bytes and decodes to its messages", () => {
    const rng = new Prng(fuzzSeed());
    assert.ok(apiMessages.length > 40, `${apiMessages.length} messages`);
    for (const schema of apiMessages)
        sameAsProtobufEs(schema, rng, 30);
});
test("every field kind: scalars at their edges, optional, packed and unpacked lists, maps by every key type, oneofs, wrappers, Struct", () => {
    sameAsProtobufEs(allKinds, new Prng(fuzzSeed()), 150);
});
test("unpacked lists are read when packed and packed when unpacked, as parsers must", () => {
    const codec = messageCodec(allKinds);
    const m = create(allKinds, { rInt32: [1, -2, 300], uInt32: [7, 8] });
    const unpacked = Buffer.from(toBinary(allKinds, m));
    // Re-encode r_int32 unpacked and u_int32 packed by hand through the descriptor's numbers.
    const rNo = numberOf("r_int32");
    const uNo = numberOf("u_int32");
    const flipped = Buffer.from([
        ...[1, -2, 300].flatMap((v) => [...varint((rNo << 3) | 0), ...varint(v)]),
        ...varint((uNo << 3) | 2), 2, 7, 8,
    ]);
    assert.deepStrictEqual(codec.decode(flipped), codec.decode(unpacked));
});
test("unknown fields of every wire type, groups included, are skipped", () => {
    const codec = messageCodec(allKinds);
    const m = create(allKinds, { sString: "kept", sInt64: -5n });
    const known = toBinary(allKinds, m);
    // Field 99999: varint, fixed64, length-delimited, fixed32, and a group holding a nested group.
    const unknown = Buffer.from([
        0xf8, 0xb4, 0x30, 0x96, 0x01,
        0xf9, 0xb4, 0x30, 1, 2, 3, 4, 5, 6, 7, 8,
        0xfa, 0xb4, 0x30, 3, 0x61, 0x62, 0x63,
        0xfd, 0xb4, 0x30, 1, 2, 3, 4,
        0xfb, 0xb4, 0x30, 0x0b, 0x08, 0x01, 0x0c, 0xfc, 0xb4, 0x30,
    ]);
    assert.deepStrictEqual(codec.decode(Buffer.concat([unknown, known, unknown])), reference(allKinds, known));
    // A field the schema knows, sent with another wire type, is an unknown field (as protobuf's C++ parser treats it).
    const mismatched = Buffer.concat([Buffer.from([...varint((numberOf("s_string") << 3) | 0), 5]), known]);
    assert.deepStrictEqual(codec.decode(mismatched), reference(allKinds, known));
});
test("malformed input throws, and a cut message decodes only where protobuf-es decodes it too", () => {
    const codec = messageCodec(allKinds);
    const rng = new Prng(fuzzSeed());
    for (let i = 0; i < 60; i++) {
        const bytes = toBinary(allKinds, randomMessage(allKinds, rng, { maxDepth: 1, maxStringChars: 40 }));
        for (let cut = 0; cut < bytes.length; cut += 1 + rng.int(7)) {
            const prefix = bytes.subarray(0, cut);
            let ours;
            let theirs;
            try {
                ours = codec.decode(prefix);
            }
            catch (err) {
                ours = err instanceof Error ? "threw" : err;
            }
            try {
                theirs = reference(allKinds, prefix);
            }
            catch {
                theirs = "threw";
            }
            assert.deepStrictEqual(ours, theirs, `cut at ${cut} of ${bytes.length}`);
        }
    }
    for (const bad of [[0x00, 0x01], [0x08], [0x0a, 0x05, 0x61], [0x0e, 0x01], [0x0f], [0x0c], [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]]) {
        assert.throws(() => codec.decode(Buffer.from(bad)), /cannot decode message/, `bytes ${bad}`);
    }
    // Random bytes: an error or a message protobuf-es can encode; never a hang or a crash.
    for (let i = 0; i < 2_000; i++) {
        const garbage = rng.bytes(rng.size(200));
        let decoded;
        try {
            decoded = codec.decode(garbage);
        }
        catch (err) {
            assert.ok(err instanceof Error);
            continue;
        }
        toBinary(allKinds, decoded);
    }
});
test("strings must be UTF-8; lone surrogates encode as U+FFFD like protobuf-es", () => {
    const codec = messageCodec(allKinds);
    assert.throws(() => codec.decode(Buffer.from([...varint((numberOf("s_string") << 3) | 2), 3, 0x61, 0xc3, 0x28])), /invalid UTF-8/);
    for (const s of ["plain", "é", "日本語", "😀", "\ud800", "a\udc00b", "x".repeat(100) + "é"]) {
        const m = create(allKinds, { sString: s });
        assert.deepEqual(new Uint8Array(codec.encode(m)), toBinary(allKinds, m), JSON.stringify(s));
    }
});
test("a map key __proto__ is an own entry, nesting past 100 levels throws", () => {
    const codec = messageCodec(allKinds);
    const m = create(allKinds, { m0: { __proto__: "x", a: "b" } });
    Object.defineProperty(m.m0, "__proto__", { value: "x", enumerable: true, configurable: true, writable: true });
    const decoded = codec.decode(toBinary(allKinds, m));
    assert.equal(Object.getPrototypeOf(decoded.m0), Object.prototype);
    assert.deepEqual(Object.keys(decoded.m0).sort(), ["__proto__", "a"]);
    let deep = create(allKinds, {});
    for (let i = 0; i < 120; i++)
        deep = create(allKinds, { child: deep });
    const bytes = toBinary(allKinds, deep);
    assert.throws(() => codec.decode(bytes), /nested too deep/);
});
//# sourceMappingURL=message-codec.test.js.map