import { startControlPlane } from "./app.js";
import { ConfigError, loadControlPlaneConfig } from "./config.js";
import { CounterStoreMisconfiguredError } from "./counter-store.js";

/** `npm run control-plane`: the control plane alone, configured from the environment. */
async function main(): Promise<void> {
  let config;
  try {
    config = loadControlPlaneConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const cp = await startControlPlane(config);
  // Printed once for the operator, outside the JSON log stream.
  const scheme = config.tls ? (config.tls.clientCaPem ? " (TLS, client certificates required)" : " (TLS)") : "";
  const lines = [`control plane: gRPC on :${cp.grpcPort}, metrics and health on :${cp.httpPort}${scheme}`];
  if (config.adminTokenGenerated) lines.push(`admin token (set ADMISSION_ADMIN_TOKEN to fix it): ${cp.adminToken}`);
  if (cp.demoApiKey) lines.push(`demo API key (tenant "demo", user "demo-user"): ${cp.demoApiKey}`);
  process.stderr.write(`${lines.join("\n")}\n`);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      void cp.stop().then(() => process.exit(0));
    });
  }
}

main().catch((err) => {
  if (err instanceof CounterStoreMisconfiguredError) {
    process.stderr.write(`configuration error: ${err.message}\n`);
    process.exit(2);
  }
  process.stderr.write(`control plane failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
