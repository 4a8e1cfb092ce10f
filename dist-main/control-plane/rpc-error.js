/** Longest status message: it may quote input, and it travels in a header (grpc-message) with a size limit. */
const maxMessageChars = 1_000;
/** A call that cannot be answered: bad input, unknown entity, no permission. Carries its gRPC status. */
export class RpcError extends Error {
    code;
    constructor(code, message) {
        super(statusMessage(message));
        this.code = code;
        this.name = "RpcError";
    }
}
/**
 * A status message safe for every transport: at most maxMessageChars, and
 * well-formed UTF-16 (grpc-js percent-encodes it with encodeURI, which throws
 * on a lone surrogate: from a cut pair or from JSON such as "\ud800").
 */
export function statusMessage(text) {
    const cut = text.length > maxMessageChars ? `${text.slice(0, maxMessageChars)}…` : text;
    return cut.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, "\ufffd");
}
//# sourceMappingURL=rpc-error.js.map