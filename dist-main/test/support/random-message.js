import { ScalarType } from "@bufbuild/protobuf";
import { reflect } from "@bufbuild/protobuf/reflect";
/**
 * A random but well-formed message of any generated schema: every field kind
 * (scalars at their extremes, unknown enum numbers, lists, maps, oneofs,
 * nested messages to a bounded depth), strings with control characters,
 * surrogates and occasionally a huge length.
 */
export function randomMessage(schema, rng, options = {}) {
    return fill(schema, rng, options.maxDepth ?? 4, options.maxStringChars ?? 4096).message;
}
function fill(schema, rng, depth, maxChars) {
    const msg = reflect(schema);
    const oneofsSet = new Set();
    for (const field of schema.fields) {
        if (!rng.chance(0.6))
            continue;
        if (field.oneof) {
            if (oneofsSet.has(field.oneof))
                continue;
            oneofsSet.add(field.oneof);
        }
        setRandom(msg, field, rng, depth, maxChars);
    }
    return msg;
}
function setRandom(msg, field, rng, depth, maxChars) {
    switch (field.fieldKind) {
        case "scalar":
            msg.set(field, scalar(field.scalar, rng, maxChars));
            return;
        case "enum":
            msg.set(field, enumNumber(field.enum.values.map((v) => v.number), rng));
            return;
        case "message":
            if (depth > 0)
                msg.set(field, fill(field.message, rng, depth - 1, maxChars));
            return;
        case "list": {
            const list = msg.get(field);
            const n = depth > 0 ? rng.size(8) : 0;
            for (let i = 0; i < n; i++) {
                if (field.listKind === "scalar")
                    list.add(scalar(field.scalar, rng, maxChars));
                else if (field.listKind === "enum")
                    list.add(enumNumber(field.enum.values.map((v) => v.number), rng));
                else
                    list.add(fill(field.message, rng, depth - 1, maxChars));
            }
            return;
        }
        case "map": {
            const map = msg.get(field);
            const n = depth > 0 ? rng.size(8) : 0;
            for (let i = 0; i < n; i++) {
                const key = scalar(field.mapKey, rng, 64);
                if (field.mapKind === "scalar")
                    map.set(key, scalar(field.scalar, rng, maxChars));
                else if (field.mapKind === "enum")
                    map.set(key, enumNumber(field.enum.values.map((v) => v.number), rng));
                else
                    map.set(key, fill(field.message, rng, depth - 1, maxChars));
            }
            return;
        }
    }
}
function enumNumber(known, rng) {
    return rng.chance(0.8) ? rng.pick(known) : rng.pick([-1, 999, 2 ** 31 - 1, -(2 ** 31)]);
}
const int64Edges = [0n, 1n, -1n, 2n ** 63n - 1n, -(2n ** 63n), 2n ** 53n + 1n, 1000000000n];
const uint64Edges = [0n, 1n, 2n ** 64n - 1n, 2n ** 63n, 2n ** 53n + 1n];
const int32Edges = [0, 1, -1, 2 ** 31 - 1, -(2 ** 31)];
const uint32Edges = [0, 1, 2 ** 32 - 1, 2 ** 31];
function scalar(type, rng, maxChars) {
    const edge = rng.chance(0.5);
    switch (type) {
        case ScalarType.STRING:
            return rng.string(rng.chance(0.03) ? maxChars : rng.size(Math.min(maxChars, 300)));
        case ScalarType.BYTES:
            return rng.bytes(rng.size(512));
        case ScalarType.BOOL:
            return rng.chance(0.5);
        case ScalarType.DOUBLE:
            return edge ? rng.pick([0, -0, 1e308, -1e308, Number.NaN, Infinity, -Infinity, 1e-300]) : (rng.next() - 0.5) * 1e6;
        case ScalarType.FLOAT:
            return edge ? rng.pick([0, -0, 3.4e38, -3.4e38, Number.NaN, Infinity, -Infinity, 1e-38]) : Math.fround((rng.next() - 0.5) * 1e6);
        case ScalarType.INT64:
        case ScalarType.SINT64:
        case ScalarType.SFIXED64:
            return edge ? rng.pick(int64Edges) : BigInt(rng.int(2_000_000)) - 1000000n;
        case ScalarType.UINT64:
        case ScalarType.FIXED64:
            return edge ? rng.pick(uint64Edges) : BigInt(rng.int(2_000_000));
        case ScalarType.UINT32:
        case ScalarType.FIXED32:
            return edge ? rng.pick(uint32Edges) : rng.int(2_000_000);
        default:
            return edge ? rng.pick(int32Edges) : rng.int(2_000_000) - 1_000_000;
    }
}
//# sourceMappingURL=random-message.js.map