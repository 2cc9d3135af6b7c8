// The last line of containment for module plugins, which run inside
// imagelet's process: an error a plugin throws from a timer or a promise
// nobody awaits (outside any hook call the registry guards) would end the
// process. It is logged instead, with the plugin when its stack names one,
// and imagelet keeps serving. (A plugin that blocks the event loop or calls
// process.exit cannot be contained in-process: that is what exec plugins are for.)
import type { Logger } from "../backend/contract";
import { errorText } from "../model/error-text";
import { pluginInStack, type LoadedPlugin } from "./load";

export function containStrayErrors(log: Logger, plugins: () => readonly LoadedPlugin[]): void {
  const report = (kind: string) => (e: unknown) => {
    const stack = e instanceof Error ? e.stack : undefined;
    log.error(`${kind}; imagelet keeps serving`, { plugin: pluginInStack(plugins(), stack)?.path, error: errorText(e) });
  };
  process.on("uncaughtException", report("uncaught exception"));
  process.on("unhandledRejection", report("unhandled promise rejection"));
}
