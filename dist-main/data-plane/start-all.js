import { startControlPlane } from "../control-plane/app.js";
import { ConfigError, loadControlPlaneConfig } from "../control-plane/config.js";
import { DataPlaneConfigError, loadDataPlaneConfig } from "./config.js";
import { startDataPlane } from "./server.js";
/** The demo tenant's plan (PRO) allows this task; used when PROXY_DEFAULT_TASK is not set. */
const demoTask = "LLM2_DRAFT";
/** `npm start`: control plane + data plane + the built-in mock provider, embedded defaults, demo bundle. */
async function main() {
    let cpConfig;
    let dpConfig;
    try {
        cpConfig = loadControlPlaneConfig(process.env);
        dpConfig = loadDataPlaneConfig(process.env);
    }
    catch (err) {
        if (err instanceof ConfigError || err instanceof DataPlaneConfigError) {
            process.stderr.write(`configuration error: ${err.message}\n`);
            process.exit(2);
        }
        throw err;
    }
    const cp = await startControlPlane(cpConfig);
    const dp = await startDataPlane({ ...dpConfig, controlPlaneAddr: `127.0.0.1:${cp.grpcPort}`, defaultTask: dpConfig.defaultTask || demoTask });
    const key = cp.demoApiKey ?? "<an API key: ADMISSION_DEMO=0 loads no demo tenant>";
    const base = `http://localhost:${dp.port}/v1`;
    // Printed once for the operator, outside the JSON log stream.
    process.stderr.write(`
control plane: gRPC on :${cp.grpcPort}, metrics/health/Connect on :${cp.httpPort}
data plane:    ${base} (OpenAI-compatible)${dp.mockProvider ? `, in front of the mock provider at ${dp.mockProvider.baseUrl}` : ""}
${cpConfig.adminTokenGenerated ? `admin token:   ${cp.adminToken}\n` : ""}demo API key:  ${key}  (tenant "demo", user "demo-user", plan PRO)

Try it:
  curl -s ${base}/chat/completions -H "authorization: Bearer ${key}" -H 'x-llm-task: ${demoTask}' \\
    -H 'content-type: application/json' -d '{"model":"mock-pro","max_tokens":20,"messages":[{"role":"user","content":"Draft a claim"}]}'

With the openai SDK (npm i openai):
  import OpenAI from "openai";
  const client = new OpenAI({ baseURL: "${base}", apiKey: "${key}", defaultHeaders: { "x-llm-task": "${demoTask}" } });
  const r = await client.chat.completions.create({ model: "mock-pro", messages: [{ role: "user", content: "Draft a claim" }] });
  console.log(r.choices[0].message.content, r.usage);

What it cost (the ledger):
  curl -s localhost:${cp.httpPort}/admission.v1.PolicyService/GetUsage -H "authorization: Bearer ${cp.adminToken}" \\
    -H 'content-type: application/json' -d '{"tenant":"demo","groupBy":["USAGE_GROUP_BY_MODEL"]}'
`);
    for (const signal of ["SIGINT", "SIGTERM"]) {
        process.once(signal, () => void (async () => {
            await dp.close();
            await cp.stop();
            process.exit(0);
        })());
    }
}
main().catch((err) => {
    process.stderr.write(`failed to start: ${err instanceof Error ? err.stack : String(err)}\n`);
    process.exit(1);
});
//# sourceMappingURL=start-all.js.map