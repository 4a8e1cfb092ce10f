import http2 from "node:http2";
/** A gRPC length-prefixed frame; `declaredLength` lies about the length, `compressed` sets the flag. */
export function grpcFrame(payload, options = {}) {
    const head = Buffer.alloc(5);
    head[0] = options.compressed ? 1 : 0;
    head.writeUInt32BE((options.declaredLength ?? payload.length) >>> 0, 1);
    return Buffer.concat([head, payload]);
}
/**
 * gRPC spoken by hand over node:http2, to send what no gRPC client would:
 * broken frames, lying length prefixes, floods of metadata, trickled bodies.
 */
export class RawGrpcClient {
    address;
    session;
    constructor(address) {
        this.address = address;
    }
    open() {
        const session = http2.connect(`http://${this.address}`, { maxHeaderListPairs: 100_000, maxSendHeaderBlockLength: 4 * 1024 * 1024 });
        session.on("error", () => undefined);
        session.on("goaway", () => session.destroy());
        return session;
    }
    shared() {
        if (!this.session || this.session.closed || this.session.destroyed)
            this.session = this.open();
        return this.session;
    }
    call(path, options) {
        const session = options.ownConnection ? this.open() : this.shared();
        return new Promise((resolve) => {
            let settled = false;
            const done = (answer) => {
                if (settled)
                    return;
                settled = true;
                clearTimeout(timer);
                if (options.ownConnection)
                    session.destroy();
                resolve(answer);
            };
            const timer = setTimeout(() => {
                stream?.close(http2.constants.NGHTTP2_CANCEL);
                done({ kind: "timeout" });
            }, options.timeoutMs);
            let stream;
            try {
                stream = session.request({
                    ":method": "POST", ":path": path, "content-type": "application/grpc", te: "trailers", ...options.headers,
                });
            }
            catch (err) {
                done({ kind: "reset", code: err.code ?? String(err) });
                return;
            }
            let httpStatus = 0;
            let headerStatus;
            let headerMessage = "";
            const chunks = [];
            stream.on("response", (headers) => {
                httpStatus = Number(headers[":status"]);
                headerStatus = headers["grpc-status"];
                headerMessage = headers["grpc-message"] ?? "";
            });
            stream.on("data", (chunk) => chunks.push(chunk));
            stream.on("trailers", (trailers) => {
                headerStatus = trailers["grpc-status"] ?? headerStatus;
                headerMessage = trailers["grpc-message"] ?? headerMessage;
            });
            // A server may reset the stream right after its status (e.g. while the body was still coming): the status is the answer.
            let streamError;
            stream.on("error", (err) => {
                streamError = err.code ?? err.message;
            });
            stream.on("close", () => {
                if (httpStatus === 0 || headerStatus === undefined)
                    return done({ kind: "reset", code: streamError ?? stream.rstCode ?? "closed" });
                done({
                    kind: "status", httpStatus,
                    grpcStatus: headerStatus === undefined ? undefined : Number(headerStatus),
                    grpcMessage: decodeURIComponent(headerMessage),
                    messages: splitFrames(Buffer.concat(chunks)),
                });
            });
            const body = options.body ?? Buffer.alloc(0);
            if (options.trickleMs === undefined) {
                stream.end(body);
                return;
            }
            let sent = 0;
            const limit = Math.min(body.length, options.abandonAfterBytes ?? body.length);
            const drip = setInterval(() => {
                if (settled || stream.destroyed)
                    return clearInterval(drip);
                if (sent >= limit) {
                    clearInterval(drip);
                    stream.close(http2.constants.NGHTTP2_CANCEL);
                    done({ kind: "abandoned" });
                    return;
                }
                stream.write(body.subarray(sent, sent + 1));
                sent++;
            }, options.trickleMs);
        });
    }
    close() {
        this.session?.destroy();
    }
}
function splitFrames(data) {
    const out = [];
    let at = 0;
    while (at + 5 <= data.length) {
        const length = data.readUInt32BE(at + 1);
        out.push(data.subarray(at + 5, at + 5 + length));
        at += 5 + length;
    }
    return out;
}
//# sourceMappingURL=raw-grpc.js.map