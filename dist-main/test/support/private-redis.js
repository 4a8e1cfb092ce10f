import { spawn } from "node:child_process";
import { Redis } from "ioredis";
import { freePort } from "./free-port.js";
/**
 * Starts a private redis-server without persistence on a free loopback port, with extra
 * arguments (e.g. "--maxmemory-policy", "allkeys-lru"; "--requirepass", "pw"), once it answers.
 */
export async function startPrivateRedis(options = {}) {
    const port = await freePort();
    const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", ...(options.args ?? [])];
    if (options.password)
        args.push("--requirepass", options.password);
    const child = spawn("/usr/bin/redis-server", args, { stdio: "ignore" });
    const exited = new Promise((resolve) => child.once("exit", () => resolve()));
    const admin = new Redis(port, { password: options.password, lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: 0 });
    admin.on("error", () => undefined);
    for (let attempt = 0;; attempt++) {
        try {
            await admin.connect();
            if ((await admin.ping()) === "PONG")
                break;
        }
        catch (err) {
            if (attempt > 100 || child.exitCode !== null) {
                child.kill("SIGKILL");
                throw new Error(`private redis-server on port ${port} did not start: ${String(err)}`);
            }
            admin.disconnect();
            await new Promise((r) => setTimeout(r, 50));
        }
    }
    return {
        port,
        url: `redis://127.0.0.1:${port}`,
        admin,
        stop: async () => {
            admin.disconnect();
            child.kill("SIGKILL");
            await exited;
        },
    };
}
//# sourceMappingURL=private-redis.js.map