export const phaseOrder = ["rewrite", "access", "response", "log"];
/** What Kong saw and did for one request. */
export class KongRequest {
    request;
    calls = [];
    ctxShared = new Map();
    phase = "rewrite";
    /** What the service (provider) was sent; undefined when it was not called. */
    serviceRequest;
    /** The request to the service as the plugins shape it (kong.service.request.*). */
    upstream;
    serviceResponse;
    /** The answer sent to the client. */
    response = { status: 0, headers: new Map(), body: "", source: undefined };
    exited = false;
    failing;
    headers;
    constructor(request) {
        this.request = request;
        this.headers = new Map(Object.entries(request.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v]));
        this.upstream = { method: request.method ?? "POST", path: request.path, headers: new Map(this.headers), body: request.body ?? "" };
    }
    get exitedEarly() {
        return this.exited;
    }
    /** Calls recorded in one phase, by Lua function name. */
    methodsIn(phase) {
        return this.calls.filter((c) => c.phase === phase).map((c) => c.method);
    }
    /** The `kong` object for the current phase, as the plugin server builds it. */
    pdk() {
        return bridge("kong", (method, args) => this.call(method, args));
    }
    async call(method, args) {
        const phase = this.phase;
        this.calls.push({ phase, method, args });
        await new Promise((resolve) => setImmediate(resolve)); // an RPC round trip
        const fn = this.functions[method];
        if (!fn)
            throw new Error(`PDK method ${method} failed: function ${method} is not a valid PDK function`);
        if (!fn.phases.includes(phase))
            throw new Error(`PDK method ${method} failed: function cannot be called in ${phase} phase`);
        if (method === this.failing)
            throw new Error(`PDK method ${method} failed: injected failure`);
        return fn.run(...args);
    }
    /** The Lua PDK functions served, with the phases Kong documents for them (log: only what the bridge saves for its timer). */
    functions = {
        "kong.request.get_header": { phases: ["rewrite", "access", "response", "log"], run: (name) => this.headers.get(name.toLowerCase()) ?? null },
        "kong.request.get_method": { phases: ["rewrite", "access", "response"], run: () => this.request.method ?? "POST" },
        "kong.request.get_path": { phases: ["rewrite", "access", "response"], run: () => this.request.path },
        "kong.request.get_raw_body": { phases: ["rewrite", "access", "response"], run: () => this.request.body ?? "" },
        "kong.response.exit": {
            phases: ["rewrite", "access"],
            run: (status, body, headers) => {
                if (!Number.isInteger(status) || status < 100 || status > 599)
                    throw new Error("PDK method kong.response.exit failed: code must be a number between 100 and 599");
                this.exited = true;
                this.response.status = status;
                this.response.body = body ?? "";
                this.response.source = "exit";
                for (const [k, v] of Object.entries(headers ?? {}))
                    this.response.headers.set(k.toLowerCase(), String(v));
                return null;
            },
        },
        "kong.response.set_headers": {
            phases: ["rewrite", "access", "response"],
            run: (headers) => {
                for (const [k, v] of Object.entries(headers))
                    this.response.headers.set(k.toLowerCase(), String(v));
                return null;
            },
        },
        "kong.response.clear_header": { phases: ["rewrite", "access", "response"], run: (name) => (this.response.headers.delete(name.toLowerCase()), null) },
        "kong.response.get_status": { phases: ["response", "log"], run: () => this.response.status },
        "kong.response.get_source": { phases: ["response", "log"], run: () => this.response.source ?? "service" },
        "kong.service.request.set_headers": {
            phases: ["rewrite", "access"],
            run: (headers) => {
                for (const [k, v] of Object.entries(headers))
                    this.upstream.headers.set(k.toLowerCase(), String(v));
                return null;
            },
        },
        "kong.service.request.clear_header": { phases: ["rewrite", "access"], run: (name) => (this.upstream.headers.delete(name.toLowerCase()), null) },
        "kong.service.request.set_raw_body": {
            phases: ["rewrite", "access"],
            run: (body) => {
                if (typeof body !== "string")
                    throw new Error("PDK method kong.service.request.set_raw_body failed: body must be a string");
                this.upstream.body = body;
                this.upstream.headers.set("content-length", String(Buffer.byteLength(body)));
                return null;
            },
        },
        "kong.service.response.get_status": { phases: ["response"], run: () => this.serviceResponse?.status ?? null },
        "kong.service.response.get_header": { phases: ["response"], run: (name) => this.serviceResponse?.headers.get(name.toLowerCase()) ?? null },
        "kong.service.response.get_raw_body": { phases: ["response"], run: () => this.serviceResponse?.body ?? null },
        "kong.ctx.shared.get": { phases: phaseOrder, run: (key) => this.ctxShared.get(key) ?? null },
        "kong.ctx.shared.set": { phases: phaseOrder, run: (key, value) => (this.ctxShared.set(key, value), null) },
        "kong.log.err": { phases: phaseOrder, run: () => null },
        "kong.log.warn": { phases: phaseOrder, run: () => null },
        "kong.log.notice": { phases: phaseOrder, run: () => null },
        "kong.log.info": { phases: phaseOrder, run: () => null },
        "kong.log.debug": { phases: phaseOrder, run: () => null },
    };
    /** One request through Kong with the plugin, in Kong's phase order. */
    async run(plugin, options) {
        this.failing = options.failing;
        await this.runPhase(plugin, "rewrite");
        if (!this.exited)
            await this.runPhase(plugin, "access");
        if (!this.exited && options.laterPluginExit) {
            this.exited = true;
            Object.assign(this.response, { status: options.laterPluginExit.status, body: options.laterPluginExit.body, source: "exit" });
        }
        if (!this.exited) {
            await this.proxy(options.serviceUrl);
            if (this.response.source === "service")
                await this.runPhase(plugin, "response");
        }
        for (let i = 0; i < (options.logRuns ?? 1); i++)
            await this.runPhase(plugin, "log");
        if (options.concurrentLogRuns) {
            this.phase = "log";
            await Promise.all(Array.from({ length: options.concurrentLogRuns }, () => plugin.log?.(this.pdk())));
        }
        return this;
    }
    /** A phase handler's exception is logged by the plugin server and the request goes on. */
    async runPhase(plugin, phase) {
        this.phase = phase;
        const handler = plugin[phase];
        if (typeof handler !== "function")
            return;
        await handler.call(plugin, this.pdk());
    }
    /** Kong's buffered proxying: the whole answer is read before the response phase; an unreachable service is Kong's own 502. */
    async proxy(serviceUrl) {
        const req = { ...this.upstream, headers: new Map(this.upstream.headers) };
        this.serviceRequest = req;
        try {
            const headers = Object.fromEntries([...req.headers].filter(([k]) => k !== "content-length" && k !== "host"));
            const res = await fetch(new URL(req.path, serviceUrl), { method: req.method, headers, body: req.method === "GET" ? undefined : req.body });
            const body = await res.text();
            this.serviceResponse = { status: res.status, headers: new Map([...res.headers]), body };
            Object.assign(this.response, { status: res.status, body, source: "service" });
            for (const [k, v] of res.headers)
                this.response.headers.set(k, v);
        }
        catch {
            Object.assign(this.response, { status: 502, body: JSON.stringify({ message: "An invalid response was received from the upstream server" }), source: "error" });
        }
    }
}
/** The PDK bridge: `kong.a.bC(...)` calls "kong.a.b_c" with the arguments. */
function bridge(prefix, call) {
    const fn = (...args) => call(prefix, args);
    return new Proxy(fn, {
        get: (_target, name) => {
            if (typeof name !== "string" || name === "then")
                return undefined;
            return bridge(`${prefix}.${name.replace(/[a-z][A-Z]/g, (s) => `${s[0]}_${s[1].toLowerCase()}`)}`, call);
        },
    });
}
//# sourceMappingURL=fake-kong.js.map