import { status as Code } from "@grpc/grpc-js";
import { trace, type Tracer } from "@opentelemetry/api";
import type {
  AdmitRequest, AdmitResponse, GetEffectivePolicyRequest, GetEffectivePolicyResponse, RenewRequest, RenewResponse, SettleRequest, SettleResponse,
} from "../../gen/admission/v1/admission_pb.js";
import { DenyReason } from "../../gen/admission/v1/admission_pb.js";
import type { CredentialVerifier, Principal } from "../credentials.js";
import type { DecisionEngine } from "../decide.js";
import type { PolicySnapshot } from "../policy/policy-snapshot.js";
import { RpcError } from "../rpc-error.js";
import { setAdmitAttributes, setSettleAttributes } from "../tracing.js";
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
  /** Decisions' attributes on their spans when tracing is on. */
  readonly tracer?: Tracer;
}

/** The AdmissionService, transport-free: gRPC, the Session stream and Connect all call these. */
export class AdmissionHandlers {
  constructor(private readonly deps: AdmissionHandlersDeps) {}

  /** Malformed input is an INVALID_ARGUMENT status; every other denial is a decision value. */
  async admit(req: AdmitRequest, ctx?: CallContext): Promise<AdmitResponse> {
    const decision = await this.deps.engine.admit(req, ctx);
    const span = this.deps.tracer && trace.getActiveSpan();
    if (span) {
      span.setAttributes({ "admission.task": req.task, "gen_ai.request.model": req.model, "admission.counted_input_tokens": Number(req.inputTokens) });
      setAdmitAttributes(span, decision);
    }
    if (decision.reason === DenyReason.INVALID_REQUEST) throw new RpcError(Code.INVALID_ARGUMENT, decision.message);
    return decision;
  }

  async settle(req: SettleRequest): Promise<SettleResponse> {
    const settled = await this.deps.settlement.settle(req);
    const span = this.deps.tracer && trace.getActiveSpan();
    if (span) {
      span.setAttributes({ "gen_ai.response.model": req.model, "gen_ai.provider.name": req.provider });
      setSettleAttributes(span, settled);
    }
    return settled;
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

