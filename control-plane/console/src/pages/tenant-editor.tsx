import { create } from "@bufbuild/protobuf";
import { useEffect, useState } from "preact/hooks";
import type { Limit, Tenant } from "../../../../gen/admission/v1/policy_pb.js";
import { AccountStatus, LimitKind, LimitSchema, Mode, Per, TenantSchema, Window } from "../../../../gen/admission/v1/policy_pb.js";
import { ChangeAction, type ApplyBundleResponse } from "../../../../gen/admission/v1/policy_service_pb.js";
import type { Api } from "../api.js";
import { ErrorNote, Section, modeName, perName, useLoad } from "../components.js";
import { limitLabel, meterAmount } from "../format.js";

/** A limit as edited: the value as typed. */
interface DraftLimit {
  kind: LimitKind;
  window: Window;
  per: Per;
  task: string;
  value: string;
  mode: Mode;
}

interface Draft {
  status: AccountStatus;
  mode: Mode;
  limits: DraftLimit[];
}

const kinds = [LimitKind.REQUESTS, LimitKind.TOKENS, LimitKind.BUDGET_MICROS, LimitKind.CONCURRENCY, LimitKind.INPUT_TOKENS, LimitKind.OUTPUT_TOKENS, LimitKind.AGENT_STEPS, LimitKind.FILES, LimitKind.API_CALLS];
const windows = [Window.UNSPECIFIED, Window.SECOND, Window.MINUTE, Window.HOUR, Window.DAY, Window.MONTH, Window.REQUEST];
const pers = [Per.TENANT, Per.USER, Per.KEY];
const limitModes = [Mode.UNSPECIFIED, Mode.ENFORCE, Mode.SOFT, Mode.SHADOW];

function draftOf(t: Tenant): Draft {
  return {
    status: t.status === AccountStatus.SUSPENDED ? AccountStatus.SUSPENDED : AccountStatus.ACTIVE,
    mode: t.mode === Mode.UNSPECIFIED ? Mode.ENFORCE : t.mode,
    limits: t.limits.map((l) => ({ kind: l.kind, window: l.window, per: l.per === Per.UNSPECIFIED ? Per.TENANT : l.per, task: l.task, value: String(l.value), mode: l.mode })),
  };
}

/** The whole tenant as ApplyBundle takes it (an upsert replaces the entity): the stored one with the draft's fields. */
function tenantOf(stored: Tenant, d: Draft): Tenant {
  return create(TenantSchema, {
    ...stored,
    status: d.status,
    mode: d.mode,
    limits: d.limits.map((l) => create(LimitSchema, { kind: l.kind, window: l.window, per: l.per, task: l.task, mode: l.mode, value: /^-?\d+$/.test(l.value.trim()) ? BigInt(l.value.trim()) : 0n })),
  });
}

/** A value the server could not read as an integer is named here rather than sent as 0. */
function valueProblem(d: Draft): string | undefined {
  const bad = d.limits.findIndex((l) => !/^-?\d+$/.test(l.value.trim()));
  return bad < 0 ? undefined : `limit ${bad + 1}: the value must be a whole number (-1 lifts an inherited limit, 0 blocks)`;
}

/**
 * Edits the tenant's own limits, status and mode. Every change goes through ApplyBundle
 * with dryRun first: the server's diff is shown, and only that previewed draft can be
 * applied. A rejected bundle shows the server's message (it names the entity and field).
 * The draft lives here until applied or discarded, also while the session is renewed.
 */
