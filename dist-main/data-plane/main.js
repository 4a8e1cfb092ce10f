import { DataPlaneConfigError, loadDataPlaneConfig } from "./config.js";
import { startDataPlane } from "./server.js";
/** `npm run data-plane`: the proxy alone, in front of PROVIDERS_FILE's providers (or the built-in mock provider). */
async function main() {
    let config;
    try {
        config = loadDataPlaneConfig(process.env);
    }
    catch (err) {
        if (err instanceof DataPlaneConfigError) {
            process.stderr.write(`configuration error: ${err.message}\n`);
            process.exit(2);
        }
        throw err;
    }
    const dp = await startDataPlane(config);
    const providers = dp.mockProvider ? `the built-in mock provider (${dp.mockProvider.baseUrl})` : config.providers.map((p) => p.name).join(", ");
    // Printed once for the operator, outside the JSON log stream.
    process.stderr.write(`data plane: http://localhost:${dp.port}/v1 in front of ${providers}; control plane at ${config.controlPlaneAddr} (${config.failurePolicy})\n`);
    for (const signal of ["SIGINT", "SIGTERM"])
        process.once(signal, () => void dp.close().then(() => process.exit(0)));
}
main().catch((err) => {
    process.stderr.write(`data plane failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
});
//# sourceMappingURL=main.js.map