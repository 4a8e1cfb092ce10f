import type { status } from "@grpc/grpc-js";

/** Longest status message: it may quote input, and it travels in a header (grpc-message) with a size limit. */
const maxMessageChars = 1_000;

/** A call that cannot be answered: bad input, unknown entity, no permission. Carries its gRPC status. */
export class RpcError extends Error {
  constructor(readonly code: status, message: string) {
    super(statusMessage(message));
    this.name = "RpcError";
  }
}

/**
 * A status message safe for every transport: at most maxMessageChars, and
 * well-formed UTF-16 (grpc-js percent-encodes it with encodeURI, which throws
 * on a lone surrogate: from a cut pair or from JSON such as "\ud800").
 */
export function statusMessage(text: string): string {
  const cut = text.length > maxMessageChars ? `${text.slice(0, maxMessageChars - 1)}…` : text;
  return cut.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
}
