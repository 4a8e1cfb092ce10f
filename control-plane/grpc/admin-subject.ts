import { status as Code } from "@grpc/grpc-js";
import type { Principal } from "../credentials.js";
import type { PolicySnapshot } from "../policy/policy-snapshot.js";
import { RpcError } from "../rpc-error.js";

/** A subject an admin names: a tenant, optionally one of its users, or an API key (which names its tenant and user). */
export interface NamedSubject {
  readonly tenant: string;
  readonly user: string;
  readonly keyId: string;
}

/**
 * The principal of a subject an admin names (explain, simulate): an API key is its own
 * principal (tenant, user, task scope); otherwise the tenant and user must exist.
 * NOT_FOUND or INVALID_ARGUMENT naming the field when they do not.
 */
export function adminSubject(req: NamedSubject, snapshot: PolicySnapshot): Principal {
  if (req.keyId) {
    const key = snapshot.apiKeys.get(req.keyId);
    if (!key) throw new RpcError(Code.NOT_FOUND, `api_key "${req.keyId}" not found`);
    if (req.tenant && req.tenant !== key.tenant) throw new RpcError(Code.INVALID_ARGUMENT, `api_key "${key.id}" belongs to tenant "${key.tenant}"`);
    if (req.user && req.user !== key.user) throw new RpcError(Code.INVALID_ARGUMENT, `api_key "${key.id}" belongs to user "${key.user}"`);
    return key.authenticated.principal;
  }
  if (!req.tenant) throw new RpcError(Code.INVALID_ARGUMENT, "tenant or key_id is required");
  if (!snapshot.tenants.has(req.tenant)) throw new RpcError(Code.NOT_FOUND, `tenant "${req.tenant}" not found`);
  if (req.user && !snapshot.user(req.tenant, req.user)) throw new RpcError(Code.NOT_FOUND, `user "${req.user}" not found in tenant "${req.tenant}"`);
  return { tenant: req.tenant, user: req.user, keyId: "", tasks: null };
}
