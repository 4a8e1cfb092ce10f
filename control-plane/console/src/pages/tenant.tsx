import { useState } from "preact/hooks";
import { AccountStatus, FailurePolicy, Mode } from "../../../../gen/admission/v1/policy_pb.js";
import type { Api } from "../api.js";
import { ErrorNote, LimitsTable, Money, Num, Section, useLoad } from "../components.js";
import { CreditsPanel } from "./tenant-credits.js";
import { KeysPanel } from "./tenant-keys.js";
import { LimitsEditor } from "./tenant-editor.js";
import { UsagePanel } from "./tenant-usage.js";
import { WebhooksPanel } from "./tenant-webhooks.js";

/**
 * One tenant: what it is (status, plan, mode), its effective limits with their live
 * meters, an editor for its limits and mode (dry run, diff, apply), its usage over time,
 * its users and API keys, its credits and grants, its webhooks and their deliveries. Each panel is its own component reading its own calls; a
 * panel for a new API slots into `panels` below.
 */
export function TenantPage({ api, tenant, epoch }: { api: Api; tenant: string; epoch: number }) {
  /** Bumped after a change is applied: the panels that show its effect read again. */
  const [changes, setChanges] = useState(0);
  const deps = [epoch, changes];
  const panels = [
    <Summary api={api} tenant={tenant} deps={deps} key="summary" />,
    <EffectiveLimits api={api} tenant={tenant} deps={deps} key="limits" />,
    <LimitsEditor api={api} tenant={tenant} deps={deps} onApplied={() => setChanges((c) => c + 1)} key="editor" />,
    <UsagePanel api={api} tenant={tenant} deps={deps} key="usage" />,
    <KeysPanel api={api} tenant={tenant} deps={deps} key="keys" />,
    <CreditsPanel api={api} tenant={tenant} deps={deps} onGranted={() => setChanges((c) => c + 1)} key="credits" />,
    <WebhooksPanel api={api} tenant={tenant} deps={deps} key="webhooks" />,
  ];
  return (
    <>
      <p class="crumbs"><a href="#/">Overview</a> › tenant</p>
      <h1>Tenant <code>{tenant}</code></h1>
      {panels}
    </>
  );
}

function Summary({ api, tenant, deps }: { api: Api; tenant: string; deps: unknown[] }) {
  const stored = useLoad(() => api.policy.getTenant({ id: tenant }), deps);
  const status = useLoad(() => api.policy.listTenantStatus({ tenant }), deps);
  const t = stored.data?.tenant;
  const s = status.data?.tenants[0];
  const m = s?.month;
  return (
    <Section id="summary" title="At a glance">
      <ErrorNote error={stored.error ?? status.error} />
      {t && (
        <dl class="facts">
          <div><dt>Name</dt><dd>{t.name || "—"}</dd></div>
          <div><dt>Status</dt><dd>{t.status === AccountStatus.SUSPENDED ? <strong class="bad">suspended</strong> : "active"}</dd></div>
          <div><dt>Plan</dt><dd>{s?.plan ?? "…"} <span class="muted">(ATI token {t.atiToken})</span></dd></div>
          <div><dt>Mode</dt><dd>{(t.mode === Mode.UNSPECIFIED ? "enforce" : Mode[t.mode]!.toLowerCase())}</dd></div>
          <div><dt>Failure policy</dt><dd>{t.failurePolicy === FailurePolicy.UNSPECIFIED ? "the control plane's default" : FailurePolicy[t.failurePolicy]!.toLowerCase()}</dd></div>
          <div><dt>Open reservations</dt><dd>{s ? <Num value={s.openReservations} /> : "…"}</dd></div>
        </dl>
      )}
      {m && (
        <dl class="facts month" aria-label="This month (UTC)">
          <div><dt>Requests this month</dt><dd><Num value={m.requests} /></dd></div>
          <div><dt>Input tokens</dt><dd><Num value={m.inputTokens} /></dd></div>
          <div><dt>of which cache reads / writes</dt><dd><Num value={m.cacheReadTokens} /> / <Num value={m.cacheWriteTokens} /></dd></div>
          <div><dt>Output tokens</dt><dd><Num value={m.outputTokens} /></dd></div>
          <div><dt>of which reasoning</dt><dd><Num value={m.reasoningTokens} /></dd></div>
          <div><dt>Cost</dt><dd><Money micros={m.costMicros} /></dd></div>
        </dl>
      )}
    </Section>
  );
}

function EffectiveLimits({ api, tenant, deps }: { api: Api; tenant: string; deps: unknown[] }) {
  /** "", "user:<id>" or "key:<id>". */
  const [subject, setSubject] = useState("");
  const users = useLoad(() => api.policy.listUsers({ tenant }), deps);
  const keys = useLoad(() => api.policy.listApiKeys({ tenant }), deps);
  const [kind, id] = subject ? [subject.slice(0, subject.indexOf(":")), subject.slice(subject.indexOf(":") + 1)] : ["", ""];
  const policy = useLoad(() => api.admission.getEffectivePolicy({ tenant, user: kind === "user" ? id : "", keyId: kind === "key" ? id : "" }), [...deps, subject]);
  return (
    <Section id="effective" title="Effective limits and meters" actions={<button type="button" onClick={policy.reload}>Refresh</button>}>
      <p>
        <label for="effective-subject">As seen by </label>
        <select id="effective-subject" value={subject} onChange={(e) => setSubject(e.currentTarget.value)}>
          <option value="">the tenant (no user or key)</option>
          {users.data?.users.map((u) => <option key={u.id} value={`user:${u.id}`}>user {u.id}</option>)}
          {keys.data?.apiKeys.map((k) => <option key={k.id} value={`key:${k.id}`}>API key {k.id}{k.user ? ` (user ${k.user})` : ""}</option>)}
        </select>
      </p>
      <ErrorNote error={policy.error} />
      {policy.data && (
        <>
          <ul class="plain status-lines">{policy.data.status.map((line) => <li key={line}>{line}</li>)}</ul>
          <LimitsTable limits={policy.data.limits} caption={`Plan ${policy.data.plan}; the most specific limit wins: user, then tenant, then plan`} />
        </>
      )}
    </Section>
  );
}
