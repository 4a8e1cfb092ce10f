import { connect } from "node:net";
/**
 * HTTP/1.1 written by hand on a TCP socket, to send what no client library
 * would: oversized or endless headers, garbage request lines, bodies trickled
 * byte by byte. Resolves with the first response (the connection is then closed).
 */
export function rawHttp(port, head, options) {
    return new Promise((resolve) => {
        const socket = connect(port, "127.0.0.1");
        let received = Buffer.alloc(0);
        let settled = false;
        let drip;
        const done = (answer) => {
            if (settled)
                return;
            settled = true;
            clearTimeout(timer);
            clearInterval(drip);
            socket.destroy();
            resolve(answer);
        };
        const timer = setTimeout(() => done({ kind: "timeout" }), options.timeoutMs);
        const tryParse = (final) => {
            const text = received.toString("latin1");
            const end = text.indexOf("\r\n\r\n");
            if (end < 0)
                return final && done({ kind: "closed", received: text.slice(0, 200) });
            const [statusLine, ...lines] = text.slice(0, end).split("\r\n");
            const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine ?? "")?.[1]);
            if (!status)
                return done({ kind: "closed", received: text.slice(0, 200) });
            const headers = {};
            for (const line of lines) {
                const i = line.indexOf(":");
                if (i > 0)
                    headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
            }
            const body = received.subarray(Buffer.byteLength(text.slice(0, end + 4), "latin1"));
            const length = headers["content-length"] === undefined ? undefined : Number(headers["content-length"]);
            if (length !== undefined && body.length >= length)
                return done({ kind: "response", status, headers, body: body.subarray(0, length).toString("utf8") });
            if (final)
                done({ kind: "response", status, headers, body: body.toString("utf8") });
        };
        socket.on("data", (chunk) => {
            received = Buffer.concat([received, chunk]);
            tryParse(false);
        });
        socket.on("error", () => undefined);
        socket.on("close", () => tryParse(true));
        socket.on("connect", () => {
            const all = Buffer.concat([Buffer.isBuffer(head) ? head : Buffer.from(head, "latin1"), options.body ?? Buffer.alloc(0)]);
            if (options.trickleMs === undefined) {
                socket.write(all);
                return;
            }
            let at = 0;
            drip = setInterval(() => {
                if (at >= all.length || socket.destroyed)
                    return clearInterval(drip);
                socket.write(all.subarray(at, at + 1));
                at++;
            }, options.trickleMs);
        });
    });
}
//# sourceMappingURL=raw-http.js.map