export function LimitsEditor({ api, tenant, deps, onApplied }: { api: Api; tenant: string; deps: unknown[]; onApplied: () => void }) {
  const stored = useLoad(() => api.policy.getTenant({ id: tenant }), deps);
  const catalog = useLoad(() => api.policy.listCatalog({}), deps);
  const [draft, setDraft] = useState<Draft | undefined>(undefined);
  const [preview, setPreview] = useState<{ draft: Draft; diff: ApplyBundleResponse } | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [problem, setProblem] = useState<string | undefined>(undefined);
  const [applied, setApplied] = useState<string | undefined>(undefined);
  const [busy, setBusy] = useState(false);
  const base = stored.data?.tenant;
  useEffect(() => {
    if (base && draft === undefined) setDraft(draftOf(base));
  }, [base]);
  if (!base || !draft) return <Section id="edit" title="Edit limits and mode"><ErrorNote error={stored.error} />{!stored.error && <p class="muted">Loading…</p>}</Section>;

  const change = (next: Draft) => {
    setDraft(next);
    setPreview(undefined);
    setApplied(undefined);
  };
  const setLimit = (i: number, patch: Partial<DraftLimit>) => change({ ...draft, limits: draft.limits.map((l, j) => (j === i ? { ...l, ...patch } : l)) });
  const dirty = JSON.stringify(draft) !== JSON.stringify(draftOf(base));

  const run = async (dryRun: boolean) => {
    const invalid = valueProblem(draft);
    setProblem(invalid);
    setError(undefined);
    if (invalid) return;
    setBusy(true);
    try {
      const diff = await api.policy.applyBundle({ bundle: { tenants: [tenantOf(base, draft)] }, dryRun });
      if (dryRun) {
        setPreview({ draft, diff });
      } else {
        setPreview(undefined);
        setDraft(undefined);
        setApplied(`Applied: config version ${diff.version}.`);
        stored.reload();
        onApplied();
      }
    } catch (err) {
      setError(err);
    } finally {
      setBusy(false);
    }
  };

  return (
    <Section id="edit" title="Edit limits and mode">
      <form class="editor" onSubmit={(e) => (e.preventDefault(), void run(true))}>
        <div class="row">
          <label>Status <select name="status" value={draft.status} onChange={(e) => change({ ...draft, status: Number(e.currentTarget.value) })}>
            <option value={AccountStatus.ACTIVE}>active</option>
            <option value={AccountStatus.SUSPENDED}>suspended</option>
          </select></label>
          <label>Mode <select name="mode" value={draft.mode} onChange={(e) => change({ ...draft, mode: Number(e.currentTarget.value) })}>
            <option value={Mode.ENFORCE}>enforce</option>
            <option value={Mode.SOFT}>soft (allow, warn)</option>
            <option value={Mode.SHADOW}>shadow (record only)</option>
          </select></label>
        </div>
        <table class="edit-limits">
          <caption>The tenant's own limits (they override the plan's for the same kind, window, task and per)</caption>
          <thead><tr><th scope="col">Kind</th><th scope="col">Window</th><th scope="col">Per</th><th scope="col">Task</th><th scope="col">Value</th><th scope="col">Mode</th><th scope="col"><span class="sr-only">Remove</span></th></tr></thead>
          <tbody>
            {draft.limits.map((l, i) => (
              <tr key={i}>
                <td><select aria-label={`Limit ${i + 1} kind`} value={l.kind} onChange={(e) => setLimit(i, { kind: Number(e.currentTarget.value) })}>
                  {kinds.map((k) => <option key={k} value={k}>{LimitKind[k]}</option>)}
                </select></td>
                <td><select aria-label={`Limit ${i + 1} window`} value={l.window} onChange={(e) => setLimit(i, { window: Number(e.currentTarget.value) })}>
                  {windows.map((w) => <option key={w} value={w}>{w === Window.UNSPECIFIED ? "— (concurrency)" : Window[w]}</option>)}
                </select></td>
                <td><select aria-label={`Limit ${i + 1} per`} value={l.per} onChange={(e) => setLimit(i, { per: Number(e.currentTarget.value) })}>
                  {pers.map((p) => <option key={p} value={p}>{perName(p)}</option>)}
                </select></td>
                <td><select aria-label={`Limit ${i + 1} task`} value={l.task} onChange={(e) => setLimit(i, { task: e.currentTarget.value })}>
                  <option value="">every task</option>
                  {catalog.data?.tasks.map((t) => <option key={t.code} value={t.code}>{t.code}</option>)}
                </select></td>
                <td>
                  <input aria-label={`Limit ${i + 1} value`} name={`limit-${i}-value`} inputMode="numeric" value={l.value} size={12} onInput={(e) => setLimit(i, { value: e.currentTarget.value })} />
                  {/^\d+$/.test(l.value.trim()) && <span class="muted hint"> {meterAmount(l.kind, BigInt(l.value.trim()))}{l.kind === LimitKind.BUDGET_MICROS ? " (value in micro-USD)" : ""}</span>}
                </td>
                <td><select aria-label={`Limit ${i + 1} mode`} value={l.mode} onChange={(e) => setLimit(i, { mode: Number(e.currentTarget.value) })}>
                  {limitModes.map((m) => <option key={m} value={m}>{m === Mode.UNSPECIFIED ? "tenant's" : modeName(m)}</option>)}
                </select></td>
                <td><button type="button" class="link" onClick={() => change({ ...draft, limits: draft.limits.filter((_, j) => j !== i) })}>Remove<span class="sr-only"> limit {i + 1}</span></button></td>
              </tr>
            ))}
          </tbody>
        </table>
        <p>
          <button type="button" onClick={() => change({ ...draft, limits: [...draft.limits, { kind: LimitKind.TOKENS, window: Window.DAY, per: Per.TENANT, task: "", value: "", mode: Mode.UNSPECIFIED }] })}>Add a limit</button>
        </p>
        {problem && <p class="error" role="alert">{problem}</p>}
        <ErrorNote error={error} what="The server refused the change" />
        <div class="actions">
          <button type="submit" disabled={busy || !dirty}>Preview changes (dry run)</button>
          <button type="button" disabled={busy || !dirty} onClick={() => change(draftOf(base))}>Discard changes</button>
          {dirty && !preview && <span class="muted">Unsaved changes</span>}
        </div>
      </form>
      {preview && (
        <div class="preview" role="region" aria-label="Dry run">
          <h3>Dry run: what applying would change</h3>
          <ul>
            {preview.diff.changes.map((c) => (
              <li key={`${c.kind}-${c.id}`}><strong>{c.kind} {c.id}</strong>: {ChangeAction[c.action]?.toLowerCase()}{c.fields.length > 0 && <> — fields {c.fields.join(", ")}</>}</li>
            ))}
          </ul>
          <LimitDiff before={base.limits} after={tenantOf(base, preview.draft).limits} />
          <button type="button" class="primary" disabled={busy} onClick={() => void run(false)}>Apply</button>
        </div>
      )}
      {applied && <p class="ok" role="status">{applied}</p>}
    </Section>
  );
}

