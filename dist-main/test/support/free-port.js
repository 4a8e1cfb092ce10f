import { createServer } from "node:net";
/** A TCP port free on loopback right now (for servers a test starts as processes). */
export function freePort() {
    return new Promise((resolve, reject) => {
        const server = createServer();
        server.once("error", reject);
        server.listen(0, "127.0.0.1", () => {
            const { port } = server.address();
            server.close(() => resolve(port));
        });
    });
}
//# sourceMappingURL=free-port.js.map