import { useState } from "preact/hooks";
import { WebhookFormat } from "../../../../gen/admission/v1/policy_pb.js";
import { WebhookDeliveryState } from "../../../../gen/admission/v1/policy_service_pb.js";
import type { WebhookDelivery } from "../../../../gen/admission/v1/policy_service_pb.js";
import type { Api } from "../api.js";
import { ErrorNote, Section, Time, useLoad } from "../components.js";
import { tsMs } from "../format.js";

const stateNames: Record<number, string> = {
  [WebhookDeliveryState.PENDING]: "pending",
  [WebhookDeliveryState.DELIVERED]: "delivered",
  [WebhookDeliveryState.FAILED]: "failed",
};

/**
 * The tenant's webhook endpoints (no secret is ever shown: the API returns none) and the
 * latest deliveries of its events, to its endpoints and the operators', with each one's
 * attempts; a delivery can be queued again.
 */
export function WebhooksPanel({ api, tenant, deps }: { api: Api; tenant: string; deps: unknown[] }) {
  const endpoints = useLoad(() => api.policy.listWebhooks({ tenant }), deps);
  const deliveries = useLoad(() => api.policy.listWebhookDeliveries({ tenant, pageSize: 20 }), deps);
  const [error, setError] = useState<unknown>(undefined);
  const redeliver = async (id: bigint) => {
    setError(undefined);
    try {
      await api.policy.redeliverWebhook({ id });
      deliveries.reload();
    } catch (err) {
      setError(err);
    }
  };
  return (
    <Section id="webhooks" title="Webhooks" actions={<button type="button" onClick={() => deliveries.reload()}>Refresh deliveries</button>}>
      <ErrorNote error={endpoints.error ?? deliveries.error} />
      <h3>Endpoints</h3>
      {endpoints.data && endpoints.data.webhooks.length === 0 && <p class="muted">No endpoint of this tenant's own (operator endpoints still hear its events). Add one in a bundle: <code>webhooks</code>.</p>}
      <ul class="plain">
        {endpoints.data?.webhooks.map((w) => (
          <li key={w.id} data-webhook={w.id}>
            <code>{w.id}</code> → <code>{w.url}</code> <span class="muted">({w.events.join(", ")}{w.format === WebhookFormat.SLACK ? "; Slack" : ""})</span>
            {w.disabled && <strong class="bad"> disabled</strong>}
            {w.description && <span> — {w.description}</span>}
          </li>
        ))}
      </ul>
      <h3>Recent deliveries</h3>
      {deliveries.data && deliveries.data.deliveries.length === 0 && <p class="muted">No event of this tenant has gone to an endpoint yet.</p>}
      <div class="scroll">
        <table class="deliveries">
          <thead><tr><th scope="col">Raised</th><th scope="col">Event</th><th scope="col">Endpoint</th><th scope="col">State</th><th scope="col">Attempts</th><th scope="col">Last answer</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>
            {deliveries.data?.deliveries.map((d) => <DeliveryRow key={String(d.id)} d={d} onRedeliver={() => void redeliver(d.id)} />)}
          </tbody>
        </table>
      </div>
      <ErrorNote error={error} />
    </Section>
  );
}

function DeliveryRow({ d, onRedeliver }: { d: WebhookDelivery; onRedeliver: () => void }) {
  const last = d.attempts.at(-1);
  return (
    <tr data-delivery={String(d.id)}>
      <td><Time ms={tsMs(d.createdAt)} /></td>
      <td><code>{d.eventType}</code> <span class="muted">{d.eventId}</span></td>
      <td><code>{d.webhook}</code></td>
      <td data-field="state">{d.state === WebhookDeliveryState.FAILED ? <strong class="bad">failed</strong> : stateNames[d.state] ?? "?"}
        {d.state === WebhookDeliveryState.PENDING && d.nextAttemptAt && <span class="muted"> (next <Time ms={tsMs(d.nextAttemptAt)} />)</span>}</td>
      <td>{d.attempts.length}</td>
      <td>{last ? <>{last.httpStatus > 0 ? `HTTP ${last.httpStatus}` : "no answer"}{last.error && <span class="muted"> {last.error}</span>} <span class="muted">{String(last.latencyMs)} ms</span></> : <span class="muted">none yet</span>}</td>
      <td><button type="button" onClick={onRedeliver}>{d.state === WebhookDeliveryState.PENDING ? "Attempt now" : "Redeliver"}<span class="sr-only"> {String(d.id)}</span></button></td>
    </tr>
  );
}
