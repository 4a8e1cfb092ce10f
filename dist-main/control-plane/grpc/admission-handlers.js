import { status as Code } from "@grpc/grpc-js";
import { DenyReason } from "../../gen/admission/v1/admission_pb.js";
import { RpcError } from "../rpc-error.js";
import { requireAdmin } from "./call-context.js";
/** The AdmissionService, transport-free: gRPC, the Session stream and Connect all call these. */
export class AdmissionHandlers {
    deps;
    constructor(deps) {
        this.deps = deps;
    }
    /** Malformed input is an INVALID_ARGUMENT status; every other denial is a decision value. */
    async admit(req) {
        const decision = await this.deps.engine.admit(req);
        if (decision.reason === DenyReason.INVALID_REQUEST)
            throw new RpcError(Code.INVALID_ARGUMENT, decision.message);
        return decision;
    }
    settle(req) {
        return this.deps.settlement.settle(req);
    }
    renew(req) {
        return this.deps.settlement.renew(req);
    }
    /** A traffic credential explains its own subject; tenant/user/key need the admin token. */
    async getEffectivePolicy(req, ctx) {
        const snapshot = this.deps.policy();
        let principal;
        if (req.credential) {
            const auth = await this.deps.credentials.authenticate(req.credential, snapshot);
            if (!auth.ok)
                throw new RpcError(Code.UNAUTHENTICATED, auth.message);
            principal = auth.principal;
            if ((req.tenant && req.tenant !== principal.tenant) || (req.user && req.user !== principal.user) || (req.keyId && req.keyId !== principal.keyId)) {
                throw new RpcError(Code.PERMISSION_DENIED, "a credential can only explain its own tenant, user and key");
            }
        }
        else {
            requireAdmin(ctx, this.deps.adminToken);
            principal = this.adminSubject(req, snapshot);
        }
        if (req.task && !snapshot.tasks.has(req.task))
            throw new RpcError(Code.NOT_FOUND, `unknown task "${req.task}"`);
        const tenantCtx = snapshot.tenantContext(principal.tenant);
        if (!tenantCtx)
            throw new RpcError(Code.NOT_FOUND, `tenant "${principal.tenant}" not found`);
        return this.deps.engine.explain({ principal, ctx: tenantCtx, snapshot }, req.task);
    }
    adminSubject(req, snapshot) {
        if (req.keyId) {
            const key = snapshot.apiKeys.get(req.keyId);
            if (!key)
                throw new RpcError(Code.NOT_FOUND, `api_key "${req.keyId}" not found`);
            if (req.tenant && req.tenant !== key.tenant)
                throw new RpcError(Code.INVALID_ARGUMENT, `api_key "${key.id}" belongs to tenant "${key.tenant}"`);
            return { tenant: key.tenant, user: key.user, keyId: key.id, tasks: key.tasks };
        }
        if (!req.tenant)
            throw new RpcError(Code.INVALID_ARGUMENT, "credential, tenant or key_id is required");
        if (!snapshot.tenants.has(req.tenant))
            throw new RpcError(Code.NOT_FOUND, `tenant "${req.tenant}" not found`);
        if (req.user && !snapshot.user(req.tenant, req.user))
            throw new RpcError(Code.NOT_FOUND, `user "${req.user}" not found in tenant "${req.tenant}"`);
        return { tenant: req.tenant, user: req.user, keyId: "", tasks: null };
    }
}
//# sourceMappingURL=admission-handlers.js.map