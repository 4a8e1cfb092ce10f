import { status as Code } from "@grpc/grpc-js";
import type {
  AdmitRequest, AdmitResponse, GetEffectivePolicyRequest, GetEffectivePolicyResponse, RenewRequest, RenewResponse, SettleRequest, SettleResponse,
} from "../../gen/admission/v1/admission_pb.js";
import { DenyReason } from "../../gen/admission/v1/admission_pb.js";
import type { CredentialVerifier, Principal } from "../credentials.js";
import type { DecisionEngine } from "../decide.js";
import type { PolicySnapshot } from "../policy/policy-snapshot.js";
import { RpcError } from "../rpc-error.js";
import type { Settlement } from "../settlement.js";
import type { CallContext } from "./call-context.js";
import { requireAdmin } from "./call-context.js";
import { adminSubject } from "./admin-subject.js";

export interface AdmissionHandlersDeps {
  readonly engine: DecisionEngine;
  readonly settlement: Settlement;
  readonly credentials: CredentialVerifier;
  readonly policy: () => PolicySnapshot;
  readonly adminToken: string;
}

/** The AdmissionService, transport-free: gRPC, the Session stream and Connect all call these. */
export class AdmissionHandlers {
  constructor(private readonly deps: AdmissionHandlersDeps) {}

  /** Malformed input is an INVALID_ARGUMENT status; every other denial is a decision value. */
  async admit(req: AdmitRequest): Promise<AdmitResponse> {
    const decision = await this.deps.engine.admit(req);
    if (decision.reason === DenyReason.INVALID_REQUEST) throw new RpcError(Code.INVALID_ARGUMENT, decision.message);
    return decision;
  }

  settle(req: SettleRequest): Promise<SettleResponse> {
    return this.deps.settlement.settle(req);
  }

  renew(req: RenewRequest): Promise<RenewResponse> {
    return this.deps.settlement.renew(req);
  }

  /** A traffic credential explains its own subject; tenant/user/key need the admin token. */
  async getEffectivePolicy(req: GetEffectivePolicyRequest, ctx: CallContext): Promise<GetEffectivePolicyResponse> {
    const snapshot = this.deps.policy();
    let principal: Principal;
    if (req.credential) {
      const auth = await this.deps.credentials.authenticate(req.credential, snapshot);
      if (!auth.ok) throw new RpcError(Code.UNAUTHENTICATED, auth.message);
      principal = auth.principal;
      if ((req.tenant && req.tenant !== principal.tenant) || (req.user && req.user !== principal.user) || (req.keyId && req.keyId !== principal.keyId)) {
        throw new RpcError(Code.PERMISSION_DENIED, "a credential can only explain its own tenant, user and key");
      }
    } else {
      requireAdmin(ctx, this.deps.adminToken);
      if (!req.tenant && !req.keyId) throw new RpcError(Code.INVALID_ARGUMENT, "credential, tenant or key_id is required");
      principal = adminSubject(req, snapshot);
    }
    if (req.task && !snapshot.tasks.has(req.task)) throw new RpcError(Code.NOT_FOUND, `unknown task "${req.task}"`);
    const tenantCtx = snapshot.tenantContext(principal.tenant);
    if (!tenantCtx) throw new RpcError(Code.NOT_FOUND, `tenant "${principal.tenant}" not found`);
    return this.deps.engine.explain({ principal, ctx: tenantCtx, snapshot }, req.task);
  }
}

