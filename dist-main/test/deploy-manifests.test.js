import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";
import { test } from "node:test";
import { parseAllDocuments } from "yaml";
import { defaultControlPlaneConfig } from "../control-plane/config.js";
import { loadDataPlaneConfig } from "../data-plane/config.js";
import { pluginConfig, Schema } from "../deploy/kong/schema.js";
const root = new URL("../../", import.meta.url);
const read = (path) => readFileSync(new URL(path, root), "utf8");
const docs = (path) => parseAllDocuments(read(path)).map((d) => {
    assert.equal(d.errors.length, 0, `${path}: ${d.errors.map((e) => e.message).join("; ")}`);
    return d.toJS();
});
/** Environment variables the code reads: from the one config module of each process. */
function knownEnv() {
    const names = new Set();
    for (const file of ["control-plane/config.ts", "data-plane/config.ts"]) {
        for (const m of read(file).matchAll(/env(?:\.([A-Z][A-Z0-9_]+)|\[\s*"([A-Z][A-Z0-9_]+)"\s*\])|"((?:ADMISSION|PROXY)_[A-Z0-9_]+)"/g))
            names.add(m[1] ?? m[2] ?? m[3]);
    }
    return names;
}
const providerKeys = new Set(["OPENAI_API_KEY", "GEMINI_API_KEY", "XAI_API_KEY"]);
const byKind = (all, kind, name) => all.find((d) => d?.kind === kind && (!name || d.metadata?.name === name));
test("Kubernetes: ports, service names, probes and environment agree with the code", () => {
    const known = knownEnv();
    const cp = docs("deploy/k8s/control-plane.yaml");
    const dp = docs("deploy/k8s/data-plane.yaml");
    for (const kind of ["ConfigMap", "Secret", "Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]) {
        assert.ok(byKind(cp, kind), `control plane ${kind}`);
        assert.ok(byKind(dp, kind), `data plane ${kind}`);
    }
    const cpConfig = byKind(cp, "ConfigMap").data;
    const cpSecret = byKind(cp, "Secret").stringData;
    for (const name of [...Object.keys(cpConfig), ...Object.keys(cpSecret)])
        assert.ok(known.has(name), `control plane env ${name} is read by control-plane/config.ts`);
    for (const name of ["DATABASE_URL", "REDIS_URL", "ADMISSION_ADMIN_TOKEN"])
        assert.ok(name in cpSecret, `${name} comes from the Secret`);
    const grpcPort = Number(cpConfig.ADMISSION_GRPC_PORT);
    const httpPort = Number(cpConfig.ADMISSION_HTTP_PORT);
    assert.equal(grpcPort, defaultControlPlaneConfig.grpcPort);
    assert.equal(httpPort, defaultControlPlaneConfig.httpPort);
    const cpPod = byKind(cp, "Deployment").spec.template.spec;
    const cpContainer = cpPod.containers[0];
    assert.deepEqual(cpContainer.ports.map((p) => p.containerPort).sort(), [grpcPort, httpPort].sort());
    assert.equal(cpContainer.readinessProbe.grpc.port, grpcPort, "readiness through grpc.health.v1");
    assert.equal(cpContainer.livenessProbe.httpGet.port, httpPort);
    assert.equal(cpContainer.livenessProbe.httpGet.path, "/healthz");
    assert.ok(cpPod.securityContext.runAsNonRoot);
    assert.ok(cpContainer.volumeMounts.some((v) => cpConfig.ADMISSION_SPOOL_DIR.startsWith(v.mountPath)), "the spool dir is on a mounted volume");
    const cpService = byKind(cp, "Service");
    assert.deepEqual(cpService.spec.ports.map((p) => p.targetPort).sort(), [grpcPort, httpPort].sort());
    assert.equal(byKind(cp, "HorizontalPodAutoscaler").spec.scaleTargetRef.name, byKind(cp, "Deployment").metadata.name);
    const dpConfig = byKind(dp, "ConfigMap").data;
    const dpContainer = byKind(dp, "Deployment").spec.template.spec.containers[0];
    for (const e of dpContainer.env)
        assert.ok(known.has(e.name), `data plane env ${e.name} is read by data-plane/config.ts`);
    for (const name of Object.keys(byKind(dp, "Secret").stringData))
        assert.ok(providerKeys.has(name), `${name} is a provider key named in providers.json`);
    const [host, port] = dpConfig.CONTROL_PLANE_ADDR.split(":");
    assert.equal(host, cpService.metadata.name, "the data plane dials the control plane's Service");
    assert.equal(Number(port), grpcPort);
    const proxyPort = Number(dpConfig.PROXY_PORT);
    assert.equal(dpContainer.ports[0].containerPort, proxyPort);
    assert.equal(dpContainer.readinessProbe.httpGet.port, proxyPort);
    assert.equal(dpContainer.readinessProbe.httpGet.path, "/readyz");
    assert.equal(byKind(dp, "Service").spec.ports[0].targetPort, proxyPort);
    // The providers file in the ConfigMap is what the data plane will load.
    const providers = JSON.parse(dpConfig["providers.json"]).providers;
    for (const p of providers)
        assert.ok(providerKeys.has(p.apiKeyEnv));
    const loaded = loadDataPlaneConfig({ PROXY_PORT: dpConfig.PROXY_PORT, CONTROL_PLANE_ADDR: dpConfig.CONTROL_PLANE_ADDR, PROXY_FAILURE_POLICY: dpConfig.PROXY_FAILURE_POLICY });
    assert.equal(loaded.port, proxyPort);
});
test("Envoy: ext_authz points at the control plane's gRPC port, fails closed and buffers the body", () => {
    const [envoy] = docs("deploy/envoy/envoy.yaml");
    const hcm = envoy.static_resources.listeners[0].filter_chains[0].filters[0].typed_config;
    const extAuthz = hcm.http_filters.find((f) => f.name === "envoy.filters.http.ext_authz").typed_config;
    assert.equal(extAuthz.transport_api_version, "V3");
    assert.equal(extAuthz.failure_mode_allow, false);
    assert.ok(extAuthz.with_request_body.max_request_bytes > 0);
    assert.ok(extAuthz.grpc_service.timeout);
    const cluster = envoy.static_resources.clusters.find((c) => c.name === extAuthz.grpc_service.envoy_grpc.cluster_name);
    const address = cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address;
    assert.equal(address.address, "admission-control-plane");
    assert.equal(address.port_value, defaultControlPlaneConfig.grpcPort);
    assert.ok(cluster.typed_extension_protocol_options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"].explicit_http_config.http2_protocol_options, "gRPC needs HTTP/2");
    const route = hcm.route_config.virtual_hosts[0].routes[0];
    assert.equal(route.match.prefix, "/v1/");
    assert.ok(route.typed_per_filter_config["envoy.filters.http.ext_authz"].check_settings.context_extensions.task);
});
test("Istio: the extension provider and the CUSTOM policy agree", () => {
    const [mesh] = docs("deploy/istio/mesh-config.yaml");
    const [policy] = docs("deploy/istio/authorization-policy.yaml");
    const provider = mesh.spec.meshConfig.extensionProviders[0];
    assert.equal(policy.spec.action, "CUSTOM");
    assert.equal(policy.spec.provider.name, provider.name);
    assert.equal(provider.envoyExtAuthzGrpc.port, defaultControlPlaneConfig.grpcPort);
    assert.ok(provider.envoyExtAuthzGrpc.service.startsWith("admission-control-plane."));
    assert.equal(typeof provider.envoyExtAuthzGrpc.failOpen, "boolean");
    assert.ok(provider.envoyExtAuthzGrpc.timeout);
});
test("compose and Dockerfiles: known variables, non-root, multi-stage, the right ports", () => {
    const known = knownEnv();
    const [compose] = docs("deploy/compose.yaml");
    for (const service of ["control-plane", "data-plane"]) {
        for (const name of Object.keys(compose.services[service].environment))
            assert.ok(known.has(name) || providerKeys.has(name), `${service}: ${name}`);
    }
    assert.equal(compose.services["data-plane"].environment.CONTROL_PLANE_ADDR, `control-plane:${defaultControlPlaneConfig.grpcPort}`);
    for (const [file, ports] of [["deploy/Dockerfile.control-plane", [50051, 9464]], ["deploy/Dockerfile.data-plane", [8080]]]) {
        const text = read(file);
        assert.equal(text.match(/^FROM /gm)?.length, 2, `${file} is multi-stage`);
        assert.match(text, /^USER node$/m, `${file} runs as non-root`);
        assert.deepEqual(text.match(/^EXPOSE (.*)$/m)[1].split(" ").map(Number), [...ports]);
    }
});
test("Kong: kong.yml's plugin config fits the plugin's Schema; the plugin server runs the built plugin", () => {
    const [kong] = docs("deploy/kong/kong.yml");
    assert.equal(kong._format_version, "3.0");
    const service = kong.services.find((s) => s.plugins?.some((p) => p.name === "llm-admission"));
    assert.ok(service, "a service carries the plugin");
    assert.ok(service.url.startsWith("https://"));
    assert.ok(service.routes.some((r) => r.paths.includes("/v1") && r.strip_path === false), "a route for /v1, path kept");
    const plugin = service.plugins.find((p) => p.name === "llm-admission");
    const fields = new Map(Schema.map((f) => Object.entries(f)[0]));
    for (const [name, value] of Object.entries(plugin.config)) {
        const field = fields.get(name);
        assert.ok(field, `config.${name} is a Schema field`);
        assert.equal(field.type === "integer" ? (Number.isSafeInteger(value) ? "integer" : typeof value) : typeof value, field.type, `config.${name} is a ${field.type}`);
        if (field.one_of)
            assert.ok(field.one_of.includes(value), `config.${name} is one of ${field.one_of}`);
        if (field.between)
            assert.ok(value >= field.between[0] && value <= field.between[1], `config.${name} within ${field.between}`);
    }
    for (const [name, field] of fields)
        if (field.required)
            assert.ok(name in plugin.config || field.default !== undefined, `config.${name} is required`);
    const config = pluginConfig(plugin.config);
    assert.equal(config.failure_policy, "FAIL_CLOSED");
    const [host, port] = config.control_plane_address.split(":");
    assert.equal(host, "admission-control-plane", "the control plane's Service, as Envoy and the data plane dial it");
    assert.equal(Number(port), defaultControlPlaneConfig.grpcPort);
    // The provider's key is added after the plugin (priority 920) removed the client's credential.
    const transformer = service.plugins.find((p) => p.name === "request-transformer");
    assert.ok(transformer.config.add.headers.some((h) => h.toLowerCase().startsWith("authorization:")));
    const conf = Object.fromEntries(read("deploy/kong/kong.conf").split("\n").filter((l) => /^\s*[a-z_]+\s*=/.test(l)).map((l) => {
        const at = l.indexOf("=");
        return [l.slice(0, at).trim(), l.slice(at + 1).trim()];
    }));
    assert.ok(conf.plugins.split(",").map((s) => s.trim()).includes("llm-admission"));
    assert.deepEqual(conf.pluginserver_names.split(",").map((s) => s.trim()), ["js"]);
    const start = conf.pluginserver_js_start_cmd.split(/\s+/);
    const query = conf.pluginserver_js_query_cmd.split(/\s+/);
    const dir = start[start.indexOf("--plugins-directory") + 1];
    assert.ok(start[0].endsWith("/kong-js-pluginserver") && query[0] === start[0]);
    assert.equal(query[query.indexOf("--plugins-directory") + 1], dir);
    assert.ok(query.includes("--dump-all-plugins"));
    assert.equal(`${start[start.indexOf("--kong-prefix") + 1]}/${start[start.indexOf("--sock-name") + 1]}`, conf.pluginserver_js_socket);
    // The directory is where tsc puts the plugin's entry file, whose name is the plugin's name.
    assert.ok(dir.endsWith("/dist/deploy/kong/plugins"), dir);
    assert.ok(existsSync(new URL("deploy/kong/plugins/llm-admission.ts", root)));
    assert.ok(existsSync(new URL("dist/deploy/kong/plugins/llm-admission.js", root)));
    assert.equal(conf.declarative_config.split("/").at(-1), "kong.yml");
});
//# sourceMappingURL=deploy-manifests.test.js.map