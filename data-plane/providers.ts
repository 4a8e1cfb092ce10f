/** An OpenAI-compatible provider: OpenAI, Gemini's or xAI's compatible endpoints, Ollama, the mock. */
export interface ProviderConfig {
  readonly name: string;
  /** e.g. https://api.openai.com/v1; requests go to baseUrl + the path after /v1. */
  readonly baseUrl: string;
  /** Sent as `Authorization: Bearer`; never logged, never shown to clients. */
  readonly apiKey?: string;
  /** Extra headers the provider needs (lowercase names). */
  readonly headers?: Readonly<Record<string, string>>;
}

/** The providers the data plane may forward to, by name. */
export class ProviderRegistry {
  private readonly byName: Map<string, ProviderConfig>;

  constructor(providers: readonly ProviderConfig[]) {
    this.byName = new Map(providers.map((p) => [p.name, p]));
  }

  get(name: string): ProviderConfig | undefined {
    return this.byName.get(name);
  }

  first(): ProviderConfig | undefined {
    return this.byName.values().next().value;
  }

  names(): string[] {
    return [...this.byName.keys()];
  }
}

/** The provider URL for an OpenAI path such as `/chat/completions`. */
export function providerUrl(provider: ProviderConfig, path: string): URL {
  return new URL(provider.baseUrl + path);
}
