import { readFileSync } from "node:fs";
import { isTaskCode } from "../../data-plane/config.js";
/**
 * The plugin's `config` record, in Kong's schema DSL: a list of one-key
 * objects, as kong-js-pluginserver expects. Kong validates a plugin's config
 * against it and fills in the defaults before the plugin sees it.
 */
export const Schema = [
    // host:port of the control plane's gRPC endpoint (ADMISSION_GRPC_PORT).
    { control_plane_address: { type: "string", required: true, default: "admission-control-plane:50051" } },
    // Deadline of Admit; of Settle.
    { admit_timeout_ms: { type: "integer", default: 2_000, between: [10, 600_000] } },
    { settle_timeout_ms: { type: "integer", default: 5_000, between: [10, 600_000] } },
    // Task when the request has no x-llm-task header; unset: such a request gets a 400.
    { default_task: { type: "string" } },
    // Control plane unreachable: deny with 503 (FAIL_CLOSED) or forward unmetered (FAIL_OPEN).
    { failure_policy: { type: "string", default: "FAIL_CLOSED", one_of: ["FAIL_CLOSED", "FAIL_OPEN"] } },
    // TLS to the control plane (system roots, or tls_ca_file's PEM bundle).
    { tls: { type: "boolean", default: false } },
    { tls_ca_file: { type: "string" } },
    // Request bodies above this are answered 413 without being tokenized.
    { max_body_bytes: { type: "integer", default: 4 * 1024 * 1024, between: [1, 1024 * 1024 * 1024] } },
];
export class PluginConfigError extends Error {
    constructor(message) {
        super(message);
        this.name = "PluginConfigError";
    }
}
const fields = new Map(Schema.map((f) => Object.entries(f)[0]));
/**
 * The config Kong passes (validated, defaults filled, unset fields null), or a
 * partial one (tests): defaults from the Schema, each value checked against
 * its field the way Kong would; keys Kong adds (`__seq__`...) are ignored.
 * Throws PluginConfigError naming the field.
 */
export function pluginConfig(raw = {}) {
    const value = (name) => {
        const field = fields.get(name);
        const v = raw[name] ?? field.default ?? null;
        if (v === null) {
            if (field.required)
                throw new PluginConfigError(`config.${name} is required`);
            return null;
        }
        const ok = field.type === "integer" ? Number.isSafeInteger(v) : typeof v === field.type;
        if (!ok)
            throw new PluginConfigError(`config.${name} must be ${field.type === "integer" ? "an integer" : `a ${field.type}`}`);
        if (field.one_of && !field.one_of.includes(v))
            throw new PluginConfigError(`config.${name} must be one of ${field.one_of.join(", ")}`);
        if (field.between && (v < field.between[0] || v > field.between[1])) {
            throw new PluginConfigError(`config.${name} must be between ${field.between[0]} and ${field.between[1]}`);
        }
        return v;
    };
    const defaultTask = value("default_task") ?? "";
    if (defaultTask && !isTaskCode(defaultTask))
        throw new PluginConfigError(`config.default_task: "${defaultTask}" is not a task code (1-64 letters, digits, "_", "-", ".")`);
    const address = value("control_plane_address");
    if (!/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:.]+\]:\d{1,5}$/.test(address))
        throw new PluginConfigError(`config.control_plane_address: "${address}" is not host:port`);
    const caFile = value("tls_ca_file");
    let caPem = "";
    if (caFile) {
        try {
            caPem = readFileSync(caFile, "utf8");
        }
        catch (err) {
            throw new PluginConfigError(`config.tls_ca_file: cannot read ${caFile} (${err.code ?? String(err)})`);
        }
    }
    return {
        control_plane_address: address,
        admit_timeout_ms: value("admit_timeout_ms"),
        settle_timeout_ms: value("settle_timeout_ms"),
        default_task: defaultTask,
        failure_policy: value("failure_policy"),
        tls: value("tls"),
        tls_ca_pem: caPem,
        max_body_bytes: value("max_body_bytes"),
    };
}
//# sourceMappingURL=schema.js.map