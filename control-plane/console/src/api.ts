import { Code, ConnectError, createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { AdmissionService } from "../../../gen/admission/v1/admission_pb.js";
import { PolicyService } from "../../../gen/admission/v1/policy_service_pb.js";

/** Who is signed in: the admin token (a bearer header, never a URL or a cookie) and the name the audit log records. */
export interface Session {
  readonly token: string;
  readonly actor: string;
}

const storageKey = "admission-console-session";

/** The session of this tab (sessionStorage: gone with the tab, never sent anywhere by the browser itself). */
export function loadSession(): Session | undefined {
  try {
    const raw = sessionStorage.getItem(storageKey);
    const parsed = raw ? (JSON.parse(raw) as Partial<Session>) : undefined;
    return parsed?.token ? { token: parsed.token, actor: parsed.actor ?? "" } : undefined;
  } catch {
    return undefined;
  }
}

export function saveSession(session: Session | undefined): void {
  if (session) sessionStorage.setItem(storageKey, JSON.stringify(session));
  else sessionStorage.removeItem(storageKey);
}

/** A refused admin token: the session is over (not a fault of the call). */
export function isAuthError(err: unknown): boolean {
  const code = ConnectError.from(err).code;
  return code === Code.Unauthenticated || code === Code.PermissionDenied;
}

/** The server's own words for a failed call: its code and message (which name the entity and field of a rejected bundle). */
export function errorText(err: unknown): string {
  const e = ConnectError.from(err);
  if (e.code === Code.Unavailable || e.code === Code.Unknown) return `the control plane did not answer (${e.rawMessage || Code[e.code]})`;
  return `${codeName(e.code)}: ${e.rawMessage}`;
}

function codeName(code: Code): string {
  return Code[code].replace(/[A-Z]/g, (c, i: number) => (i > 0 ? "_" : "") + c.toLowerCase());
}

export interface Api {
  readonly policy: Client<typeof PolicyService>;
  readonly admission: Client<typeof AdmissionService>;
}

/**
 * Clients of the PolicyService and AdmissionService over the Connect protocol (JSON), on
 * this page's own origin. Every call carries the session's token; a refused token calls
 * `onAuthLost` (the page then asks to sign in again, keeping what was being edited).
 */
export function createApi(options: { session: () => Session | undefined; onAuthLost: (err: unknown) => void }): Api {
  const auth: Interceptor = (next) => async (req) => {
    const session = options.session();
    if (session) {
      req.header.set("authorization", `Bearer ${session.token}`);
      if (session.actor) req.header.set("x-admission-actor", session.actor);
    }
    try {
      return await next(req);
    } catch (err) {
      if (isAuthError(err)) options.onAuthLost(err);
      throw err;
    }
  };
  const transport = createConnectTransport({ baseUrl: location.origin, interceptors: [auth], useBinaryFormat: false });
  return { policy: createClient(PolicyService, transport), admission: createClient(AdmissionService, transport) };
}

/** A client for checking a token at sign-in, before it becomes the session's. */
export function probeToken(token: string): Promise<unknown> {
  const transport = createConnectTransport({
    baseUrl: location.origin,
    interceptors: [(next) => (req) => {
      req.header.set("authorization", `Bearer ${token}`);
      return next(req);
    }],
  });
  return createClient(PolicyService, transport).listCatalog({});
}
