// A thrown value as one line, for logs and error messages. Every layer uses it
// (registry, plugins, mirror, server), so it lives below them all.

/** One line for a thrown value; a file path the error carries (fs errors, store problems) is kept. */
export function errorText(e: unknown): string {
  if (e instanceof Error) {
    const path = (e as { path?: unknown }).path;
    return typeof path === "string" && !e.message.includes(path) ? `${e.message} (${path})` : e.message;
  }
  try {
    return `threw ${JSON.stringify(e)}`;
  } catch {
    return `threw ${String(e)}`;
  }
}
