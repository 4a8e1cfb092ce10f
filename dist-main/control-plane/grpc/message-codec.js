import { isUtf8 } from "node:buffer";
import { fromBinary, ScalarType, toBinary } from "@bufbuild/protobuf";
import { isWrapperDesc, NullValue, StructSchema } from "@bufbuild/protobuf/wkt";
const codecs = new WeakMap();
export function messageCodec(schema) {
    let codec = codecs.get(schema);
    if (!codec)
        codecs.set(schema, (codec = compile(schema)));
    return codec;
}
/** How deep messages may nest when decoding (protobuf-es's default recursion limit). */
const maxDepth = 100;
function wireOf(scalar) {
    switch (scalar) {
        case ScalarType.STRING:
        case ScalarType.BYTES:
            return 2 /* Wire.Delimited */;
        case ScalarType.DOUBLE:
        case ScalarType.FIXED64:
        case ScalarType.SFIXED64:
            return 1 /* Wire.Bit64 */;
        case ScalarType.FLOAT:
        case ScalarType.FIXED32:
        case ScalarType.SFIXED32:
            return 5 /* Wire.Bit32 */;
        default:
            return 0 /* Wire.Varint */;
    }
}
const is64 = (s) => s === ScalarType.INT64 || s === ScalarType.UINT64 || s === ScalarType.SINT64 || s === ScalarType.FIXED64 || s === ScalarType.SFIXED64;
/** Struct fields are JSON objects in protobuf-es, except inside google.protobuf.Value. */
function usesJson(field) {
    return field.message?.typeName === "google.protobuf.Struct" && field.parent.typeName !== "google.protobuf.Value";
}
/** The varint bytes of a tag, as a JS array literal's contents. */
function tagBytes(no, wire) {
    let v = ((no << 3) | wire) >>> 0;
    const out = [];
    while (v > 0x7f) {
        out.push((v & 0x7f) | 0x80);
        v >>>= 7;
    }
    out.push(v);
    return out;
}
const tagValue = (no, wire) => ((no << 3) | wire) >>> 0;
/** The zero value of a scalar in its local representation, as source. */
function zeroSource(scalar, longAsString) {
    if (scalar === ScalarType.STRING)
        return '""';
    if (scalar === ScalarType.BOOL)
        return "false";
    if (scalar === ScalarType.BYTES)
        return "new Uint8Array(0)";
    if (is64(scalar))
        return longAsString ? '"0"' : "0n";
    return "0";
}
/**
 * One compile unit: a root message and every message reachable from it, as
 * functions sharing the decoder's position (P) and the encoder's lengths (L).
 */
function compile(root) {
    const order = [];
    const index = new Map();
    const visit = (m) => {
        if (index.has(m))
            return;
        index.set(m, order.length);
        order.push(m);
        for (const f of m.fields) {
            if (f.fieldKind === "message" && f.delimitedEncoding)
                throw new Error(`${f.parent.typeName}.${f.name}: group encoding is not supported`);
            if (f.enum && !f.enum.open)
                throw new Error(`${f.parent.typeName}.${f.name}: closed enums are not supported`);
            if (f.message && !usesJson(f))
                visit(f.message);
        }
    };
    visit(root);
    let src = "";
    for (const m of order)
        src += sizeFn(m, index) + writeFn(m, index) + readFn(m, index);
    src += `return { encode(m) { L.length = 0; I = 0; const n = s0(m); const b = Buffer.allocUnsafe(n); const p = w0(m, b, 0); if (p !== n) throw new Error("protobuf encoding size mismatch"); return b; },
    decode(u) { const b = asBuffer(u); P = 0; D = 0; return r0(b, b.length, undefined); } };`;
    const unit = new Function("rt", `"use strict"; const { sv32, sv53, sv64, svi32, strLen, big, num, wv32, wv53, wvi32, wv64, wstr, wbytes, r64, zz64, unzz64, jsonBytes, jsonOf, setOwn, asBuffer, isUtf8, fail } = rt;
    let P = 0, D = 0, I = 0, HI = 0; const L = [];
    ${readerPrelude}
    ${src}`);
    return unit(runtime);
}
/**
 * Readers that advance the shared position P; every read is bounded by `end`.
 * Strings are sliced with Buffer's latin1Slice/utf8Slice, what toString(encoding, start, end)
 * calls after checking its arguments (~30 % of decoding an Admit answer).
 */
