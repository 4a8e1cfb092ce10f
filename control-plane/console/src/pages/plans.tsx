import { TokenStatus, Window } from "../../../../gen/admission/v1/policy_pb.js";
import type { Api } from "../api.js";
import { ErrorNote, Section, Time, modeName, perName, useLoad } from "../components.js";
import { limitLabel, meterAmount, pricePerMtok, tsMs } from "../format.js";

/** Plans (features, model classes per task, limits), ATI tokens, and the catalog (models with prices, tasks). */
export function PlansPage({ api, epoch }: { api: Api; epoch: number }) {
  const plans = useLoad(() => api.policy.listPlans({}), [epoch]);
  const tokens = useLoad(() => api.policy.listAtiTokens({}), [epoch]);
  const catalog = useLoad(() => api.policy.listCatalog({}), [epoch]);
  return (
    <>
      <h1>Plans &amp; catalog</h1>
      <ErrorNote error={plans.error ?? tokens.error ?? catalog.error} />
      {plans.data?.plans.map((p) => (
        <Section key={p.code} id={`plan-${p.code}`} title={`Plan ${p.code}${p.name ? ` — ${p.name}` : ""}`}>
          <p>Features: {p.features.length > 0 ? p.features.join(", ") : <span class="muted">none</span>}</p>
          <table>
            <caption>Model classes per task (the first is the default)</caption>
            <thead><tr><th scope="col">Task</th><th scope="col">Model classes</th></tr></thead>
            <tbody>{p.taskAccess.map((a) => <tr key={a.task}><th scope="row">{a.task}</th><td>{a.modelClasses.join(" › ")}</td></tr>)}</tbody>
          </table>
          <table>
            <caption>Limits every tenant on the plan inherits</caption>
            <thead><tr><th scope="col">Limit</th><th scope="col">Per</th><th scope="col" class="num">Value</th><th scope="col">Mode</th></tr></thead>
            <tbody>
              {p.limits.map((l, i) => (
                <tr key={i}>
                  <th scope="row">{limitLabel(l)}</th>
                  <td>{l.window === Window.REQUEST ? "request" : perName(l.per) || "tenant"}</td>
                  <td class="num">{l.value < 0n ? "lifted" : meterAmount(l.kind, l.value)}</td>
                  <td>{modeName(l.mode)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </Section>
      ))}
      <Section id="ati-tokens" title="ATI tokens">
        <table>
          <thead><tr><th scope="col">Token</th><th scope="col">Plan</th><th scope="col">Status</th><th scope="col">Expires</th></tr></thead>
          <tbody>
            {tokens.data?.atiTokens.map((t) => (
              <tr key={t.id}><th scope="row">{t.id}</th><td>{t.plan}</td><td>{t.status === TokenStatus.REVOKED ? <strong class="bad">revoked</strong> : "active"}</td><td><Time ms={tsMs(t.expiresAt)} /></td></tr>
            ))}
          </tbody>
        </table>
      </Section>
      <Section id="models" title="Models">
        <div class="scroll">
          <table>
            <caption>Prices in USD per million tokens</caption>
            <thead><tr><th scope="col">Model</th><th scope="col">Class</th><th scope="col">Provider</th><th scope="col">Provider model</th><th scope="col" class="num">Input</th><th scope="col" class="num">Cache read</th><th scope="col" class="num">Cache write</th><th scope="col" class="num">Output</th></tr></thead>
            <tbody>
              {catalog.data?.models.map((m) => (
                <tr key={m.name}>
                  <th scope="row">{m.name}</th><td>{m.modelClass}</td><td>{m.provider}</td><td>{m.providerModel || m.name}</td>
                  <td class="num">{pricePerMtok(m.inputMicrosPerMtok)}</td>
                  <td class="num">{pricePerMtok(m.cacheReadMicrosPerMtok ?? m.inputMicrosPerMtok)}</td>
                  <td class="num">{pricePerMtok(m.cacheWriteMicrosPerMtok ?? m.inputMicrosPerMtok)}</td>
                  <td class="num">{pricePerMtok(m.outputMicrosPerMtok)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </div>
      </Section>
      <Section id="tasks" title="Tasks">
        <table>
          <thead><tr><th scope="col">Task</th><th scope="col">Feature</th><th scope="col">Description</th></tr></thead>
          <tbody>{catalog.data?.tasks.map((t) => <tr key={t.code}><th scope="row">{t.code}</th><td>{t.feature}</td><td>{t.description}</td></tr>)}</tbody>
        </table>
      </Section>
    </>
  );
}
