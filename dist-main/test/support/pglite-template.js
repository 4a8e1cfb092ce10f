import { createHash, randomBytes } from "node:crypto";
import { cpSync, existsSync, readFileSync, renameSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import pino from "pino";
import { openDatabase } from "../../control-plane/store/database.js";
import { migrations } from "../../control-plane/store/migrations.js";
/**
 * Fills `dir` with an empty, migrated PGlite database by copying a template made
 * once per machine (per schema and PGlite version): creating a PGlite cluster
 * (initdb) takes seconds, copying one a fraction of that. Does nothing when `dir`
 * already holds a database (a test reopening it after a restart).
 */
export async function seedPgliteDir(dir) {
    if (existsSync(join(dir, "PG_VERSION")))
        return;
    const template = await pgliteTemplate();
    cpSync(template, dir, { recursive: true });
}
let made;
function pgliteTemplate() {
    made ??= (async () => {
        // The package's own package.json is not exported: find it next to its entry point.
        const pglite = JSON.parse(readFileSync(new URL("../package.json", import.meta.resolve("@electric-sql/pglite")), "utf8"));
        const key = createHash("sha256").update(pglite.version).update(JSON.stringify(migrations)).digest("hex").slice(0, 16);
        const template = join(tmpdir(), `adm-pglite-template-${key}`);
        if (existsSync(join(template, "PG_VERSION")))
            return template;
        const building = `${template}.${randomBytes(4).toString("hex")}`;
        const db = await openDatabase({ dataDir: building, logger: pino({ level: "silent" }) });
        await db.close();
        try {
            renameSync(building, template); // atomic: another test process may have made it meanwhile
        }
        catch {
            rmSync(building, { recursive: true, force: true });
        }
        return template;
    })();
    return made;
}
//# sourceMappingURL=pglite-template.js.map