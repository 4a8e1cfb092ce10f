import type { IncomingMessage } from "node:http";

/**
 * Reads a request body up to maxBytes. Over the limit (declared or actual),
 * the rest is drained unread so the 413 reaches a client still sending.
 */
export function readBody(req: IncomingMessage, maxBytes: number): Promise<Buffer | "too_large" | "aborted"> {
  return new Promise((resolve) => {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > maxBytes) {
      req.resume();
      resolve("too_large");
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
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
export function joinChunks(chunks: readonly Buffer[], size: number): Buffer {
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size);
}
