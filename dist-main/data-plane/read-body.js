/**
 * Reads a request body up to maxBytes. Over the limit (declared or actual),
 * the rest is drained unread so the 413 reaches a client still sending.
 */
export function readBody(req, maxBytes) {
    return new Promise((resolve) => {
        const declared = Number(req.headers["content-length"] ?? 0);
        if (declared > maxBytes) {
            req.resume();
            resolve("too_large");
            return;
        }
        const chunks = [];
        let size = 0;
        const onData = (chunk) => {
            size += chunk.length;
            if (size > maxBytes) {
                req.off("data", onData);
                chunks.length = 0;
                req.resume();
                resolve("too_large");
                return;
            }
            chunks.push(chunk);
        };
        req.on("data", onData);
        req.on("end", () => resolve(joinChunks(chunks, size)));
        req.on("aborted", () => resolve("aborted"));
        req.on("error", () => resolve("aborted"));
    });
}
/** The chunks as one buffer; a body that came in one chunk (most do) is used as it is. */
export function joinChunks(chunks, size) {
    return chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size);
}
//# sourceMappingURL=read-body.js.map