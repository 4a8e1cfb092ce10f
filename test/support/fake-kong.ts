import type { KongPdk } from "../../deploy/kong/pdk.js";

/**
 * A recording fake of Kong for a plugin of kong-js-pluginserver.
 *
 * The `kong` object each phase receives is built like the real PDK bridge
 * (kong-pdk's pdk.js): any property path is a function, its camelCase name
 * turned into the Lua PDK's (`kong.request.getRawBody` calls
 * `kong.request.get_raw_body`), every call asynchronous. Kong's side answers
 * from the table below — the documented Lua PDK functions the plugin may use,
 * each with the phases the PDK documents for it; a function not in the table,
 * or called in a phase it is not available in, fails the way the real bridge
 * reports a Lua error ("PDK method ... failed: ..."). Every call is recorded.
 *
 * One request runs in Kong's order: (rewrite) → access → the service is
 * called (buffered, since the plugin has a response handler) → response →
 * log. A `kong.response.exit` in access ends the request: the service is not
 * called, response is skipped, log runs. The log phase runs in a timer after
 * the answer was sent, on saved request data: only the context, request and
 * response headers, the response status and source, and logging are served
 * there, as Kong's plugin-server bridge does.
 */

export type Phase = "rewrite" | "access" | "response" | "log";
export const phaseOrder: readonly Phase[] = ["rewrite", "access", "response", "log"];

export interface RecordedCall {
  readonly phase: Phase;
  /** The Lua PDK function, e.g. "kong.service.request.set_raw_body". */
  readonly method: string;
  readonly args: readonly unknown[];
}

export interface ClientRequest {
  readonly method?: string;
  readonly path: string;
  readonly headers?: Record<string, string>;
  readonly body?: string;
}

export interface RunOptions {
  /** Base URL of the Kong service (the provider): the request goes to base + path. */
  readonly serviceUrl: string;
  /** A plugin of lower priority ends the request after this one's access phase (request-termination, say). */
  readonly laterPluginExit?: { status: number; body: string };
  /** Run the log phase this many times one after the other (Kong runs it once). */
  readonly logRuns?: number;
  /** Run the log phase this many times at once. */
  readonly concurrentLogRuns?: number;
  /** A Lua PDK function that fails (a Lua error) whenever it is called. */
  readonly failing?: string;
}

export interface PluginInstance {
  access?(kong: KongPdk): Promise<void>;
  rewrite?(kong: KongPdk): Promise<void>;
  response?(kong: KongPdk): Promise<void>;
  log?(kong: KongPdk): Promise<void>;
}

type Source = "service" | "exit" | "error";

/** What Kong saw and did for one request. */
export class KongRequest {
  readonly calls: RecordedCall[] = [];
  readonly ctxShared = new Map<string, unknown>();
  phase: Phase = "rewrite";
  /** What the service (provider) was sent; undefined when it was not called. */
  serviceRequest: { method: string; path: string; headers: Map<string, string>; body: string } | undefined;
  /** The request to the service as the plugins shape it (kong.service.request.*). */
  private readonly upstream: { method: string; path: string; headers: Map<string, string>; body: string };
  serviceResponse: { status: number; headers: Map<string, string>; body: string } | undefined;
  /** The answer sent to the client. */
  readonly response = { status: 0, headers: new Map<string, string>(), body: "", source: undefined as Source | undefined };
  private exited = false;
  private failing: string | undefined;
  private readonly headers: Map<string, string>;

