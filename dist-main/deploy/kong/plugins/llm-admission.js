/**
 * The file kong-js-pluginserver loads from its --plugins-directory: the
 * plugin's name is this file's name, `llm-admission`. Built by `npm run build`
 * to dist/deploy/kong/plugins/llm-admission.js (an ES module the plugin
 * server's require() loads on Node >= 20.19); this directory holds nothing
 * else, since the plugin server tries every file in it as a plugin.
 */
export { Plugin, Priority, Schema, Version } from "../admission-plugin.js";
//# sourceMappingURL=llm-admission.js.map