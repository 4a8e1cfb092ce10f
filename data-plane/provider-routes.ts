import type { Route } from "../gen/admission/v1/admission_pb.js";
import { providerApiNames, type LlmRoute } from "../control-plane/llm-request.js";
import { providerApi, type ProviderConfig } from "./config.js";

/**
 * The route candidates a request may take: those whose provider speaks its
 * route's API (no translation between APIs). A model the client named must
 * itself be served on that API — its class's fallbacks on the other API do not
 * stand in for it; fallbacks (and the candidates of a class asked for) on the
 * other API are dropped. A candidate naming a provider the data plane does not
 * know is kept: trying it fails over, and is logged. When nothing remains, the
 * reason, naming the model and its provider.
 */
export function servableRoutes(routes: readonly Route[], route: LlmRoute, providers: ReadonlyMap<string, ProviderConfig>, requestedModel: string): { routes: readonly Route[] } | { mismatch: string } {
  const apiOf = (r: Route) => {
    const provider = providers.get(r.provider);
    return provider ? providerApi(provider) : route.api;
  };
  const first = routes[0];
  if (!first) return { routes };
  const named = requestedModel !== "" && (first.model === requestedModel || first.providerModel === requestedModel);
  const kept = named && apiOf(first) !== route.api ? [] : routes.filter((r) => apiOf(r) === route.api);
  if (kept.length === 0) return { mismatch: `model "${first.model}" is served by provider "${first.provider}" (${providerApiNames[apiOf(first)]}), not ${route.title}` };
  return { routes: kept.length === routes.length ? routes : kept };
}
