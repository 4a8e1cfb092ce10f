import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { adminToken } from "./control-plane.js";
import { admissionClient, policyClient } from "./grpc-clients.js";

const controlPlaneJs = fileURLToPath(new URL("../../control-plane/main.js", import.meta.url));
const dataPlaneJs = fileURLToPath(new URL("../../data-plane/main.js", import.meta.url));

export interface Replica {
  readonly process: ChildProcess;
  readonly address: string;
  readonly grpcPort: number;
  readonly httpPort: number;
  readonly admission: ReturnType<typeof admissionClient>;
  readonly policy: ReturnType<typeof policyClient>;
  /** What the process wrote to stdout and stderr so far (its log lines; the first 4 MB). */
  output(): string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

export interface DataPlaneProcess {
  readonly process: ChildProcess;
  readonly port: number;
  readonly url: string;
  /** Its /metrics, on its own listener. */
  readonly metricsUrl: string;
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** Starts `node dist/control-plane/main.js` as its own process on ephemeral ports (or ADMISSION_GRPC_PORT/ADMISSION_HTTP_PORT from env). */
export async function startReplica(env: Record<string, string>): Promise<Replica> {
  const { child, match, output } = await spawnService(controlPlaneJs, {
    ADMISSION_GRPC_PORT: "0", ADMISSION_HTTP_PORT: "0", ADMISSION_GRPC_HOST: "127.0.0.1", ADMISSION_ADMIN_TOKEN: adminToken, ADMISSION_DEMO: "0", LOG_LEVEL: "warn", ...env,
  }, /gRPC on :(\d+), metrics and health on :(\d+)/);
  const grpcPort = Number(match[1]);
  const address = `127.0.0.1:${grpcPort}`;
  const admission = admissionClient(address);
  const policy = policyClient(address);
  return {
    process: child, address, grpcPort, httpPort: Number(match[2]), admission, policy, output,
    stop: async (signal = "SIGTERM") => {
      admission.close();
      policy.close();
      await stopChild(child, signal);
    },
  };
}

/** Starts `node dist/data-plane/main.js` as its own process (PROXY_PORT=0 and PROXY_METRICS_PORT=0 unless env sets them). */
export async function startDataPlaneProcess(env: Record<string, string>): Promise<DataPlaneProcess> {
  const { child, match } = await spawnService(dataPlaneJs, { PROXY_PORT: "0", PROXY_HOST: "127.0.0.1", PROXY_METRICS_PORT: "0", LOG_LEVEL: "warn", ...env }, /data plane: http:\/\/localhost:(\d+)\/v1 .*; metrics on (http:\/\/\S+\/metrics)/);
  const port = Number(match[1]);
  return { process: child, port, url: `http://127.0.0.1:${port}`, metricsUrl: match[2]!, stop: (signal = "SIGTERM") => stopChild(child, signal) };
}

/** Spawns a node script and waits for the line on stderr that says where it listens; keeps what it writes. */
async function spawnService(script: string, env: Record<string, string>, ready: RegExp): Promise<{ child: ChildProcess; match: RegExpExecArray; output: () => string }> {
  const child = spawn(process.execPath, [script], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  const keep = (chunk: Buffer) => {
    if (output.length < 4 * 1024 * 1024) output += chunk.toString();
  };
  child.stdout!.on("data", keep);
  child.stderr!.on("data", keep);
  let stderr = "";
  const match = await new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => (child.kill("SIGKILL"), reject(new Error(`${script} did not start: ${stderr}`))), 30_000);
    child.stderr!.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
      const m = ready.exec(stderr);
      if (m) {
        clearTimeout(timer);
        resolve(m);
      }
    });
    child.once("exit", (code) => (clearTimeout(timer), reject(new Error(`${script} exited with ${code}: ${stderr}`))));
  });
  return { child, match, output: () => output };
}

async function stopChild(child: ChildProcess, signal: NodeJS.Signals): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  child.kill(signal);
  await exited;
}
