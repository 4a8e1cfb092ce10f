import { useState } from "preact/hooks";
import { LimitKind } from "../../../../gen/admission/v1/policy_pb.js";
import type { Api } from "../api.js";
import { ErrorNote, MeterBar, Money, Section, Time, useLoad } from "../components.js";
import { parseUsd, tsMs } from "../format.js";

/**
 * A prepaid tenant's credits: the balance as GetCreditBalance answers it (granted, spent,
 * held by open reservations, available), the grants (append-only rows, newest first) and a
 * form for a new grant or a refund. The grant id is the idempotency key: the form fills in
 * a fresh one, so submitting twice by accident adds once; the server refuses what would
 * take the balance below what is already spent, and its message is shown as it is.
 */
export function CreditsPanel({ api, tenant, deps, onGranted }: { api: Api; tenant: string; deps: unknown[]; onGranted: () => void }) {
  const balance = useLoad(() => api.policy.getCreditBalance({ tenant }), deps);
  const grants = useLoad(() => api.policy.listCreditGrants({ tenant, limit: 50 }), deps);
  const [form, setForm] = useState({ amount: "", note: "", grantId: newGrantId() });
  const [error, setError] = useState<unknown>(undefined);
  const [invalid, setInvalid] = useState("");
  const [last, setLast] = useState<{ grantId: string; replayed: boolean } | undefined>(undefined);

  const grant = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    setInvalid("");
    const micros = parseUsd(form.amount);
    if (micros === undefined || micros === 0n) {
      setInvalid("Amount: a non-zero number of dollars, at most 6 decimals (negative for a refund).");
      return;
    }
    try {
      const res = await api.policy.grantCredits({ tenant, amountMicros: micros, grantId: form.grantId.trim(), note: form.note.trim() });
      setLast({ grantId: res.grant!.grantId, replayed: res.replayed });
      setForm({ amount: "", note: "", grantId: newGrantId() });
      balance.reload();
      grants.reload();
      onGranted();
    } catch (err) {
      setError(err);
    }
  };

  const b = balance.data;
  return (
    <Section id="credits" title="Credits" actions={<button type="button" onClick={() => { balance.reload(); grants.reload(); }}>Refresh</button>}>
      <ErrorNote error={balance.error ?? grants.error} />
      {b && !b.prepaid && <p class="muted">Not prepaid: this tenant's spend is capped by its budgets, not by a credit balance. Grants are kept and count once its plan or the tenant is set <code>prepaid</code>.</p>}
      {b && (
        <>
          <p>
            <MeterBar kind={LimitKind.CREDITS_MICROS} used={b.spentMicros + b.reservedMicros} limit={b.grantedMicros} label="Credits spent and reserved of granted" />
          </p>
          <dl class="facts" aria-label="Credit balance">
            <div><dt>Available</dt><dd data-field="balance"><Money micros={b.balanceMicros} /></dd></div>
            <div><dt>Granted</dt><dd data-field="granted"><Money micros={b.grantedMicros} /></dd></div>
            <div><dt>Spent</dt><dd data-field="spent"><Money micros={b.spentMicros} /></dd></div>
            <div><dt>Held by open reservations</dt><dd data-field="reserved"><Money micros={b.reservedMicros} /></dd></div>
          </dl>
        </>
      )}
      <h3>Grants</h3>
      {grants.data && grants.data.grants.length === 0 && <p class="muted">No grant yet.</p>}
      <div class="scroll">
        <table class="grants">
          <thead><tr><th scope="col">When</th><th scope="col">Amount</th><th scope="col">Grant id</th><th scope="col">By</th><th scope="col">Note</th></tr></thead>
          <tbody>
            {grants.data?.grants.map((g) => (
              <tr key={g.grantId} data-grant={g.grantId}>
                <td><Time ms={tsMs(g.createdAt)} /></td>
                <td class={g.amountMicros < 0n ? "bad" : ""}><Money micros={g.amountMicros} />{g.amountMicros < 0n && <span class="sr-only"> (taken back)</span>}</td>
                <td><code>{g.grantId}</code></td>
                <td>{g.actor || <span class="muted">—</span>}</td>
                <td>{g.note || <span class="muted">—</span>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <h3>Grant credits</h3>
      <form class="grant-form" onSubmit={(e) => void grant(e)}>
        <p>
          <label for="grant-amount">Amount (USD)</label>{" "}
          <input id="grant-amount" inputMode="decimal" required value={form.amount} aria-describedby="grant-amount-help"
            onInput={(e) => setForm({ ...form, amount: e.currentTarget.value })} />{" "}
          <span id="grant-amount-help" class="muted">negative to take credits back (never below what is spent)</span>
        </p>
        <p>
          <label for="grant-id">Grant id</label>{" "}
          <input id="grant-id" required maxLength={128} value={form.grantId} onInput={(e) => setForm({ ...form, grantId: e.currentTarget.value })} />{" "}
          <span class="muted">the same id twice adds once</span>
        </p>
        <p>
          <label for="grant-note">Note</label>{" "}
          <input id="grant-note" maxLength={256} value={form.note} onInput={(e) => setForm({ ...form, note: e.currentTarget.value })} />
        </p>
        <p><button type="submit">Grant</button></p>
        {invalid && <p class="error" role="alert">{invalid}</p>}
        <ErrorNote error={error} />
        {last && <p role="status">{last.replayed ? <>Grant <code>{last.grantId}</code> had been made before: nothing was added.</> : <>Granted (<code>{last.grantId}</code>).</>}</p>}
      </form>
    </Section>
  );
}

/** A fresh grant id for the form: "console-" and 12 random hex digits. */
function newGrantId(): string {
  const bytes = crypto.getRandomValues(new Uint8Array(6));
  return `console-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
}
