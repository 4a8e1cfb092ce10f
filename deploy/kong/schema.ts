import { DataPlaneConfigError, isTaskCode, readControlPlaneTls } from "../../data-plane/config.js";
import type { ControlPlaneTls } from "../../data-plane/control-plane-client.js";

/** One field of a Kong plugin schema (Kong's schema DSL, as the JavaScript PDK passes it on). */
export interface SchemaField {
  readonly type: "string" | "integer" | "boolean";
  readonly required?: boolean;
  readonly default?: string | number | boolean;
  readonly one_of?: readonly string[];
  readonly between?: readonly [number, number];
}

/**
 * The plugin's `config` record, in Kong's schema DSL: a list of one-key
 * objects, as kong-js-pluginserver expects. Kong validates a plugin's config
 * against it and fills in the defaults before the plugin sees it.
 */
export const Schema: ReadonlyArray<Readonly<Record<string, SchemaField>>> = [
  // host:port of the control plane's gRPC endpoint (ADMISSION_GRPC_PORT).
  { control_plane_address: { type: "string", required: true, default: "admission-control-plane:50051" } },
  // Deadline of Admit; of Settle.
  { admit_timeout_ms: { type: "integer", default: 2_000, between: [10, 600_000] } },
  { settle_timeout_ms: { type: "integer", default: 5_000, between: [10, 600_000] } },
  // Task when the request has no x-llm-task header; unset: such a request gets a 400.
  { default_task: { type: "string" } },
  // Control plane unreachable: deny with 503 (FAIL_CLOSED) or forward unmetered (FAIL_OPEN).
  { failure_policy: { type: "string", default: "FAIL_CLOSED", one_of: ["FAIL_CLOSED", "FAIL_OPEN"] } },
  // TLS to the control plane (system roots, or tls_ca_file's PEM bundle); mTLS with a client
  // certificate and key; tls_server_name when the certificate does not carry the address's host.
  { tls: { type: "boolean", default: false } },
  { tls_ca_file: { type: "string" } },
  { tls_cert_file: { type: "string" } },
  { tls_key_file: { type: "string" } },
  { tls_server_name: { type: "string" } },
  // Request bodies above this are answered 413 without being tokenized.
  { max_body_bytes: { type: "integer", default: 4 * 1024 * 1024, between: [1, 1024 * 1024 * 1024] } },
];

export interface PluginConfig {
  readonly control_plane_address: string;
  readonly admit_timeout_ms: number;
  readonly settle_timeout_ms: number;
  readonly default_task: string;
  readonly failure_policy: "FAIL_CLOSED" | "FAIL_OPEN";
  /** From tls and tls_*: the files read once; undefined: plaintext. */
  readonly tls: ControlPlaneTls | undefined;
  readonly max_body_bytes: number;
}

export class PluginConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PluginConfigError";
  }
}

const fields = new Map(Schema.map((f) => Object.entries(f)[0]!));

/**
 * The config Kong passes (validated, defaults filled, unset fields null), or a
 * partial one (tests): defaults from the Schema, each value checked against
 * its field the way Kong would; keys Kong adds (`__seq__`...) are ignored.
 * Throws PluginConfigError naming the field.
 */
export function pluginConfig(raw: Record<string, unknown> = {}): PluginConfig {
  const value = (name: string): unknown => {
    const field = fields.get(name)!;
    const v = raw[name] ?? field.default ?? null;
    if (v === null) {
      if (field.required) throw new PluginConfigError(`config.${name} is required`);
      return null;
    }
    const ok = field.type === "integer" ? Number.isSafeInteger(v) : typeof v === field.type;
    if (!ok) throw new PluginConfigError(`config.${name} must be ${field.type === "integer" ? "an integer" : `a ${field.type}`}`);
    if (field.one_of && !field.one_of.includes(v as string)) throw new PluginConfigError(`config.${name} must be one of ${field.one_of.join(", ")}`);
    if (field.between && ((v as number) < field.between[0] || (v as number) > field.between[1])) {
      throw new PluginConfigError(`config.${name} must be between ${field.between[0]} and ${field.between[1]}`);
    }
    return v;
  };
  const defaultTask = (value("default_task") as string | null) ?? "";
  if (defaultTask && !isTaskCode(defaultTask)) throw new PluginConfigError(`config.default_task: "${defaultTask}" is not a task code (1-64 letters, digits, "_", "-", ".")`);
  const address = value("control_plane_address") as string;
  if (!/^[^\s:]+:\d{1,5}$|^\[[0-9a-fA-F:.]+\]:\d{1,5}$/.test(address)) throw new PluginConfigError(`config.control_plane_address: "${address}" is not host:port`);
  let tls: ControlPlaneTls | undefined;
  try {
    const text = (name: string) => (value(name) as string | null) ?? undefined;
    tls = readControlPlaneTls(
      { enabled: value("tls") as boolean, caFile: text("tls_ca_file"), certFile: text("tls_cert_file"), keyFile: text("tls_key_file"), serverName: text("tls_server_name") },
      { enabled: "config.tls", caFile: "config.tls_ca_file", certFile: "config.tls_cert_file", keyFile: "config.tls_key_file", serverName: "config.tls_server_name" },
    );
  } catch (err) {
    if (err instanceof DataPlaneConfigError) throw new PluginConfigError(err.message);
    throw err;
  }
  return {
    control_plane_address: address,
    admit_timeout_ms: value("admit_timeout_ms") as number,
    settle_timeout_ms: value("settle_timeout_ms") as number,
    default_task: defaultTask,
    failure_policy: value("failure_policy") as PluginConfig["failure_policy"],
    tls,
    max_body_bytes: value("max_body_bytes") as number,
  };
}
