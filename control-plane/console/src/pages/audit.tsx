import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { useEffect, useState } from "preact/hooks";
import type { AuditEvent } from "../../../../gen/admission/v1/policy_service_pb.js";
import type { Api } from "../api.js";
import { tenantHref } from "../app.js";
import { ErrorNote, Section, Time } from "../components.js";
import { tsMs } from "../format.js";

const kinds = ["admin.", "admin.apply", "admin.delete", "admin.create_key", "admin.revoke_key", "admin.reset_meter", "decision.", "decision.denied", "decision.shadow_denied", "decision.soft_exceeded", "alert.threshold", "lease.expired", "store.unavailable"];

/** ListAuditEvents with its filters (actor, tenant, kind, time), newest first, a page at a time. */
export function AuditPage({ api, epoch }: { api: Api; epoch: number }) {
  const [filters, setFilters] = useState({ actor: "", tenant: "", kind: "", since: "", until: "" });
  const [events, setEvents] = useState<AuditEvent[] | undefined>(undefined);
  const [next, setNext] = useState("");
  const [error, setError] = useState<unknown>(undefined);
  const [busy, setBusy] = useState(false);

  const load = async (pageToken: string) => {
    setBusy(true);
    setError(undefined);
    try {
      const ms = (local: string) => (local ? timestampFromMs(new Date(local).getTime()) : undefined);
      const res = await api.policy.listAuditEvents({
        actor: filters.actor.trim(), tenant: filters.tenant.trim(), kind: filters.kind, since: ms(filters.since), until: ms(filters.until), pageSize: 50, pageToken,
      });
      setEvents((before) => (pageToken ? [...(before ?? []), ...res.events] : res.events));
      setNext(res.nextPageToken);
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };
  useEffect(() => void load(""), [epoch]);
  const field = (name: keyof typeof filters) => ({ name, value: filters[name], onInput: (e: { currentTarget: HTMLInputElement }) => setFilters({ ...filters, [name]: e.currentTarget.value }) });

  return (
    <>
      <h1>Audit log</h1>
      <Section id="audit" title="Events">
        <form class="row controls" onSubmit={(e) => (e.preventDefault(), void load(""))}>
          <label>Actor <input {...field("actor")} placeholder="admin:jane" /></label>
          <label>Tenant <input {...field("tenant")} /></label>
          <label>Kind <input {...field("kind")} list="audit-kinds" placeholder="admin. (a prefix)" /></label>
          <datalist id="audit-kinds">{kinds.map((k) => <option key={k} value={k} />)}</datalist>
          <label>From <input type="datetime-local" {...field("since")} /></label>
          <label>Until <input type="datetime-local" {...field("until")} /></label>
          <button type="submit" disabled={busy}>Search</button>
        </form>
        <p class="muted">Times are in your time zone; hover a time for UTC.</p>
        <ErrorNote error={error} />
        {events && events.length === 0 && <p>No event matches.</p>}
        {events && events.length > 0 && (
          <div class="scroll">
            <table class="audit">
              <thead><tr><th scope="col">Time</th><th scope="col">Kind</th><th scope="col">Actor</th><th scope="col">Tenant</th><th scope="col">What</th><th scope="col">Details</th></tr></thead>
              <tbody>
                {events.map((e) => (
                  <tr key={String(e.id)} data-kind={e.kind}>
                    <td><Time ms={tsMs(e.time)} /></td>
                    <td>{e.kind}</td>
                    <td>{e.actor}</td>
                    <td>{e.tenant ? <a href={tenantHref(e.tenant)}>{e.tenant}</a> : "—"}</td>
                    <td>{e.message}</td>
                    <td>{Object.entries(e.attributes).filter(([, v]) => v).map(([k, v]) => <span class="attr" key={k}>{k}={v}</span>)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
        {next && <button type="button" disabled={busy} onClick={() => void load(next)}>Older events</button>}
      </Section>
    </>
  );
}
