import { createServer, connect } from "node:net";
/** A loopback TCP proxy that a test can cut and restore, to make a server unreachable. */
export class TcpProxy {
    targetHost;
    targetPort;
    server;
    sockets = new Set();
    port = 0;
    constructor(targetHost, targetPort) {
        this.targetHost = targetHost;
        this.targetPort = targetPort;
    }
    async start(port = 0) {
        this.server = createServer((client) => {
            const upstream = connect(this.targetPort, this.targetHost);
            for (const s of [client, upstream]) {
                this.sockets.add(s);
                s.on("close", () => this.sockets.delete(s));
                s.on("error", () => s.destroy());
            }
            client.pipe(upstream).pipe(client);
            client.on("close", () => upstream.destroy());
            upstream.on("close", () => client.destroy());
        });
        await new Promise((resolve) => this.server.listen(port, "127.0.0.1", resolve));
        this.port = this.server.address().port;
        return this.port;
    }
    /** Drops every connection and refuses new ones. */
    async cut() {
        const server = this.server;
        this.server = undefined;
        for (const s of this.sockets)
            s.destroy();
        await new Promise((resolve) => (server ? server.close(() => resolve()) : resolve()));
    }
    /** Accepts connections again on the same port. */
    async restore() {
        await this.start(this.port);
    }
}
//# sourceMappingURL=tcp-proxy.js.map