import { fromJson } from "@bufbuild/protobuf";
/**
 * Parses proto3 JSON, accepting enum values with or without their type prefix
 * ("TOKENS" as well as "LIMIT_KIND_TOKENS"). Unknown fields are rejected with a
 * message naming them.
 */
export function parseProtoJson(schema, json) {
    return fromJson(schema, prefixEnums(schema, json));
}
function prefixEnums(schema, json) {
    if (json === null || typeof json !== "object" || Array.isArray(json))
        return json;
    const out = {};
    for (const [key, value] of Object.entries(json)) {
        const field = schema.fields.find((f) => f.jsonName === key || f.name === key);
        out[key] = field ? prefixField(field, value) : value;
    }
    return out;
}
function prefixField(field, value) {
    switch (field.fieldKind) {
        case "enum":
            return prefixEnumValue(field.enum, value);
        case "message":
            return prefixEnums(field.message, value);
        case "list":
            if (!Array.isArray(value))
                return value;
            if (field.listKind === "enum")
                return value.map((v) => prefixEnumValue(field.enum, v));
            if (field.listKind === "message")
                return value.map((v) => prefixEnums(field.message, v));
            return value;
        default:
            return value;
    }
}
function prefixEnumValue(descEnum, value) {
    if (typeof value !== "string" || descEnum.values.some((v) => v.name === value))
        return value;
    // localName is the value's name without the shared prefix ("TOKENS" for LIMIT_KIND_TOKENS).
    return descEnum.values.find((v) => v.localName === value)?.name ?? value;
}
//# sourceMappingURL=proto-json.js.map