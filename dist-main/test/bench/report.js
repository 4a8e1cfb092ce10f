export class Report {
    rows = [];
    add(row) {
        this.rows.push(row);
        return row;
    }
    /**
     * A measured row; `versus` compares ops/s with an earlier row (the row, or the first
     * of that name), `atLeast` makes that ratio a target.
     */
    measured(section, scenario, m, options = {}) {
        const base = typeof options.versus === "string" ? this.find(options.versus) : options.versus;
        const ratio = base?.opsPerSec ? m.opsPerSec / base.opsPerSec : undefined;
        const errors = m.errors ? `${m.errors} errors (${m.firstError})` : "";
        return this.add({
            section, scenario, opsPerSec: m.opsPerSec, p50: m.p50, p99: m.p99, p999: m.p999,
            baseline: base?.scenario, ratio, cpu: m.cpu,
            ...(options.atLeast !== undefined && ratio !== undefined ? { target: `≥ ${options.atLeast}× ${base.scenario}`, met: ratio >= options.atLeast && !m.errors } : {}),
            note: [options.note, errors].filter(Boolean).join("; ") || undefined,
        });
    }
    latencyRow(section, scenario, l, extra = {}) {
        return this.add({ section, scenario, opsPerSec: l.opsPerSec, p50: l.p50, p99: l.p99, p999: l.p999, ...extra });
    }
    find(scenario) {
        return this.rows.find((r) => r.scenario === scenario);
    }
    markdown() {
        const ms = (n) => (n === undefined || Number.isNaN(n) ? "" : n.toFixed(n < 10 ? 3 : 1));
        const rate = (n) => (n === undefined ? "" : Math.round(n).toLocaleString("en-US"));
        const lines = ["| scenario | ops/s | p50 ms | p99 ms | p99.9 ms | vs baseline | target | met | CPU % of a core | notes |", "|---|---:|---:|---:|---:|---|---|---|---|---|"];
        let section = "";
        for (const r of this.rows) {
            if (r.section !== section) {
                section = r.section;
                lines.push(`| **${section}** | | | | | | | | | |`);
            }
            const vs = r.ratio !== undefined ? `${r.ratio.toFixed(2)}× ${r.baseline}` : "";
            const met = r.met === undefined ? "" : r.met ? "met" : "**not met**";
            lines.push(`| ${r.scenario} | ${rate(r.opsPerSec)} | ${ms(r.p50)} | ${ms(r.p99)} | ${ms(r.p999)} | ${vs} | ${r.target ?? ""} | ${met} | ${r.cpu ?? ""} | ${r.note ?? ""} |`);
        }
        return `${lines.join("\n")}\n`;
    }
}
//# sourceMappingURL=report.js.map