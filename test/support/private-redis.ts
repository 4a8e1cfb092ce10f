import { spawn, type ChildProcess } from "node:child_process";
import { Redis } from "ioredis";
import { freePort } from "./free-port.js";

/** A redis-server this test started (never the shared one), and a connection to it as its admin. */
export interface PrivateRedis {
  readonly port: number;
  readonly url: string;
  /** Connected as the default user (with `password`, when the server was started with one). */
  readonly admin: Redis;
  stop(): Promise<void>;
}

/**
 * Starts a private redis-server without persistence on a free loopback port, with extra
 * arguments (e.g. "--maxmemory-policy", "allkeys-lru"; "--requirepass", "pw"), once it answers.
 */
export async function startPrivateRedis(options: { args?: readonly string[]; password?: string } = {}): Promise<PrivateRedis> {
  const port = await freePort();
  const args = ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", ...(options.args ?? [])];
  if (options.password) args.push("--requirepass", options.password);
  const child: ChildProcess = spawn("/usr/bin/redis-server", args, { stdio: "ignore" });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const admin = new Redis(port, { password: options.password, lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: 0 });
  admin.on("error", () => undefined);
  for (let attempt = 0; ; attempt++) {
    try {
      await admin.connect();
      if ((await admin.ping()) === "PONG") break;
    } catch (err) {
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
