import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { startControlPlane } from "../../control-plane/app.js";
import { defaultControlPlaneConfig } from "../../control-plane/config.js";
import { admissionClient, policyClient } from "./grpc-clients.js";
import { seedPgliteDir } from "./pglite-template.js";
export const adminToken = "test-admin-token-0123456789";
export const admin = { authorization: `Bearer ${adminToken}` };
/** A real control plane on ephemeral ports with PGlite in a temp dir (or the given one). */
export async function startTestControlPlane(options = {}) {
    const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), "adm-cp-"));
    const usesPglite = !options.config?.databaseUrl && options.config?.dataDir === undefined;
    if (usesPglite)
        await seedPgliteDir(dataDir);
    const config = {
        ...defaultControlPlaneConfig,
        grpcHost: "127.0.0.1",
        grpcPort: 0,
        httpPort: 0,
        adminToken,
        dataDir,
        spoolDir: join(dataDir, "spool"),
        logLevel: "silent",
        shutdownGraceMs: 2_000,
        ...options.config,
    };
    const cp = await startControlPlane(config, { logger: pino({ level: process.env.TEST_LOG_LEVEL ?? "silent" }), ...options.deps });
    const address = `127.0.0.1:${cp.grpcPort}`;
    const admission = admissionClient(address);
    const policy = policyClient(address);
    let stopped = false;
    const stop = async () => {
        if (stopped)
            return;
        stopped = true;
        admission.close();
        policy.close();
        await cp.stop();
    };
    return {
        cp, address, admission, policy, dataDir, stop,
        close: async () => {
            await stop();
            if (!options.dataDir)
                rmSync(dataDir, { recursive: true, force: true });
        },
    };
}
//# sourceMappingURL=control-plane.js.map