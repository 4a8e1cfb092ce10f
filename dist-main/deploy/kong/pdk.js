/** Bytes from the PDK as a Buffer; undefined for Lua nil. */
export function pdkBuffer(value) {
    if (value === null || value === undefined)
        return undefined;
    if (typeof value === "string")
        return Buffer.from(value, "utf8");
    return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}
//# sourceMappingURL=pdk.js.map