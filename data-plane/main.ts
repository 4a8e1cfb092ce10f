import { DataPlaneConfigError, loadDataPlaneConfig } from "./config.js";
import { startDataPlane } from "./server.js";

/** `npm run data-plane`: the proxy alone, in front of the providers of PROVIDERS_FILE. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadDataPlaneConfig(process.env);
  } catch (err) {
    if (err instanceof DataPlaneConfigError || err instanceof SyntaxError) {
      process.stderr.write(`configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  if (!config.providers) {
    process.stderr.write("configuration error: PROVIDERS_FILE is required (npm start runs the built-in mock provider)\n");
    process.exit(2);
  }
  const dp = await startDataPlane(config, { providers: config.providers });
  process.stderr.write(`data plane: http on :${dp.port}, control plane at ${config.controlPlaneAddr}\n`);
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.once(signal, () => void dp.close().then(() => process.exit(0)));
}

main().catch((err) => {
  process.stderr.write(`data plane failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
