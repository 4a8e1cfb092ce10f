import assert from "node:assert/strict";
import { LimitKind, Window } from "../../gen/admission/v1/policy_pb.js";
import { admin } from "./control-plane.js";
/**
 * What a tenant's tenant-wide meter of `kind` (in `window`, when given) holds, as
 * GetEffectivePolicy shows it to the admin.
 */
export async function meterUsed(admission, tenant, kind, window) {
    const { limits } = await admission.getEffectivePolicy({ tenant }, admin);
    const limit = limits.find((l) => l.kind === kind && (window === undefined || l.window === window) && l.task === "");
    assert.ok(limit, `${LimitKind[kind]}${window === undefined ? "" : `/${Window[window]}`} applies to ${tenant}`);
    return limit.used;
}
//# sourceMappingURL=meter-used.js.map