import type { Route } from "../gen/admission/v1/admission_pb.js";
import { providerApiNames, type LlmRoute } from "../control-plane/llm-request.js";
import { providerApi, type ProviderConfig } from "./config.js";

/**
 * The route candidates a request may take: those whose provider speaks its
 * route's API (no translation between APIs). A candidate naming a provider
 * the data plane does not know is kept: trying it fails over, and is logged.
 * When every candidate speaks the other API, the reason, naming the first.
 */
export function servableRoutes(routes: readonly Route[], route: LlmRoute, providers: ReadonlyMap<string, ProviderConfig>): { routes: readonly Route[] } | { mismatch: string } {
  const kept = routes.filter((r) => {
    const provider = providers.get(r.provider);
    return !provider || providerApi(provider) === route.api;
  });
  if (kept.length > 0 || routes.length === 0) return { routes: kept.length === routes.length ? routes : kept };
  const first = routes[0]!;
  const api = providerApi(providers.get(first.provider)!);
  return { mismatch: `model "${first.model}" is served by provider "${first.provider}" (${providerApiNames[api]}), not ${route.title}` };
}
