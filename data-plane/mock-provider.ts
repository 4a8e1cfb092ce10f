import { createServer, type Server } from "node:http";

/**
 * An OpenAI-compatible provider for demos and tests: chat completions
 * (streaming or not), completions and embeddings, deterministic, with usage.
 * The reply is "mock reply" repeated to honour max_tokens (one token per word).
 */
export function startMockProvider(options: { port?: number; host?: string } = {}): Promise<{ server: Server; port: number; baseUrl: string; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      let json: Record<string, any> = {};
      try {
        json = body ? JSON.parse(body) : {};
      } catch {
        res.writeHead(400, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: "invalid JSON" } }));
        return;
      }
      const path = (req.url ?? "").split("?")[0];
      const model = String(json.model ?? "mock");
      const promptTokens = Math.max(1, Math.ceil(JSON.stringify(json.messages ?? json.prompt ?? json.input ?? "").length / 4));
      const words = Math.max(1, Math.min(Number(json.max_tokens ?? json.max_completion_tokens ?? 16), 64));
      const text = Array.from({ length: words }, (_, i) => (i % 2 ? "reply" : "mock")).join(" ");
      const usage = { prompt_tokens: promptTokens, completion_tokens: words, total_tokens: promptTokens + words };
      if (path === "/v1/embeddings") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ object: "list", model, data: [{ object: "embedding", index: 0, embedding: [0.1, 0.2, 0.3] }], usage: { prompt_tokens: promptTokens, total_tokens: promptTokens } }));
        return;
      }
      if (path !== "/v1/chat/completions" && path !== "/v1/completions") {
        res.writeHead(404, { "content-type": "application/json" }).end(JSON.stringify({ error: { message: `no route ${path}` } }));
        return;
      }
      const chat = path === "/v1/chat/completions";
      const id = `mock-${Date.now()}`;
      if (!json.stream) {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({
          id, object: chat ? "chat.completion" : "text_completion", created: Math.floor(Date.now() / 1000), model,
          choices: [chat ? { index: 0, message: { role: "assistant", content: text }, finish_reason: "stop" } : { index: 0, text, finish_reason: "stop" }],
          usage,
        }));
        return;
      }
      res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
      const tokens = text.split(" ");
      tokens.forEach((t, i) => {
        const piece = i === 0 ? t : ` ${t}`;
        res.write(`data: ${JSON.stringify({ id, object: "chat.completion.chunk", model, choices: [chat ? { index: 0, delta: { content: piece } } : { index: 0, text: piece }] })}\n\n`);
      });
      const last: Record<string, unknown> = { id, object: "chat.completion.chunk", model, choices: [] };
      if (json.stream_options?.include_usage) last.usage = usage;
      res.write(`data: ${JSON.stringify(last)}\n\n`);
      res.end("data: [DONE]\n\n");
    });
  });
  return new Promise((resolve) => {
    server.listen(options.port ?? 0, options.host ?? "127.0.0.1", () => {
      const port = (server.address() as { port: number }).port;
      resolve({ server, port, baseUrl: `http://127.0.0.1:${port}/v1`, close: () => new Promise((r) => server.close(() => r())) });
    });
  });
}
