import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { adminToken } from "./control-plane.js";
import { admissionClient, policyClient } from "./grpc-clients.js";
const controlPlaneJs = fileURLToPath(new URL("../../control-plane/main.js", import.meta.url));
const dataPlaneJs = fileURLToPath(new URL("../../data-plane/main.js", import.meta.url));
/** Starts `node dist/control-plane/main.js` as its own process on ephemeral ports (or ADMISSION_GRPC_PORT/ADMISSION_HTTP_PORT from env). */
export async function startReplica(env) {
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
/** Starts `node dist/data-plane/main.js` as its own process (PROXY_PORT=0 unless env sets it). */
export async function startDataPlaneProcess(env) {
    const { child, match } = await spawnService(dataPlaneJs, { PROXY_PORT: "0", PROXY_HOST: "127.0.0.1", LOG_LEVEL: "warn", ...env }, /data plane: http:\/\/localhost:(\d+)\/v1/);
    const port = Number(match[1]);
    return { process: child, port, url: `http://127.0.0.1:${port}`, stop: (signal = "SIGTERM") => stopChild(child, signal) };
}
/** Spawns a node script and waits for the line on stderr that says where it listens; keeps what it writes. */
async function spawnService(script, env, ready) {
    const child = spawn(process.execPath, [script], { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    const keep = (chunk) => {
        if (output.length < 4 * 1024 * 1024)
            output += chunk.toString();
    };
    child.stdout.on("data", keep);
    child.stderr.on("data", keep);
    let stderr = "";
    const match = await new Promise((resolve, reject) => {
        const timer = setTimeout(() => (child.kill("SIGKILL"), reject(new Error(`${script} did not start: ${stderr}`))), 30_000);
        child.stderr.on("data", (chunk) => {
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
async function stopChild(child, signal) {
    if (child.exitCode !== null || child.signalCode !== null)
        return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill(signal);
    await exited;
}
//# sourceMappingURL=replicas.js.map