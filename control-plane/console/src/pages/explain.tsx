import { useState } from "preact/hooks";
import type { AdmitResponse, GetEffectivePolicyResponse } from "../../../../gen/admission/v1/admission_pb.js";
import { DenyReason } from "../../../../gen/admission/v1/admission_pb.js";
import type { Api } from "../api.js";
import { ErrorNote, LimitsTable, MeterLine, Money, Num, Section, useLoad } from "../components.js";

/**
 * Explain: for a tenant, a user or an API key and a task, the effective policy
 * (GetEffectivePolicy) and what an Admit would decide now (SimulateAdmit, which
 * reserves nothing).
 */
export function ExplainPage({ api, epoch }: { api: Api; epoch: number }) {
  const tenants = useLoad(() => api.policy.listTenants({}), [epoch]);
  const catalog = useLoad(() => api.policy.listCatalog({}), [epoch]);
  const [q, setQ] = useState({ tenant: "", user: "", keyId: "", task: "", model: "", inputTokens: "1000", maxOutputTokens: "500" });
  const users = useLoad(() => (q.tenant ? api.policy.listUsers({ tenant: q.tenant }) : Promise.resolve(undefined)), [epoch, q.tenant]);
  const keys = useLoad(() => (q.tenant ? api.policy.listApiKeys({ tenant: q.tenant }) : Promise.resolve(undefined)), [epoch, q.tenant]);
  const [result, setResult] = useState<{ policy: GetEffectivePolicyResponse; decision: AdmitResponse } | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const set = (patch: Partial<typeof q>) => setQ({ ...q, ...patch });

  const explain = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    try {
      const subject = { tenant: q.tenant, user: q.keyId ? "" : q.user, keyId: q.keyId };
      const [policy, simulated] = await Promise.all([
        api.admission.getEffectivePolicy({ ...subject, task: q.task }),
        api.policy.simulateAdmit({ ...subject, task: q.task, model: q.model, inputTokens: BigInt(q.inputTokens || "0"), maxOutputTokens: BigInt(q.maxOutputTokens || "0") }),
      ]);
      setResult({ policy, decision: simulated.decision! });
    } catch (err) {
      setResult(undefined);
      setError(err);
    }
  };

  return (
    <>
      <h1>Explain a decision</h1>
      <Section id="explain-form" title="Who, what">
        <form class="row controls" onSubmit={explain}>
          <label>Tenant <select name="tenant" required value={q.tenant} onChange={(e) => set({ tenant: e.currentTarget.value, user: "", keyId: "" })}>
            <option value="">— choose —</option>
            {tenants.data?.tenants.map((t) => <option key={t.id} value={t.id}>{t.id}</option>)}
          </select></label>
          <label>User <select name="user" value={q.user} disabled={!!q.keyId} onChange={(e) => set({ user: e.currentTarget.value })}>
            <option value="">— none —</option>
            {users.data?.users.map((u) => <option key={u.id} value={u.id}>{u.id}</option>)}
          </select></label>
          <label>or API key <select name="key" value={q.keyId} onChange={(e) => set({ keyId: e.currentTarget.value })}>
            <option value="">— none —</option>
            {keys.data?.apiKeys.map((k) => <option key={k.id} value={k.id}>{k.id}{k.user ? ` (${k.user})` : ""}</option>)}
          </select></label>
          <label>Task <select name="task" required value={q.task} onChange={(e) => set({ task: e.currentTarget.value })}>
            <option value="">— choose —</option>
            {catalog.data?.tasks.map((t) => <option key={t.code} value={t.code}>{t.code}</option>)}
          </select></label>
          <label>Model <input name="model" list="explain-models" placeholder="the plan's default" value={q.model} onInput={(e) => set({ model: e.currentTarget.value })} /></label>
          <datalist id="explain-models">{catalog.data?.models.map((m) => <option key={m.name} value={m.name} />)}</datalist>
          <label>Input tokens <input name="inputTokens" inputMode="numeric" pattern="\d+" value={q.inputTokens} onInput={(e) => set({ inputTokens: e.currentTarget.value })} /></label>
          <label>Max output tokens <input name="maxOutputTokens" inputMode="numeric" pattern="\d+" value={q.maxOutputTokens} onInput={(e) => set({ maxOutputTokens: e.currentTarget.value })} /></label>
          <button type="submit">Explain</button>
        </form>
        <ErrorNote error={error} />
      </Section>
      {result && <Decision d={result.decision} />}
      {result && (
        <Section id="explain-policy" title="Effective policy">
          <p>Plan <strong>{result.policy.plan}</strong> (ATI token {result.policy.atiToken}).</p>
          <ul class="plain status-lines">{result.policy.status.map((s) => <li key={s}>{s}</li>)}</ul>
          <LimitsTable limits={result.policy.limits} caption="Limits that apply, the most specific winning (user, then tenant, then plan)" />
          <table>
            <caption>Tasks</caption>
            <thead><tr><th scope="col">Task</th><th scope="col">Feature</th><th scope="col">Allowed</th><th scope="col">Model classes</th><th scope="col">Models</th></tr></thead>
            <tbody>
              {result.policy.tasks.map((t) => (
                <tr key={t.task}><th scope="row">{t.task}</th><td>{t.feature}</td><td>{t.allowed ? "yes" : <strong class="bad">no</strong>}</td><td>{t.modelClasses.join(" › ")}</td><td>{t.routes.map((r) => r.model).join(", ")}</td></tr>
              ))}
            </tbody>
          </table>
        </Section>
      )}
    </>
  );
}

function Decision({ d }: { d: AdmitResponse }) {
  return (
    <Section id="decision" title="What Admit would decide now">
      <p class={`verdict ${d.allowed ? "verdict-allowed" : "verdict-denied"}`} role="status">
        <strong>{d.allowed ? "Allowed" : `Denied: ${DenyReason[d.reason]}`}</strong> (HTTP {d.httpStatus}){d.message && <> — {d.message}</>}
      </p>
      <p class="muted">Simulated: nothing was reserved and nothing recorded. The meters below include this request as if it had been reserved.</p>
      {d.allowed && (
        <dl class="facts">
          <div><dt>Max output tokens (clamped)</dt><dd><Num value={d.maxOutputTokens} /></dd></div>
          <div><dt>Cost it would reserve</dt><dd><Money micros={d.reservedCostMicros} /></dd></div>
          <div><dt>Routes</dt><dd>{d.routes.map((r) => `${r.model} (${r.provider})`).join(" › ")}</dd></div>
        </dl>
      )}
      {d.deniedMeter && <p>Denied by <MeterLine m={d.deniedMeter} /></p>}
      {d.warnings.length > 0 && <ul class="warnings">{d.warnings.map((w) => <li key={w}>{w}</li>)}</ul>}
      {d.meters.length > 0 && <ul class="plain">{d.meters.map((m) => <li key={`${m.kind}-${m.window}-${m.task}-${m.subject}`}><MeterLine m={m} /></li>)}</ul>}
    </Section>
  );
}
