import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { adminToken } from "./control-plane.js";
import { admissionClient, policyClient } from "./grpc-clients.js";

const mainJs = fileURLToPath(new URL("../../control-plane/main.js", import.meta.url));

export interface Replica {
  readonly process: ChildProcess;
  readonly address: string;
  readonly httpPort: number;
  readonly admission: ReturnType<typeof admissionClient>;
  readonly policy: ReturnType<typeof policyClient>;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `node dist/control-plane/main.js` as its own process on ephemeral ports. */
export async function startReplica(env: Record<string, string>): Promise<Replica> {
  const child = spawn(process.execPath, [mainJs], {
    env: { ...process.env, ADMISSION_GRPC_PORT: "0", ADMISSION_HTTP_PORT: "0", ADMISSION_GRPC_HOST: "127.0.0.1", ADMISSION_ADMIN_TOKEN: adminToken, ADMISSION_DEMO: "0", LOG_LEVEL: "warn", ...env },
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  const ports = await new Promise<[number, number]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`replica did not start: ${stderr}`)), 30_000);
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
      const m = /gRPC on :(\d+), metrics and health on :(\d+)/.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve([Number(m[1]), Number(m[2])]);
      }
    });
    child.once("exit", (code) => reject(new Error(`replica exited with ${code}: ${stderr}`)));
  });
  const address = `127.0.0.1:${ports[0]}`;
  const admission = admissionClient(address);
  const policy = policyClient(address);
  return {
    process: child, address, httpPort: ports[1], admission, policy,
    stop: async (signal = "SIGTERM") => {
      admission.close();
      policy.close();
      if (child.exitCode !== null) return;
      const exited = new Promise((r) => child.once("exit", r));
      child.kill(signal);
      await exited;
    },
  };
}