  constructor(readonly request: ClientRequest) {
    this.headers = new Map(Object.entries(request.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
    this.upstream = { method: request.method ?? "POST", path: request.path, headers: new Map(this.headers), body: request.body ?? "" };
  }

  get exitedEarly(): boolean {
    return this.exited;
  }

  /** Calls recorded in one phase, by Lua function name. */
  methodsIn(phase: Phase): string[] {
    return this.calls.filter((c) => c.phase === phase).map((c) => c.method);
  }

  /** The `kong` object for the current phase, as the plugin server builds it. */
  pdk(): KongPdk {
    return bridge("kong", (method, args) => this.call(method, args)) as unknown as KongPdk;
  }

  private async call(method: string, args: unknown[]): Promise<unknown> {
    const phase = this.phase;
    this.calls.push({ phase, method, args });
    await new Promise((resolve) => setImmediate(resolve)); // an RPC round trip
    const fn = this.functions[method];
    if (!fn) throw new Error(`PDK method ${method} failed: function ${method} is not a valid PDK function`);
    if (!fn.phases.includes(phase)) throw new Error(`PDK method ${method} failed: function cannot be called in ${phase} phase`);
    if (method === this.failing) throw new Error(`PDK method ${method} failed: injected failure`);
    return fn.run(...args);
  }

  /** The Lua PDK functions served, with the phases Kong documents for them (log: only what the bridge saves for its timer). */
  private readonly functions: Record<string, { phases: readonly Phase[]; run: (...args: any[]) => unknown }> = {
    "kong.request.get_header": { phases: ["rewrite", "access", "response", "log"], run: (name: string) => this.headers.get(name.toLowerCase()) ?? null },
    "kong.request.get_method": { phases: ["rewrite", "access", "response"], run: () => this.request.method ?? "POST" },
    "kong.request.get_path": { phases: ["rewrite", "access", "response"], run: () => this.request.path },
    "kong.request.get_raw_body": { phases: ["rewrite", "access", "response"], run: () => this.request.body ?? "" },

    "kong.response.exit": {
      phases: ["rewrite", "access"],
      run: (status: number, body?: string, headers?: Record<string, string>) => {
        if (!Number.isInteger(status) || status < 100 || status > 599) throw new Error("PDK method kong.response.exit failed: code must be a number between 100 and 599");
        this.exited = true;
        this.response.status = status;
        this.response.body = body ?? "";
        this.response.source = "exit";
        for (const [k, v] of Object.entries(headers ?? {})) this.response.headers.set(k.toLowerCase(), String(v));
        return null;
      },
    },
    "kong.response.set_headers": {
      phases: ["rewrite", "access", "response"],
      run: (headers: Record<string, string>) => {
        for (const [k, v] of Object.entries(headers)) this.response.headers.set(k.toLowerCase(), String(v));
        return null;
      },
    },
    "kong.response.clear_header": { phases: ["rewrite", "access", "response"], run: (name: string) => (this.response.headers.delete(name.toLowerCase()), null) },
    "kong.response.get_status": { phases: ["response", "log"], run: () => this.response.status },
    "kong.response.get_source": { phases: ["response", "log"], run: () => this.response.source ?? "service" },

    "kong.service.request.set_headers": {
      phases: ["rewrite", "access"],
      run: (headers: Record<string, string>) => {
        for (const [k, v] of Object.entries(headers)) this.upstream.headers.set(k.toLowerCase(), String(v));
        return null;
      },
    },
    "kong.service.request.clear_header": { phases: ["rewrite", "access"], run: (name: string) => (this.upstream.headers.delete(name.toLowerCase()), null) },
    "kong.service.request.set_raw_body": {
      phases: ["rewrite", "access"],
      run: (body: string) => {
        if (typeof body !== "string") throw new Error("PDK method kong.service.request.set_raw_body failed: body must be a string");
        this.upstream.body = body;
        this.upstream.headers.set("content-length", String(Buffer.byteLength(body)));
        return null;
      },
    },

    "kong.service.response.get_status": { phases: ["response"], run: () => this.serviceResponse?.status ?? null },
    "kong.service.response.get_header": { phases: ["response"], run: (name: string) => this.serviceResponse?.headers.get(name.toLowerCase()) ?? null },
    "kong.service.response.get_raw_body": { phases: ["response"], run: () => this.serviceResponse?.body ?? null },

    "kong.ctx.shared.get": { phases: phaseOrder, run: (key: string) => this.ctxShared.get(key) ?? null },
    "kong.ctx.shared.set": { phases: phaseOrder, run: (key: string, value: unknown) => (this.ctxShared.set(key, value), null) },

    "kong.log.err": { phases: phaseOrder, run: () => null },
    "kong.log.warn": { phases: phaseOrder, run: () => null },
    "kong.log.notice": { phases: phaseOrder, run: () => null },
    "kong.log.info": { phases: phaseOrder, run: () => null },
    "kong.log.debug": { phases: phaseOrder, run: () => null },
  };

  /** One request through Kong with the plugin, in Kong's phase order. */
  async run(plugin: PluginInstance, options: RunOptions): Promise<this> {
    this.failing = options.failing;
    await this.runPhase(plugin, "rewrite");
    if (!this.exited) await this.runPhase(plugin, "access");
    if (!this.exited && options.laterPluginExit) {
      this.exited = true;
      Object.assign(this.response, { status: options.laterPluginExit.status, body: options.laterPluginExit.body, source: "exit" });
    }
    if (!this.exited) {
      await this.proxy(options.serviceUrl);
      if (this.response.source === "service") await this.runPhase(plugin, "response");
    }
    for (let i = 0; i < (options.logRuns ?? 1); i++) await this.runPhase(plugin, "log");
    if (options.concurrentLogRuns) {
      this.phase = "log";
      await Promise.all(Array.from({ length: options.concurrentLogRuns }, () => plugin.log?.(this.pdk())));
    }
    return this;
  }

  /** A phase handler's exception is logged by the plugin server and the request goes on. */
  private async runPhase(plugin: PluginInstance, phase: Phase): Promise<void> {
    this.phase = phase;
    const handler = plugin[phase];
    if (typeof handler !== "function") return;
    await handler.call(plugin, this.pdk());
  }

  /** Kong's buffered proxying: the whole answer is read before the response phase; an unreachable service is Kong's own 502. */
  private async proxy(serviceUrl: string): Promise<void> {
    const req = { ...this.upstream, headers: new Map(this.upstream.headers) };
    this.serviceRequest = req;
    try {
      const headers = Object.fromEntries([...req.headers].filter(([k]) => k !== "content-length" && k !== "host"));
      const res = await fetch(new URL(req.path, serviceUrl), { method: req.method, headers, body: req.method === "GET" ? undefined : req.body });
      const body = await res.text();
      this.serviceResponse = { status: res.status, headers: new Map([...res.headers]), body };
      Object.assign(this.response, { status: res.status, body, source: "service" });
      for (const [k, v] of res.headers) this.response.headers.set(k, v);
    } catch {
      Object.assign(this.response, { status: 502, body: JSON.stringify({ message: "An invalid response was received from the upstream server" }), source: "error" });
    }
  }
}

/** The PDK bridge: `kong.a.bC(...)` calls "kong.a.b_c" with the arguments. */
function bridge(prefix: string, call: (method: string, args: unknown[]) => Promise<unknown>): unknown {
  const fn = (...args: unknown[]) => call(prefix, args);
  return new Proxy(fn, {
    get: (_target, name) => {
      if (typeof name !== "string" || name === "then") return undefined;
      return bridge(`${prefix}.${name.replace(/[a-z][A-Z]/g, (s) => `${s[0]}_${s[1]!.toLowerCase()}`)}`, call);
    },
  });
}
