// Full garbage collections asked for after events that leave much garbage
// behind (a new view, a connection with thousands of streams closed).
// JavaScriptCore collects by allocation, and a quiet server allocates little,
// so without one the RSS stays up long after the garbage was made.

/**
 * Returns a function that asks for one full collection `delayMs` from now;
 * asks made while one is pending join it, so there is at most one per delay.
 */
export function coalescedCollection(delayMs: number): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return () => {
    timer ??= setTimeout(() => {
      timer = undefined;
      Bun.gc(true);
    }, delayMs).unref();
  };
}
