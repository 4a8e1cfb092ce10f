/** A path under /v1, bound to a task by `/tasks/<TASK>/v1/...` or a configured prefix. */
export function matchRoute(pathname, taskRoutes) {
    const v1 = /^(?:\/tasks\/([A-Za-z0-9_.-]{1,64}))?\/v1(\/[^?]*)$/.exec(pathname);
    if (v1)
        return { path: v1[2].replace(/\/+$/, ""), task: v1[1] };
    for (const route of taskRoutes) {
        if (pathname.startsWith(`${route.prefix}/v1/`))
            return { path: pathname.slice(route.prefix.length + 3).replace(/\/+$/, ""), task: route.task };
    }
    return undefined;
}
//# sourceMappingURL=routes.js.map