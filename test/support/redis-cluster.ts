import { execFile, spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);

/** A throwaway Redis Cluster of three masters on loopback, from the redis-server binary. */
export interface LocalRedisCluster {
  readonly nodes: string[];
  stop(): Promise<void>;
}

export function redisClusterUnavailable(): string | false {
  if (existsSync("/usr/bin/redis-server") && existsSync("/usr/bin/redis-cli")) return false;
  if (process.env.ADMISSION_REQUIRE_SERVICES === "1") throw new Error("redis-server and redis-cli are required (apt-get install redis-server redis-tools)");
  return "redis-server/redis-cli not installed: apt-get install redis-server redis-tools to run the Redis Cluster test";
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
    srv.on("error", reject);
  });
}

async function waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export async function startRedisCluster(): Promise<LocalRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), "adm-redis-cluster-"));
  const processes: ChildProcess[] = [];
  const ports: number[] = [];
  const stop = async () => {
    for (const p of processes) p.kill("SIGKILL");
    await new Promise((r) => setTimeout(r, 100));
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      ports.push(port);
      const child = spawn("/usr/bin/redis-server", [
        "--port", String(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file", join(dir, `nodes-${port}.conf`),
        "--cluster-node-timeout", "2000", "--save", "", "--appendonly", "no", "--dir", dir, "--daemonize", "no", "--logfile", join(dir, `${port}.log`),
      ], { stdio: "ignore" });
      processes.push(child);
    }
    for (const port of ports) {
      await waitFor(async () => (await run("redis-cli", ["-p", String(port), "ping"])).stdout.trim() === "PONG", 10_000, `redis on ${port}`);
    }
    await run("redis-cli", ["--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", "0", "--cluster-yes"], { timeout: 20_000 });
    for (const port of ports) {
      await waitFor(async () => (await run("redis-cli", ["-p", String(port), "cluster", "info"])).stdout.includes("cluster_state:ok"), 20_000, `cluster state on ${port}`);
    }
    return { nodes: ports.map((p) => `127.0.0.1:${p}`), stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
