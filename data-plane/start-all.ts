import { startControlPlane } from "../control-plane/app.js";
import { ConfigError, loadControlPlaneConfig } from "../control-plane/config.js";
import { loadDataPlaneConfig } from "./config.js";
import { startMockProvider } from "./mock-provider.js";
import { startDataPlane } from "./server.js";

/** `npm start`: control plane + data plane + the mock provider, embedded defaults, demo bundle. */
async function main(): Promise<void> {
  let cpConfig;
  try {
    cpConfig = loadControlPlaneConfig(process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`configuration error: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const cp = await startControlPlane(cpConfig);
  const dpConfig = loadDataPlaneConfig(process.env);
  const mock = dpConfig.providers ? undefined : await startMockProvider({ port: Number(process.env.MOCK_PROVIDER_PORT ?? 0) });
  const providers = dpConfig.providers ?? [{ name: "mock", baseUrl: mock!.baseUrl, apiKey: "" }];
  const dp = await startDataPlane({ ...dpConfig, controlPlaneAddr: `127.0.0.1:${cp.grpcPort}` }, { providers });
  const key = cp.demoApiKey ?? "<an API key>";
  process.stderr.write(`
control plane: gRPC on :${cp.grpcPort}, metrics/health/Connect on :${cp.httpPort}
data plane:    http://localhost:${dp.port}/v1 (OpenAI-compatible)${mock ? `, mock provider on :${mock.port}` : ""}
${cpConfig.adminTokenGenerated ? `admin token:   ${cp.adminToken}\n` : ""}demo API key:  ${key}  (tenant "demo", user "demo-user", plan PRO)

Try it:
  curl -s localhost:${dp.port}/v1/chat/completions -H "authorization: Bearer ${key}" -H 'x-llm-task: LLM2_DRAFT' \\
    -H 'content-type: application/json' -d '{"model":"mock-pro","max_tokens":20,"messages":[{"role":"user","content":"Draft a claim"}]}'

Or with the openai SDK:
  const client = new OpenAI({ baseURL: "http://localhost:${dp.port}/v1", apiKey: "${key}", defaultHeaders: { "x-llm-task": "LLM2_DRAFT" } });
  await client.chat.completions.create({ model: "mock-pro", messages: [{ role: "user", content: "hi" }] });

Usage so far:
  curl -s localhost:${cp.httpPort}/admission.v1.PolicyService/GetUsage -H "authorization: Bearer ${cp.adminToken}" -H 'content-type: application/json' -d '{"tenant":"demo"}'
`);
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => void (async () => {
      await dp.close();
      await cp.stop();
      await mock?.close();
      process.exit(0);
    })());
  }
}

main().catch((err) => {
  process.stderr.write(`failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
