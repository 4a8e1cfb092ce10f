import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { createApi, errorText, isAuthError, loadSession, probeToken, saveSession, type Api, type Session } from "./api.js";
import { AuditPage } from "./pages/audit.js";
import { ExplainPage } from "./pages/explain.js";
import { OverviewPage } from "./pages/overview.js";
import { PlansPage } from "./pages/plans.js";
import { TenantPage } from "./pages/tenant.js";

/** The page a location hash names: #/ (overview), #/tenants/<id>, #/plans, #/audit, #/explain. */
type Route = { page: "overview" } | { page: "tenant"; tenant: string } | { page: "plans" } | { page: "audit" } | { page: "explain" };

function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "tenants" && parts[1]) return { page: "tenant", tenant: parts[1] };
  if (parts[0] === "plans" || parts[0] === "audit" || parts[0] === "explain") return { page: parts[0] };
  return { page: "overview" };
}

export const tenantHref = (id: string) => `#/tenants/${encodeURIComponent(id)}`;

const nav: Array<[href: string, label: string, page: Route["page"]]> = [
  ["#/", "Overview", "overview"],
  ["#/plans", "Plans & catalog", "plans"],
  ["#/audit", "Audit log", "audit"],
  ["#/explain", "Explain", "explain"],
];

export function App() {
  const [session, setSession] = useState<Session | undefined>(loadSession);
  /** Why the session ended mid-way (a refused token); the pages stay mounted beneath the sign-in, edits and all. */
  const [lost, setLost] = useState<string | undefined>(undefined);
  const [route, setRoute] = useState<Route>(() => parseRoute(location.hash));
  /** Bumped at each sign-in: pages reload their data, and keep their drafts. */
  const [epoch, setEpoch] = useState(0);
  const sessionRef = useRef(session);
  sessionRef.current = session;

  useEffect(() => {
    const onHash = () => setRoute(parseRoute(location.hash));
    addEventListener("hashchange", onHash);
    return () => removeEventListener("hashchange", onHash);
  }, []);

  const api = useMemo(() => createApi({
    session: () => sessionRef.current,
    onAuthLost: (err) => {
      if (!sessionRef.current) return;
      saveSession(undefined);
      setLost(`The admin token was refused (${errorText(err)}). Sign in again: what you were editing is kept.`);
    },
  }), []);

  const signIn = (s: Session) => {
    saveSession(s);
    setSession(s);
    setLost(undefined);
    setEpoch((e) => e + 1);
  };
  const signOut = () => {
    saveSession(undefined);
    setSession(undefined);
    setLost(undefined);
  };

  if (!session) return <SignIn onSignIn={signIn} />;
  return (
    <>
      <div inert={lost !== undefined} class="shell">
        <a class="skip" href="#main">Skip to content</a>
        <header class="top">
          <span class="brand">Admission control</span>
          <nav aria-label="Pages">
            <ul>
              {nav.map(([href, label, page]) => (
                <li key={href}><a href={href} aria-current={route.page === page ? "page" : undefined}>{label}</a></li>
              ))}
            </ul>
          </nav>
          <span class="who">Signed in{session.actor ? <> as <strong>{session.actor}</strong></> : null} <button type="button" class="link" onClick={signOut}>Sign out</button></span>
        </header>
        <main id="main" tabIndex={-1}>
          <Page route={route} api={api} epoch={epoch} />
        </main>
      </div>
      {lost !== undefined && <SignIn onSignIn={signIn} reason={lost} actor={session.actor} />}
    </>
  );
}

function Page({ route, api, epoch }: { route: Route; api: Api; epoch: number }) {
  switch (route.page) {
    case "tenant":
      return <TenantPage key={route.tenant} api={api} tenant={route.tenant} epoch={epoch} />;
    case "plans":
      return <PlansPage api={api} epoch={epoch} />;
    case "audit":
      return <AuditPage api={api} epoch={epoch} />;
    case "explain":
      return <ExplainPage api={api} epoch={epoch} />;
    default:
      return <OverviewPage api={api} epoch={epoch} />;
  }
}

/** Sign in with the admin token; the name for the audit log is asked here, once. As a modal over the pages when a session ended mid-way. */
function SignIn({ onSignIn, reason, actor: actorBefore }: { onSignIn: (s: Session) => void; reason?: string; actor?: string }) {
  const [token, setToken] = useState("");
  const [actor, setActor] = useState(actorBefore ?? "");
  const [error, setError] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const dialog = useRef<HTMLDialogElement>(null);
  useEffect(() => {
    if (reason && dialog.current && !dialog.current.open) dialog.current.showModal();
  }, [reason]);

  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(undefined);
    try {
      await probeToken(token.trim());
      onSignIn({ token: token.trim(), actor: actor.trim() });
    } catch (err) {
      setError(isAuthError(err) ? `That admin token was not accepted (${errorText(err)}).` : `Could not sign in: ${errorText(err)}.`);
    } finally {
      setBusy(false);
    }
  };
  const form = (
    <form class="signin" onSubmit={submit} aria-describedby={reason ? "signin-reason" : undefined}>
      <h1>Sign in to the admission console</h1>
      {reason && <p id="signin-reason" class="warning" role="alert">{reason}</p>}
      <label for="signin-token">Admin token</label>
      <input id="signin-token" name="token" type="password" autoComplete="off" required value={token} onInput={(e) => setToken(e.currentTarget.value)} />
      <label for="signin-actor">Your name, for the audit log</label>
      <input id="signin-actor" name="actor" type="text" required pattern="[A-Za-z0-9_.@:\-]{1,64}" title="1-64 letters, digits or _ . @ : -" value={actor}
        onInput={(e) => setActor(e.currentTarget.value)} aria-describedby="signin-actor-help" />
      <p id="signin-actor-help" class="muted">Recorded as the actor of every change you make (admin:&lt;name&gt;).</p>
      {error && <p class="error" role="alert" id="signin-error">{error}</p>}
      <button type="submit" disabled={busy}>{busy ? "Signing in…" : "Sign in"}</button>
    </form>
  );
  if (!reason) return <main class="signin-page">{form}</main>;
  return <dialog ref={dialog} class="signin-dialog" onCancel={(e) => e.preventDefault()}>{form}</dialog>;
}
