import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ConfigRepository, ConflictError } from "../../control-plane/store/config-repository.js";
import { migrate, migrations } from "../../control-plane/store/migrations.js";
import { backends, withDatabase } from "../support/databases.js";
async function eventually(check, what, timeoutMs = 15_000) {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
        if (Date.now() > deadline)
            throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 20));
    }
}
async function appliedMigrations(db) {
    const { rows } = await db.query("SELECT version FROM schema_migrations ORDER BY version");
    return rows.map((r) => r.version);
}
const allVersions = migrations.map((_, i) => i + 1);
for (const backend of backends()) {
    describe(`config repository on ${backend.name}`, { skip: backend.skip }, () => {
        test("save upserts and deletes, bumps the version; load returns the version and every entity", () => withDatabase(backend, async (db) => {
            const repo = new ConfigRepository({ db });
            assert.deepEqual(await repo.load(), { version: 0, entities: [] });
            assert.equal(await repo.version(), 0);
            const v1 = await repo.save({
                upserts: [
                    { kind: "tenant", id: "acme", body: { id: "acme", atiToken: "t", limits: [{ kind: "TOKENS", value: "5000000000" }] } },
                    { kind: "user", id: "acme/alice", body: { id: "alice", tenant: "acme" } },
                    { kind: "model", id: "gpt-4o", body: { name: "gpt-4o", inputMicrosPerMtok: "2500000" } },
                ],
                deletes: [],
            });
            assert.equal(v1, 1);
            const v2 = await repo.save({
                upserts: [{ kind: "tenant", id: "acme", body: { id: "acme", atiToken: "u" } }, { kind: "tenant", id: "acme", body: { id: "acme", atiToken: "v" } }],
                deletes: [{ kind: "model", id: "gpt-4o" }, { kind: "plan", id: "never-existed" }],
                expectedVersion: 1,
            });
            assert.equal(v2, 2);
            assert.deepEqual(await repo.load(), {
                version: 2,
                entities: [
                    { kind: "tenant", id: "acme", body: { id: "acme", atiToken: "v" } },
                    { kind: "user", id: "acme/alice", body: { id: "alice", tenant: "acme" } },
                ],
            });
            assert.equal(await repo.version(), 2);
            assert.equal(await repo.save({ upserts: [], deletes: [] }), 3, "every save is a new version");
        }));
        test("a stale expectedVersion fails with ConflictError and changes nothing; of concurrent writers on one version exactly one wins", () => withDatabase(backend, async (db) => {
            const repo = new ConfigRepository({ db });
            await repo.save({ upserts: [{ kind: "plan", id: "PRO", body: { code: "PRO" } }], deletes: [] });
            const stale = await repo.save({ upserts: [{ kind: "plan", id: "FREE", body: { code: "FREE" } }], deletes: [{ kind: "plan", id: "PRO" }], expectedVersion: 0 }).catch((e) => e);
            assert.ok(stale instanceof ConflictError);
            assert.deepEqual([stale.expected, stale.actual], [0, 1]);
            assert.deepEqual(await repo.load(), { version: 1, entities: [{ kind: "plan", id: "PRO", body: { code: "PRO" } }] });
            const racers = await Promise.allSettled(Array.from({ length: 5 }, (_, i) => repo.save({ upserts: [{ kind: "task", id: `T${i}`, body: { code: `T${i}` } }], deletes: [], expectedVersion: 1 })));
            const won = racers.filter((r) => r.status === "fulfilled");
            assert.equal(won.length, 1);
            assert.deepEqual(won.map((r) => r.value), [2]);
            assert.ok(racers.every((r) => r.status === "fulfilled" || r.reason instanceof ConflictError));
            assert.equal((await repo.load()).entities.filter((e) => e.kind === "task").length, 1);
            const blind = await Promise.all(Array.from({ length: 5 }, () => repo.save({ upserts: [], deletes: [] })));
            assert.deepEqual([...blind].sort((a, b) => a - b), [3, 4, 5, 6, 7], "without expectedVersion every writer gets its own version");
        }));
        test("an unknown kind or a non-object body is refused before anything is written", () => withDatabase(backend, async (db) => {
            const repo = new ConfigRepository({ db });
            await assert.rejects(repo.save({ upserts: [{ kind: "tenant", id: "a", body: {} }, { kind: "tenants", id: "b", body: {} }], deletes: [] }), TypeError);
            await assert.rejects(repo.save({ upserts: [{ kind: "tenant", id: "a", body: [] }], deletes: [] }), TypeError);
            assert.deepEqual(await repo.load(), { version: 0, entities: [] });
        }));
        test("LISTEN/NOTIFY delivers each new version to watchers, including a writer's own, and stops after unwatch", (t) => withDatabase(backend, async (db, scratch) => {
            // On PostgreSQL the writer is another pool (as another replica would be); PGlite is one process.
            const writerDb = backend.name === "postgres" ? await scratch.open() : db;
            const watcher = new ConfigRepository({ db });
            const writer = new ConfigRepository({ db: writerDb });
            const seen = [];
            const alsoSeen = [];
            const unwatch = await watcher.watch((v) => seen.push(v));
            const unwatchOther = await watcher.watch((v) => alsoSeen.push(v));
            await writer.save({ upserts: [{ kind: "tenant", id: "acme", body: { id: "acme" } }], deletes: [] });
            await assert.rejects(writer.save({ upserts: [], deletes: [], expectedVersion: 0 }), ConflictError);
            await watcher.save({ upserts: [], deletes: [{ kind: "tenant", id: "acme" }] });
            await eventually(() => seen.length >= 2, "two notifications");
            await unwatch();
            await unwatch();
            await writer.save({ upserts: [], deletes: [] });
            await eventually(() => alsoSeen.length >= 3, "the third notification");
            t.diagnostic(`watcher saw ${seen.join(", ")}; the other saw ${alsoSeen.join(", ")}`);
            assert.deepEqual(seen, [1, 2], "a refused save announces nothing");
            assert.deepEqual(alsoSeen, [1, 2, 3]);
            await unwatchOther();
        }));
        test("a watcher whose LISTEN connection is cut reconnects and catches up on the version it missed", { skip: backend.name === "pglite" ? "PGlite runs in-process: there is no connection to lose" : false }, (t) => withDatabase(backend, async (db, scratch) => {
            const writer = new ConfigRepository({ db: await scratch.open() });
            const seen = [];
            const unwatch = await new ConfigRepository({ db }).watch((v) => seen.push(v));
            const listenPids = async () => (await db.query("SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'admission-control-plane-listen'")).rows.map((r) => r.pid);
            const [before] = await listenPids();
            assert.ok(before, "a dedicated LISTEN connection");
            await writer.save({ upserts: [], deletes: [] });
            await eventually(() => seen.includes(1), "version 1");
            await db.query("SELECT pg_terminate_backend($1)", [before]);
            await eventually(async () => !(await listenPids()).includes(before), "the old LISTEN backend to exit");
            await writer.save({ upserts: [], deletes: [] }); // probably sent while nobody listens
            await eventually(async () => (await listenPids()).length === 1, "the LISTEN connection to come back");
            await eventually(() => seen.includes(2), "version 2, by notification or by the catch-up after reconnecting");
            await writer.save({ upserts: [], deletes: [] });
            await eventually(() => seen.includes(3), "version 3 over the new connection");
            t.diagnostic(`versions seen: ${seen.join(", ")}`);
            assert.notEqual((await listenPids())[0], before);
            await unwatch();
        }));
        test("getOrCreateSecret: concurrent callers all get the one value that was stored first", () => withDatabase(backend, async (db, scratch) => {
            const other = backend.name === "postgres" ? await scratch.open() : db;
            const repos = [new ConfigRepository({ db }), new ConfigRepository({ db: other })];
            const values = await Promise.all(Array.from({ length: 10 }, (_, i) => repos[i % 2].getOrCreateSecret("signing", () => `v${i}`)));
            assert.equal(new Set(values).size, 1);
            let created = 0;
            assert.equal(await repos[0].getOrCreateSecret("signing", () => `x${++created}`), values[0]);
            assert.equal(created, 0, "an existing secret is not generated again");
            assert.equal(await repos[1].getOrCreateSecret("other", () => "o"), "o");
        }));
        test("migrations: recorded once, a no-op when run again, and the data survives reopening", () => withDatabase(backend, async (db, scratch) => {
            assert.deepEqual(await appliedMigrations(db), allVersions);
            assert.deepEqual(await Promise.all([migrate(db), migrate(db)]), [[], []]);
            await new ConfigRepository({ db }).save({ upserts: [{ kind: "tenant", id: "acme", body: { id: "acme" } }], deletes: [] });
            await db.close();
            const again = await scratch.open();
            assert.deepEqual(await appliedMigrations(again), allVersions);
            assert.deepEqual(await new ConfigRepository({ db: again }).load(), { version: 1, entities: [{ kind: "tenant", id: "acme", body: { id: "acme" } }] });
        }));
        test("migrations: processes starting at once on an empty database apply them exactly once", { skip: backend.name === "pglite" ? "a PGlite directory belongs to one process" : false }, async () => {
            const scratch = await backend.create();
            try {
                const dbs = await Promise.all([scratch.open(), scratch.open(), scratch.open()]);
                for (const db of dbs)
                    assert.deepEqual(await appliedMigrations(db), allVersions);
                assert.equal(await new ConfigRepository({ db: dbs[1] }).version(), 0);
            }
            finally {
                await scratch.remove();
            }
        });
    });
}
//# sourceMappingURL=config-repository.test.js.map