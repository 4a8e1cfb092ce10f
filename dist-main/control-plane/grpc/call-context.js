import { timingSafeEqual } from "node:crypto";
import { status as Code } from "@grpc/grpc-js";
import { RpcError } from "../rpc-error.js";
/** Checks the admin bearer token; returns the actor named in audit events. */
export function requireAdmin(ctx, adminToken) {
    const given = ctx.header("authorization") ?? "";
    const match = /^Bearer\s+(.+)$/i.exec(given);
    if (!match)
        throw new RpcError(Code.UNAUTHENTICATED, "admin calls need 'authorization: Bearer <admin token>'");
    const a = Buffer.from(match[1].trim());
    const b = Buffer.from(adminToken);
    if (a.length !== b.length || !timingSafeEqual(a, b))
        throw new RpcError(Code.PERMISSION_DENIED, "not the admin token");
    const actor = (ctx.header("x-admission-actor") ?? "").replace(/[^\w.@:-]/g, "").slice(0, 64);
    return actor ? `admin:${actor}` : "admin";
}
/** True when the call carries an admin token at all (it is then checked by requireAdmin). */
export function hasAdminToken(ctx) {
    return (ctx.header("authorization") ?? "") !== "";
}
//# sourceMappingURL=call-context.js.map