import type { GetEffectivePolicyResponse, Route } from "../gen/admission/v1/admission_pb.js";

/** An OpenAI `GET /v1/models` answer. */
export interface ModelList {
  readonly object: "list";
  readonly data: ReadonlyArray<{ id: string; object: "model"; created: number; owned_by: string; tasks: string[] }>;
}

/**
 * The models a credential may use, from its effective policy: the route
 * candidates of every task its plan (and key scope) allows, each listed once
 * with the tasks it serves.
 */
export function modelList(policy: GetEffectivePolicyResponse): ModelList {
  const models = new Map<string, { provider: string; tasks: string[] }>();
  for (const task of policy.tasks) {
    if (!task.allowed) continue;
    for (const route of task.routes) {
      const entry = models.get(route.model) ?? { provider: route.provider, tasks: [] };
      if (!entry.tasks.includes(task.task)) entry.tasks.push(task.task);
      models.set(route.model, entry);
    }
  }
  return {
    object: "list",
    data: [...models].map(([id, m]) => ({ id, object: "model", created: 0, owned_by: m.provider, tasks: m.tasks })),
  };
}

/** The route candidates, over every task the credential may use, that serve `model` (by its catalog name or the provider's), each once. */
export function modelRoutes(policy: GetEffectivePolicyResponse, model: string): Route[] {
  const routes = new Map<string, Route>();
  for (const task of policy.tasks) {
    if (!task.allowed) continue;
    for (const route of task.routes) if (route.model === model || route.providerModel === model) routes.set(`${route.provider}\u0000${route.model}`, route);
  }
  return [...routes.values()];
}
