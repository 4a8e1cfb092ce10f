import { AccountStatus, Mode } from "../../../../gen/admission/v1/policy_pb.js";
import type { AuditEvent } from "../../../../gen/admission/v1/policy_service_pb.js";
import type { Api } from "../api.js";
import { tenantHref } from "../app.js";
import { ErrorNote, MeterLine, Money, Num, Section, Time, useLoad } from "../components.js";
import { tsMs } from "../format.js";

/** Tenants at a glance, and what was denied or alerted lately. */
export function OverviewPage({ api, epoch }: { api: Api; epoch: number }) {
  const status = useLoad(() => api.policy.listTenantStatus({ nearest: 3 }), [epoch]);
  const denials = useLoad(() => api.policy.listAuditEvents({ kind: "decision.denied", pageSize: 10 }), [epoch]);
  const alerts = useLoad(() => api.policy.listAuditEvents({ kind: "alert.", pageSize: 10 }), [epoch]);
  const reload = () => {
    status.reload();
    denials.reload();
    alerts.reload();
  };
  return (
    <>
      <h1>Overview</h1>
      <Section id="tenants" title="Tenants" actions={<button type="button" onClick={reload}>Refresh</button>}>
        <ErrorNote error={status.error} what="Tenants could not be read" />
        <div class="scroll">
          <table class="tenants">
            <caption>This month (UTC) from the ledger; meters and open reservations live from the counters</caption>
            <thead>
              <tr>
                <th scope="col">Tenant</th><th scope="col">Status</th><th scope="col">Plan</th><th scope="col">Mode</th>
                <th scope="col" class="num">Requests</th><th scope="col" class="num">Tokens</th><th scope="col" class="num">Cost</th>
                <th scope="col">Nearest their limit</th><th scope="col" class="num">Open reservations</th>
              </tr>
            </thead>
            <tbody>
              {status.data?.tenants.map((t) => (
                <tr key={t.tenant} data-tenant={t.tenant}>
                  <th scope="row"><a href={tenantHref(t.tenant)}>{t.name || t.tenant}</a>{t.name && <span class="muted"> {t.tenant}</span>}</th>
                  <td>{t.status === AccountStatus.SUSPENDED ? <strong class="bad">suspended</strong> : "active"}</td>
                  <td>{t.plan}</td>
                  <td>{Mode[t.mode]?.toLowerCase()}</td>
                  <td class="num" data-field="requests"><Num value={t.month?.requests ?? 0n} /></td>
                  <td class="num" data-field="tokens"><Num value={(t.month?.inputTokens ?? 0n) + (t.month?.outputTokens ?? 0n)} /></td>
                  <td class="num" data-field="cost"><Money micros={t.month?.costMicros ?? 0n} /></td>
                  <td>{t.problem ? <span class="warning">{t.problem}</span> : t.nearest.length === 0 ? <span class="muted">no metered limit</span>
                    : <ul class="plain">{t.nearest.map((m) => <li key={`${m.kind}-${m.window}-${m.task}-${m.subject}`}><MeterLine m={m} /></li>)}</ul>}</td>
                  <td class="num" data-field="open"><Num value={t.openReservations} /></td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
        {status.data?.tenants.length === 0 && <p>No tenants yet: apply a bundle with ApplyBundle.</p>}
      </Section>
      <div class="columns">
        <Section id="denials" title="Recent denials">
          <ErrorNote error={denials.error} />
          <EventList events={denials.data?.events} empty="No denials recorded." />
        </Section>
        <Section id="alerts" title="Recent alerts">
          <ErrorNote error={alerts.error} />
          <EventList events={alerts.data?.events} empty="No alerts raised." />
        </Section>
      </div>
    </>
  );
}

function EventList({ events, empty }: { events: readonly AuditEvent[] | undefined; empty: string }) {
  if (!events) return <p class="muted">Loading…</p>;
  if (events.length === 0) return <p class="muted">{empty}</p>;
  return (
    <ul class="events">
      {events.map((e) => (
        <li key={String(e.id)}>
          <Time ms={tsMs(e.time)} /> · {e.tenant ? <a href={tenantHref(e.tenant)}>{e.tenant}</a> : "—"} · <span class="muted">{e.actor}</span>
          <div>{e.message}</div>
        </li>
      ))}
    </ul>
  );
}
