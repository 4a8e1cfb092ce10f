/**
 * The models a credential may use, from its effective policy: the route
 * candidates of every task its plan (and key scope) allows, each listed once
 * with the tasks it serves.
 */
export function modelList(policy) {
    const models = new Map();
    for (const task of policy.tasks) {
        if (!task.allowed)
            continue;
        for (const route of task.routes) {
            const entry = models.get(route.model) ?? { provider: route.provider, tasks: [] };
            if (!entry.tasks.includes(task.task))
                entry.tasks.push(task.task);
            models.set(route.model, entry);
        }
    }
    return {
        object: "list",
        data: [...models].map(([id, m]) => ({ id, object: "model", created: 0, owned_by: m.provider, tasks: m.tasks })),
    };
}
//# sourceMappingURL=models-endpoint.js.map