/** The tenant's limits before and after, side by side. */
function LimitDiff({ before, after }: { before: readonly Limit[]; after: readonly Limit[] }) {
  const keyOf = (l: Limit) => `${l.kind}|${l.window}|${l.task}|${l.per === Per.UNSPECIFIED ? Per.TENANT : l.per}`;
  const keys = [...new Set([...before.map(keyOf), ...after.map(keyOf)])];
  const text = (l: Limit | undefined) => (l ? `${meterAmount(l.kind, l.value)}${l.mode !== Mode.UNSPECIFIED ? ` (${modeName(l.mode)})` : ""}` : "—");
  return (
    <table class="diff">
      <caption>Limits before and after</caption>
      <thead><tr><th scope="col">Limit</th><th scope="col">Before</th><th scope="col">After</th></tr></thead>
      <tbody>
        {keys.map((k) => {
          const b = before.find((l) => keyOf(l) === k);
          const a = after.find((l) => keyOf(l) === k);
          const l = (a ?? b)!;
          const same = text(b) === text(a);
          return (
            <tr key={k} class={same ? "" : "changed"}>
              <th scope="row">{limitLabel(l)} · {perName(l.per === Per.UNSPECIFIED ? Per.TENANT : l.per)}</th>
              <td>{text(b)}</td>
              <td>{text(a)} {!same && <em>(changed)</em>}</td>
            </tr>
          );
        })}
      </tbody>
    </table>
  );
}
