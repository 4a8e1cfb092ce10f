import type { DescEnum, DescField, DescMessage, JsonValue, MessageShape } from "@bufbuild/protobuf";
import { fromJson } from "@bufbuild/protobuf";

/**
 * Parses proto3 JSON, accepting enum values with or without their type prefix
 * ("TOKENS" as well as "LIMIT_KIND_TOKENS"). Unknown fields are rejected with a
 * message naming them.
 */
export function parseProtoJson<D extends DescMessage>(schema: D, json: unknown): MessageShape<D> {
  return fromJson(schema, prefixEnums(schema, json) as JsonValue);
}

function prefixEnums(schema: DescMessage, json: unknown): unknown {
  if (json === null || typeof json !== "object" || Array.isArray(json)) return json;
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(json as Record<string, unknown>)) {
    const field = schema.fields.find((f) => f.jsonName === key || f.name === key);
    out[key] = field ? prefixField(field, value) : value;
  }
  return out;
}

function prefixField(field: DescField, value: unknown): unknown {
  switch (field.fieldKind) {
    case "enum":
      return prefixEnumValue(field.enum, value);
    case "message":
      return prefixEnums(field.message, value);
    case "list":
      if (!Array.isArray(value)) return value;
      if (field.listKind === "enum") return value.map((v) => prefixEnumValue(field.enum, v));
      if (field.listKind === "message") return value.map((v) => prefixEnums(field.message, v));
      return value;
    default:
      return value;
  }
}

function prefixEnumValue(descEnum: DescEnum, value: unknown): unknown {
  if (typeof value !== "string" || descEnum.values.some((v) => v.name === value)) return value;
  // localName is the value's name without the shared prefix ("TOKENS" for LIMIT_KIND_TOKENS).
  return descEnum.values.find((v) => v.localName === value)?.name ?? value;
}