const readerPrelude = `
function rv(b, end) {
  let lo = 0, hi = 0, shift = 0, byte;
  for (;;) {
    if (P >= end) fail("varint runs past the end");
    byte = b[P++];
    if (shift < 28) lo |= (byte & 0x7f) << shift;
    else if (shift === 28) { lo |= (byte & 0x0f) << 28; hi = (byte & 0x7f) >> 4; }
    else if (shift < 64) hi |= (byte & 0x7f) << (shift - 32);
    if (byte < 0x80) break;
    shift += 7;
    if (shift >= 70) fail("varint longer than 10 bytes");
  }
  HI = hi >>> 0;
  return lo >>> 0;
}
function rlen(b, end) {
  const n = rv(b, end);
  if (HI !== 0 || n > end - P) fail("length runs past the end");
  return n;
}
function rtag(b, end) {
  const t = rv(b, end);
  if (HI !== 0 || t >>> 3 === 0) fail("invalid tag");
  return t;
}
function need(n, end) { if (end - P < n) fail("value runs past the end"); }
function unzz32(x) { return (x >>> 1) ^ -(x & 1); }
/* A string of n bytes at P: ASCII as is, anything else checked to be UTF-8. */
function rstr(b, n) {
  const s = P, e = P + n;
  P = e;
  for (let i = s; i < e; i++) {
    if (b[i] > 0x7f) {
      if (!isUtf8(b.subarray(s, e))) fail("invalid UTF-8 in a string");
      return b.utf8Slice(s, e);
    }
  }
  return b.latin1Slice(s, e);
}
function rbytes(b, n) { const s = P; P += n; return new Uint8Array(b.subarray(s, P)); }
function rjson(b, end) { const n = rlen(b, end); const s = P; P += n; return jsonOf(b, s, P); }
function skip(b, tag, end) {
  switch (tag & 7) {
    case 0: rv(b, end); return;
    case 1: need(8, end); P += 8; return;
    case 2: { const n = rlen(b, end); P += n; return; }
    case 5: need(4, end); P += 4; return;
    case 3: {
      if (++D > ${maxDepth}) fail("groups nested too deep");
      for (;;) {
        const t = rtag(b, end);
        if ((t & 7) === 4) { if (t >>> 3 !== tag >>> 3) fail("unmatched end group"); D--; return; }
        skip(b, t, end);
      }
    }
    default: fail("invalid wire type " + (tag & 7));
  }
}
`;
// ---- encoding: sN(m) adds up the size (pushing nested lengths to L in pre-order), wN(m, b, p) writes ----
function sizeFn(m, index) {
    let body = "";
    for (const f of sortedFields(m))
        body += presence(f, (v) => fieldSize(f, v, "n", index));
    return `function s${index.get(m)}(m) { let n = 0; ${body} return n; }\n`;
}
function writeFn(m, index) {
    let body = "";
    for (const f of sortedFields(m))
        body += presence(f, (v) => fieldWrite(f, v, index));
    return `function w${index.get(m)}(m, b, p) { ${body} return p; }\n`;
}
function sortedFields(m) {
    return m.fields.concat().sort((a, b) => a.number - b.number);
}
/** Wraps a field's code in the check that it is set (proto3 implicit presence: not the zero value). */
function presence(f, code) {
    const v = `v${f.number}`;
    if (f.oneof)
        return `{ const o = m.${f.oneof.localName}; if (o.case === "${f.localName}") { const ${v} = o.value; ${code(v)} } }\n`;
    const read = `const ${v} = m.${f.localName};`;
    switch (f.fieldKind) {
        case "list":
            return `{ ${read} if (${v}.length > 0) { ${code(v)} } }\n`;
        case "map":
            return `{ ${read} ${code(v)} }\n`;
        case "message":
            return `{ ${read} if (${v} !== undefined) { ${code(v)} } }\n`;
        default:
            break;
    }
    if (f.presence !== 2 /* IMPLICIT */)
        return `{ ${read} if (${v} !== undefined) { ${code(v)} } }\n`;
    if (f.fieldKind === "enum")
        return `{ ${read} if (${v} !== ${f.enum.values[0].number}) { ${code(v)} } }\n`;
    switch (f.scalar) {
        case ScalarType.STRING:
            return `{ ${read} if (${v} !== "") { ${code(v)} } }\n`;
        case ScalarType.BOOL:
            return `{ ${read} if (${v} !== false) { ${code(v)} } }\n`;
        case ScalarType.BYTES:
            return `{ ${read} if (${v}.length > 0) { ${code(v)} } }\n`;
        case ScalarType.DOUBLE:
        case ScalarType.FLOAT:
            return `{ ${read} if (!Object.is(${v}, 0)) { ${code(v)} } }\n`;
        default:
            return `{ ${read} if (${v} != 0) { ${code(v)} } }\n`;
    }
}
/** Source adding the size of a bare scalar value (no tag) to `acc`. */
function scalarSize(scalar, v, acc) {
    switch (scalar) {
        case ScalarType.STRING:
            return `{ const l = strLen(${v}); L.push(l); ${acc} += sv32(l) + l; }`;
        case ScalarType.BYTES:
            return `${acc} += sv32(${v}.length) + ${v}.length;`;
        case ScalarType.BOOL:
            return `${acc} += 1;`;
        case ScalarType.DOUBLE:
        case ScalarType.FIXED64:
        case ScalarType.SFIXED64:
            return `${acc} += 8;`;
        case ScalarType.FLOAT:
        case ScalarType.FIXED32:
        case ScalarType.SFIXED32:
            return `${acc} += 4;`;
        case ScalarType.INT32:
            return `${acc} += svi32(${v});`;
        case ScalarType.UINT32:
            return `${acc} += sv32(${v} >>> 0);`;
        case ScalarType.SINT32:
            return `${acc} += sv32(((${v} << 1) ^ (${v} >> 31)) >>> 0);`;
        case ScalarType.SINT64:
            return `${acc} += sv64(zz64(big(${v})));`;
        default: // INT64, UINT64: converted to a double once (kept in L for the write), in BigInt only past 2^53 or below 0
            return `{ const x = num(${v}); L.push(x); ${acc} += x >= 0 ? sv53(x) : sv64(big(${v})); }`;
    }
}
/** Source writing a bare scalar value (no tag) at p. */
function scalarWrite(scalar, v) {
    switch (scalar) {
        case ScalarType.STRING:
            return `{ const l = L[I++]; p = wv32(b, p, l); p = wstr(b, p, ${v}, l); }`;
        case ScalarType.BYTES:
            return `p = wbytes(b, p, ${v});`;
        case ScalarType.BOOL:
            return `b[p++] = ${v} ? 1 : 0;`;
        case ScalarType.DOUBLE:
            return `p = b.writeDoubleLE(${v}, p);`;
        case ScalarType.FLOAT:
            return `p = b.writeFloatLE(${v}, p);`;
        case ScalarType.FIXED32:
            return `p = b.writeUInt32LE(${v} >>> 0, p);`;
        case ScalarType.SFIXED32:
            return `p = b.writeInt32LE(${v} | 0, p);`;
        case ScalarType.FIXED64:
            return `p = b.writeBigUInt64LE(BigInt.asUintN(64, big(${v})), p);`;
        case ScalarType.SFIXED64:
            return `p = b.writeBigInt64LE(BigInt.asIntN(64, big(${v})), p);`;
        case ScalarType.INT32:
            return `p = wvi32(b, p, ${v});`;
        case ScalarType.UINT32:
            return `p = wv32(b, p, ${v} >>> 0);`;
        case ScalarType.SINT32:
            return `p = wv32(b, p, ((${v} << 1) ^ (${v} >> 31)) >>> 0);`;
        case ScalarType.SINT64:
            return `p = wv64(b, p, zz64(big(${v})));`;
        default: // INT64, UINT64
            return `{ const x = L[I++]; p = x >= 0 ? wv53(b, p, x) : wv64(b, p, big(${v})); }`;
    }
}
const writeTag = (no, wire) => tagBytes(no, wire).map((x) => `b[p++] = ${x};`).join(" ");
const tagSize = (no, wire) => tagBytes(no, wire).length;
/** A nested message (or its JSON stand-in) under tag `no`: size with its length slot in L. */
function nestedSize(no, f, v, acc, index) {
    if (usesJson(f))
        return `{ const x = jsonBytes(${v}); L.push(x); ${acc} += ${tagSize(no, 2 /* Wire.Delimited */)} + sv32(x.length) + x.length; }`;
    if (isUnwrapped(f)) {
        const inner = wrapped(f);
        return `{ const at = L.length; L.push(0); let q = 0; ${presenceScalar(inner.scalar, v, scalarSize(inner.scalar, v, "q") + ` q += ${tagSize(1, wireOf(inner.scalar))};`)} L[at] = q; ${acc} += ${tagSize(no, 2 /* Wire.Delimited */)} + sv32(q) + q; }`;
    }
    return `{ const at = L.length; L.push(0); const q = s${index.get(f.message)}(${v}); L[at] = q; ${acc} += ${tagSize(no, 2 /* Wire.Delimited */)} + sv32(q) + q; }`;
}
function nestedWrite(no, f, v, index) {
    if (usesJson(f))
        return `{ ${writeTag(no, 2 /* Wire.Delimited */)} const x = L[I++]; p = wbytes(b, p, x); }`;
    if (isUnwrapped(f)) {
        const inner = wrapped(f);
        return `{ ${writeTag(no, 2 /* Wire.Delimited */)} p = wv32(b, p, L[I++]); ${presenceScalar(inner.scalar, v, `${writeTag(1, wireOf(inner.scalar))} ${scalarWrite(inner.scalar, v)}`)} }`;
    }
    return `{ ${writeTag(no, 2 /* Wire.Delimited */)} p = wv32(b, p, L[I++]); p = w${index.get(f.message)}(${v}, b, p); }`;
}
/** The implicit-presence check of a wrapper's value field. */
function presenceScalar(scalar, v, code) {
    switch (scalar) {
        case ScalarType.STRING:
            return `if (${v} !== "") { ${code} }`;
        case ScalarType.BOOL:
            return `if (${v} !== false) { ${code} }`;
        case ScalarType.BYTES:
            return `if (${v}.length > 0) { ${code} }`;
        case ScalarType.DOUBLE:
        case ScalarType.FLOAT:
            return `if (!Object.is(${v}, 0)) { ${code} }`;
        default:
            return `if (${v} != 0) { ${code} }`;
    }
}
function mapKeyValue(scalar, k) {
    if (scalar === ScalarType.STRING)
        return k;
    if (scalar === ScalarType.BOOL)
        return `(${k} === "true")`;
    if (is64(scalar))
        return `BigInt(${k})`;
    return `Number.parseInt(${k}, 10)`;
}
function fieldSize(f, v, acc, index) {
    const no = f.number;
    switch (f.fieldKind) {
        case "scalar":
            return `${acc} += ${tagSize(no, wireOf(f.scalar))}; ${scalarSize(f.scalar, v, acc)}`;
        case "enum":
            return `${acc} += ${tagSize(no, 0 /* Wire.Varint */)} + svi32(${v});`;
        case "message":
            return nestedSize(no, f, v, acc, index);
        case "list": {
            if (f.listKind === "message")
                return `for (let i = 0; i < ${v}.length; i++) { const e = ${v}[i]; ${nestedSize(no, f, "e", acc, index)} }`;
            const scalar = f.listKind === "enum" ? ScalarType.INT32 : f.scalar;
            if (f.packed && wireOf(scalar) !== 2 /* Wire.Delimited */) {
                return `{ const at = L.length; L.push(0); let k = 0; for (let i = 0; i < ${v}.length; i++) { const e = ${v}[i]; ${scalarSize(scalar, "e", "k")} } L[at] = k; ${acc} += ${tagSize(no, 2 /* Wire.Delimited */)} + sv32(k) + k; }`;
            }
            return `for (let i = 0; i < ${v}.length; i++) { const e = ${v}[i]; ${acc} += ${tagSize(no, wireOf(scalar))}; ${scalarSize(scalar, "e", acc)} }`;
        }
        case "map": {
            const keyScalar = f.mapKey;
            let value;
            if (f.mapKind === "message")
                value = nestedSize(2, f, "e", "k", index);
            else {
                const scalar = f.mapKind === "enum" ? ScalarType.INT32 : f.scalar;
                value = `k += ${tagSize(2, wireOf(scalar))}; ${scalarSize(scalar, "e", "k")}`;
            }
            return `for (const key in ${v}) { if (!Object.prototype.hasOwnProperty.call(${v}, key)) continue; const e = ${v}[key]; const at = L.length; L.push(0); let k = ${tagSize(1, wireOf(keyScalar))};
        { const kv = ${mapKeyValue(keyScalar, "key")}; ${scalarSize(keyScalar, "kv", "k")} } ${value} L[at] = k; ${acc} += ${tagSize(no, 2 /* Wire.Delimited */)} + sv32(k) + k; }`;
        }
    }
}
function fieldWrite(f, v, index) {
    const no = f.number;
    switch (f.fieldKind) {
        case "scalar":
            return `${writeTag(no, wireOf(f.scalar))} ${scalarWrite(f.scalar, v)}`;
        case "enum":
            return `${writeTag(no, 0 /* Wire.Varint */)} p = wvi32(b, p, ${v});`;
        case "message":
            return nestedWrite(no, f, v, index);
        case "list": {
            if (f.listKind === "message")
                return `for (let i = 0; i < ${v}.length; i++) { const e = ${v}[i]; ${nestedWrite(no, f, "e", index)} }`;
            const scalar = f.listKind === "enum" ? ScalarType.INT32 : f.scalar;
            if (f.packed && wireOf(scalar) !== 2 /* Wire.Delimited */) {
                return `${writeTag(no, 2 /* Wire.Delimited */)} p = wv32(b, p, L[I++]); for (let i = 0; i < ${v}.length; i++) { const e = ${v}[i]; ${scalarWrite(scalar, "e")} }`;
            }
            return `for (let i = 0; i < ${v}.length; i++) { const e = ${v}[i]; ${writeTag(no, wireOf(scalar))} ${scalarWrite(scalar, "e")} }`;
        }
        case "map": {
            const keyScalar = f.mapKey;
            let value;
            if (f.mapKind === "message")
                value = nestedWrite(2, f, "e", index);
            else {
                const scalar = f.mapKind === "enum" ? ScalarType.INT32 : f.scalar;
                value = `${writeTag(2, wireOf(scalar))} ${scalarWrite(scalar, "e")}`;
            }
            return `for (const key in ${v}) { if (!Object.prototype.hasOwnProperty.call(${v}, key)) continue; const e = ${v}[key]; ${writeTag(no, 2 /* Wire.Delimited */)} p = wv32(b, p, L[I++]);
        ${writeTag(1, wireOf(keyScalar))} { const kv = ${mapKeyValue(keyScalar, "key")}; ${scalarWrite(keyScalar, "kv")} } ${value} }`;
        }
    }
}
// ---- decoding: rN(b, end, target) reads fields up to `end` into a fresh message (or `target`, merging) ----
function readFn(m, index) {
    // The zero message, as create() builds it: members in declaration order, absent singular messages and explicit-presence scalars.
    const init = [`$typeName: ${JSON.stringify(m.typeName)}`];
    for (const member of m.members) {
        if (member.kind === "oneof") {
            init.push(`${member.localName}: { case: undefined }`);
            continue;
        }
        switch (member.fieldKind) {
            case "list":
                init.push(`${member.localName}: []`);
                break;
            case "map":
                init.push(`${member.localName}: {}`);
                break;
            case "message":
                break;
            case "enum":
                if (member.presence === 2)
                    init.push(`${member.localName}: ${member.enum.values[0].number}`);
                break;
            case "scalar":
                if (member.presence === 2)
                    init.push(`${member.localName}: ${zeroSource(member.scalar, member.longAsString)}`);
                break;
        }
    }
    let cases = "";
    for (const f of m.fields)
        cases += fieldCases(f, index);
    return `function r${index.get(m)}(b, end, t) {
    if (++D > ${maxDepth}) fail("messages nested too deep");
    const m = t !== undefined ? t : { ${init.join(", ")} };
    while (P < end) {
      const tag = rtag(b, end);
      switch (tag) { ${cases} default: skip(b, tag, end); }
    }
    D--;
    return m;
  }\n`;
}
/** Source reading a bare scalar (P at its first byte, bounded by the variable `end`) as an expression. */
function scalarRead(scalar, longAsString, end = "end") {
    const asString = (e) => (longAsString ? `String(${e})` : e);
    switch (scalar) {
        case ScalarType.STRING:
            return `rstr(b, rlen(b, ${end}))`;
        case ScalarType.BYTES:
            return `rbytes(b, rlen(b, ${end}))`;
        case ScalarType.BOOL:
            return `((rv(b, ${end}) | HI) !== 0)`;
        case ScalarType.DOUBLE:
            return `(need(8, ${end}), P += 8, b.readDoubleLE(P - 8))`;
        case ScalarType.FLOAT:
            return `(need(4, ${end}), P += 4, b.readFloatLE(P - 4))`;
        case ScalarType.FIXED32:
            return `(need(4, ${end}), P += 4, b.readUInt32LE(P - 4))`;
        case ScalarType.SFIXED32:
            return `(need(4, ${end}), P += 4, b.readInt32LE(P - 4))`;
        case ScalarType.FIXED64:
            return asString(`(need(8, ${end}), P += 8, b.readBigUInt64LE(P - 8))`);
        case ScalarType.SFIXED64:
            return asString(`(need(8, ${end}), P += 8, b.readBigInt64LE(P - 8))`);
        case ScalarType.INT32:
            return `(rv(b, ${end}) | 0)`;
        case ScalarType.UINT32:
            return `rv(b, ${end})`;
        case ScalarType.SINT32:
            return `unzz32(rv(b, ${end}))`;
        case ScalarType.INT64:
            return asString(`r64(rv(b, ${end}), HI, true)`);
        case ScalarType.UINT64:
            return asString(`r64(rv(b, ${end}), HI, false)`);
        case ScalarType.SINT64:
            return asString(`unzz64(r64(rv(b, ${end}), HI, false))`);
    }
}
const isUnwrapped = (f) => f.fieldKind === "message" && !f.oneof && isWrapperDesc(f.message);
/** The scalar a wrapper message (google.protobuf.BoolValue...) holds in its field 1. */
function wrapped(f) {
    const inner = f.message.fields[0];
    if (inner.fieldKind !== "scalar")
        throw new Error(`${f.message.typeName} is not a wrapper`);
    return { scalar: inner.scalar, longAsString: inner.longAsString };
}
/** Source reading a length-delimited message (P at its length, bounded by `end`) as an expression; not for unwrapped wrappers. */
function nestedRead(f, existing, index, end = "end") {
    if (usesJson(f))
        return `rjson(b, ${end})`;
    return `r${index.get(f.message)}(b, rlen(b, ${end}) + P, ${existing})`;
}
function fieldCases(f, index) {
    const name = f.localName;
    const no = f.number;
    const target = f.oneof ? `m.${f.oneof.localName}` : `m.${name}`;
    const set = (value) => (f.oneof ? `${target} = { case: "${name}", value: ${value} };` : `${target} = ${value};`);
    switch (f.fieldKind) {
        case "scalar":
            return `case ${tagValue(no, wireOf(f.scalar))}: ${set(scalarRead(f.scalar, f.longAsString))} break;\n`;
        case "enum":
            return `case ${tagValue(no, 0 /* Wire.Varint */)}: ${set("(rv(b, end) | 0)")} break;\n`;
        case "message": {
            if (isUnwrapped(f)) {
                // A wrapper field holds its value field's scalar, the zero value when the wrapper is empty.
                const inner = wrapped(f);
                return `case ${tagValue(no, 2 /* Wire.Delimited */)}: {
          const e = rlen(b, end) + P; let w = ${target} !== undefined ? ${target} : ${zeroSource(inner.scalar, inner.longAsString)};
          while (P < e) { const t = rtag(b, e); if (t === ${tagValue(1, wireOf(inner.scalar))}) w = ${scalarRead(inner.scalar, inner.longAsString, "e")}; else skip(b, t, e); }
          ${target} = w;
          break;
        }\n`;
            }
            const existing = f.oneof ? `(${target}.case === "${name}" ? ${target}.value : undefined)` : target;
            return `case ${tagValue(no, 2 /* Wire.Delimited */)}: ${set(nestedRead(f, existing, index))} break;\n`;
        }
        case "list": {
            if (f.listKind === "message")
                return `case ${tagValue(no, 2 /* Wire.Delimited */)}: ${target}.push(${nestedRead(f, "undefined", index)}); break;\n`;
            const scalar = f.listKind === "enum" ? ScalarType.INT32 : f.scalar;
            const longAsString = f.listKind === "scalar" && f.longAsString;
            const one = `case ${tagValue(no, wireOf(scalar))}: ${target}.push(${scalarRead(scalar, longAsString)}); break;\n`;
            if (wireOf(scalar) === 2 /* Wire.Delimited */)
                return one;
            // Packed or not, whatever the schema says: parsers accept both.
            return `${one}case ${tagValue(no, 2 /* Wire.Delimited */)}: { const a = ${target}; const e = rlen(b, end) + P; while (P < e) a.push(${scalarRead(scalar, longAsString, "e")}); break; }\n`;
        }
        case "map": {
            const keyScalar = f.mapKey;
            const keyTag = tagValue(1, wireOf(keyScalar));
            let valueTag;
            let valueRead;
            let valueZero;
            if (f.mapKind === "message") {
                valueTag = tagValue(2, 2 /* Wire.Delimited */);
                valueRead = nestedRead(f, "v", index, "e");
                valueZero = usesJson(f) ? "{}" : `r${index.get(f.message)}(b, P, undefined)`;
            }
            else {
                const scalar = f.mapKind === "enum" ? ScalarType.INT32 : f.scalar;
                valueTag = tagValue(2, wireOf(scalar));
                valueRead = scalarRead(scalar, false, "e");
                valueZero = f.mapKind === "enum" ? String(f.enum.values[0].number) : zeroSource(scalar, false);
            }
            return `case ${tagValue(no, 2 /* Wire.Delimited */)}: {
        const e = rlen(b, end) + P; let k = ${zeroSource(keyScalar, false)}, v = undefined;
        while (P < e) { const t = rtag(b, e); if (t === ${keyTag}) k = ${scalarRead(keyScalar, false, "e")}; else if (t === ${valueTag}) v = ${valueRead}; else skip(b, t, e); }
        setOwn(${target}, String(k), v !== undefined ? v : ${valueZero});
        break;
      }\n`;
        }
    }
}
// ---- the runtime the compiled code calls ----
const runtime = {
    sv32(v) {
        return v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : 5;
    },
    /** A negative int32 is sign-extended to ten bytes. */
    svi32(v) {
        return v < 0 ? 10 : runtime.sv32(v);
    },
    /** Varint size of a non-negative integer below 2^53. */
    sv53(x) {
        if (x < 0x100000000)
            return runtime.sv32(x);
        let n = 5;
        for (x = Math.floor(x / 0x800000000); x > 0; x = Math.floor(x / 128))
            n++;
        return n;
    },
    sv64(v) {
        let u = BigInt.asUintN(64, v);
        let n = 1;
        while (u > 0x7fn) {
            u >>= 7n;
            n++;
        }
        return n;
    },
    big(v) {
        return typeof v === "bigint" ? v : BigInt(v);
    },
    /** A 64-bit value as a double when that is exact (|v| < 2^53), else NaN. */
    num(v) {
        const x = Number(v);
        return Number.isSafeInteger(x) ? x : Number.NaN;
    },
    zz64(v) {
        return BigInt.asUintN(64, (v << 1n) ^ (v >> 63n));
    },
    unzz64(u) {
        return (u >> 1n) ^ -(u & 1n);
    },
    /** UTF-8 byte length: a short ASCII string is measured in JS, anything else by Buffer. */
    strLen(s) {
        const n = s.length;
        if (n > 64)
            return Buffer.byteLength(s, "utf8");
        for (let i = 0; i < n; i++)
            if (s.charCodeAt(i) > 0x7f)
                return Buffer.byteLength(s, "utf8");
        return n;
    },
    wv32(b, p, v) {
        while (v > 0x7f) {
            b[p++] = (v & 0x7f) | 0x80;
            v >>>= 7;
        }
        b[p++] = v;
        return p;
    },
    wvi32(b, p, v) {
        return v >= 0 ? runtime.wv32(b, p, v) : runtime.wv64(b, p, BigInt(v));
    },
    /** A non-negative integer below 2^53 as a varint. */
    wv53(b, p, x) {
        while (x >= 0x100000000) {
            b[p++] = (x % 128) | 0x80;
            x = Math.floor(x / 128);
        }
        return runtime.wv32(b, p, x);
    },
    wv64(b, p, v) {
        let u = BigInt.asUintN(64, v);
        while (u > 0x7fn) {
            b[p++] = Number(u & 0x7fn) | 0x80;
            u >>= 7n;
        }
        b[p++] = Number(u);
        return p;
    },
    wstr(b, p, s, len) {
        if (len === s.length && len <= 32) {
            for (let i = 0; i < len; i++)
                b[p + i] = s.charCodeAt(i);
            return p + len;
        }
        return p + b.write(s, p, len, "utf8");
    },
    wbytes(b, p, v) {
        p = runtime.wv32(b, p, v.length);
        b.set(v, p);
        return p + v.length;
    },
    r64(lo, hi, signed) {
        if (hi === 0)
            return BigInt(lo);
        const u = (BigInt(hi) << 32n) | BigInt(lo);
        return signed ? BigInt.asIntN(64, u) : u;
    },
    jsonBytes(json) {
        return toBinary(StructSchema, structOf(json));
    },
    jsonOf(b, start, end) {
        return jsonOfStruct(fromBinary(StructSchema, b.subarray(start, end)));
    },
    /** Map keys may be "__proto__": define rather than assign. */
    setOwn(record, key, value) {
        if (key === "__proto__")
            Object.defineProperty(record, key, { value, enumerable: true, configurable: true, writable: true });
        else
            record[key] = value;
    },
    isUtf8,
    asBuffer(u) {
        return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
    },
    fail(why) {
        throw new Error(`cannot decode message: ${why}`);
    },
};
// google.protobuf.Struct fields as protobuf-es holds them (a JSON object), to and from the message.
function structOf(json) {
    const fields = {};
    for (const k of Object.keys(json))
        runtime.setOwn(fields, k, valueOf(json[k]));
    return { $typeName: "google.protobuf.Struct", fields };
}
function valueOf(json) {
    let kind;
    if (typeof json === "number")
        kind = { case: "numberValue", value: json };
    else if (typeof json === "string")
        kind = { case: "stringValue", value: json };
    else if (typeof json === "boolean")
        kind = { case: "boolValue", value: json };
    else if (json === null)
        kind = { case: "nullValue", value: NullValue.NULL_VALUE };
    else if (Array.isArray(json))
        kind = { case: "listValue", value: { $typeName: "google.protobuf.ListValue", values: json.map(valueOf) } };
    else
        kind = { case: "structValue", value: structOf(json) };
    return { $typeName: "google.protobuf.Value", kind };
}
function jsonOfStruct(struct) {
    const json = {};
    for (const k of Object.keys(struct.fields))
        runtime.setOwn(json, k, jsonOfValue(struct.fields[k]));
    return json;
}
function jsonOfValue(value) {
    switch (value.kind.case) {
        case "structValue":
            return jsonOfStruct(value.kind.value);
        case "listValue":
            return value.kind.value.values.map(jsonOfValue);
        case "nullValue":
        case undefined:
            return null;
        default:
            return value.kind.value;
    }
}
//# sourceMappingURL=message-codec.js.map