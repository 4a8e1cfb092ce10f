import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { useEffect, useRef, useState } from "preact/hooks";
import { AccountStatus } from "../../../../gen/admission/v1/policy_pb.js";
import type { ApiKey } from "../../../../gen/admission/v1/policy_pb.js";
import type { Api } from "../api.js";
import { ErrorNote, Section, Time, useLoad } from "../components.js";
import { tsMs } from "../format.js";

/** Users and API keys: create (the secret shown once), revoke, expiry. No stored secret or hash is ever shown. */
export function KeysPanel({ api, tenant, deps }: { api: Api; tenant: string; deps: unknown[] }) {
  const users = useLoad(() => api.policy.listUsers({ tenant }), deps);
  const keys = useLoad(() => api.policy.listApiKeys({ tenant }), deps);
  const catalog = useLoad(() => api.policy.listCatalog({}), deps);
  const [created, setCreated] = useState<{ id: string; secret: string } | undefined>(undefined);
  const [confirming, setConfirming] = useState<string | undefined>(undefined);
  const [error, setError] = useState<unknown>(undefined);
  const [form, setForm] = useState({ user: "", id: "", tasks: [] as string[], expires: "", description: "" });

  const createKey = async (e: Event) => {
    e.preventDefault();
    setError(undefined);
    try {
      const res = await api.policy.createApiKey({
        tenant, user: form.user, id: form.id.trim(), tasks: form.tasks, description: form.description,
        expiresAt: form.expires ? timestampFromMs(new Date(form.expires).getTime()) : undefined,
      });
      setCreated({ id: res.apiKey!.id, secret: res.secret });
      setForm({ user: "", id: "", tasks: [], expires: "", description: "" });
      keys.reload();
    } catch (err) {
      setError(err);
    }
  };
  const revoke = async (id: string) => {
    setError(undefined);
    try {
      await api.policy.revokeApiKey({ id });
      setConfirming(undefined);
      keys.reload();
    } catch (err) {
      setError(err);
    }
  };

  return (
    <Section id="keys" title="Users and API keys">
      <ErrorNote error={users.error ?? keys.error} />
      <h3>Users</h3>
      {users.data && users.data.users.length === 0 && <p class="muted">No users listed: keys without a user count as their own user.</p>}
      <ul class="plain inline">
        {users.data?.users.map((u) => <li key={u.id}><code>{u.id}</code>{u.status === AccountStatus.SUSPENDED && <strong class="bad"> suspended</strong>}{u.limits.length > 0 && <span class="muted"> ({u.limits.length} own limits)</span>}</li>)}
      </ul>
      <h3>API keys</h3>
      <div class="scroll">
        <table class="keys">
          <thead><tr><th scope="col">Key</th><th scope="col">User</th><th scope="col">Tasks</th><th scope="col">Created</th><th scope="col">Expires</th><th scope="col">Status</th><th scope="col">Description</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>
            {keys.data?.apiKeys.map((k) => (
              <tr key={k.id} data-key={k.id}>
                <th scope="row"><code>{k.id}</code></th>
                <td>{k.user || <span class="muted">— (its own user)</span>}</td>
                <td>{k.tasks.length > 0 ? k.tasks.join(", ") : <span class="muted">every task</span>}</td>
                <td><Time ms={tsMs(k.createdAt)} /></td>
                <td><Time ms={tsMs(k.expiresAt)} /></td>
                <td data-field="status"><KeyStatus k={k} /></td>
                <td>{k.description}</td>
                <td>
                  {!k.revoked && (confirming === k.id
                    ? <><button type="button" class="danger" onClick={() => void revoke(k.id)}>Confirm: revoke {k.id}</button> <button type="button" onClick={() => setConfirming(undefined)}>Cancel</button></>
                    : <button type="button" onClick={() => setConfirming(k.id)}>Revoke<span class="sr-only"> {k.id}</span></button>)}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <ErrorNote error={error} />
      <form class="create-key" onSubmit={createKey} aria-labelledby="create-key-title">
        <h3 id="create-key-title">Create an API key</h3>
        <div class="row">
          <label>User <select name="user" value={form.user} onChange={(e) => setForm({ ...form, user: e.currentTarget.value })}>
            <option value="">— none (the key is its own user) —</option>
            {users.data?.users.map((u) => <option key={u.id} value={u.id}>{u.id}</option>)}
          </select></label>
          <label>Key id <input name="id" placeholder="generated when empty" pattern="[A-Za-z0-9._\-]{1,64}" value={form.id} onInput={(e) => setForm({ ...form, id: e.currentTarget.value })} /></label>
          <label>Expires <input name="expires" type="datetime-local" value={form.expires} onInput={(e) => setForm({ ...form, expires: e.currentTarget.value })} /></label>
          <label>Description <input name="description" value={form.description} onInput={(e) => setForm({ ...form, description: e.currentTarget.value })} /></label>
        </div>
        <fieldset>
          <legend>Only these tasks (none: every task)</legend>
          {catalog.data?.tasks.map((t) => (
            <label key={t.code} class="check"><input type="checkbox" checked={form.tasks.includes(t.code)}
              onChange={(e) => setForm({ ...form, tasks: e.currentTarget.checked ? [...form.tasks, t.code] : form.tasks.filter((x) => x !== t.code) })} /> {t.code}</label>
          ))}
        </fieldset>
        <button type="submit">Create key</button>
      </form>
      {created && <SecretOnce id={created.id} secret={created.secret} onDone={() => setCreated(undefined)} />}
    </Section>
  );
}

function KeyStatus({ k }: { k: ApiKey }) {
  if (k.revoked) return <strong class="bad">revoked</strong>;
  const expires = tsMs(k.expiresAt);
  if (expires !== undefined && expires > 0 && expires <= Date.now()) return <strong class="bad">expired</strong>;
  return <span>active</span>;
}

/** The new key's secret, once: in a modal, to copy; closing it forgets it. */
function SecretOnce({ id, secret, onDone }: { id: string; secret: string; onDone: () => void }) {
  const dialog = useRef<HTMLDialogElement>(null);
  const input = useRef<HTMLInputElement>(null);
  const [copied, setCopied] = useState(false);
  useEffect(() => {
    dialog.current?.showModal();
    input.current?.select();
  }, []);
  const copy = async () => {
    input.current?.select();
    try {
      await navigator.clipboard.writeText(secret);
      setCopied(true);
    } catch {
      setCopied(false);
    }
  };
  return (
    <dialog ref={dialog} class="secret" aria-labelledby="secret-title" onClose={onDone}>
      <h2 id="secret-title">API key {id} created</h2>
      <p class="warning">Copy the secret now: it is shown this once and never again (only its SHA-256 is stored).</p>
      <label for="new-secret">Secret</label>
      <input id="new-secret" ref={input} readOnly value={secret} size={60} />
      <p>
        <button type="button" onClick={() => void copy()}>Copy</button> {copied && <span role="status">Copied.</span>}
        <button type="button" class="primary" onClick={() => dialog.current?.close()}>Done</button>
      </p>
    </dialog>
  );
}
