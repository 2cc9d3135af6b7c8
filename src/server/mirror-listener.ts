// The registry mirror as one of serve()'s listeners. src/mirror/ is imported
// here, dynamically, and only when the config has a [mirror] table: without
// one, none of its code is loaded (docs/mirror.md).
import type { Logger } from "../backend/contract";
import type { MirrorConfig } from "../config/config";
import { formatListenAddress } from "../config/listen";
import { errorText } from "../model/error-text";
import type { ServedRegistry } from "../registry/served";
import { ListenerStartError, type Listener } from "./lifecycle";
import type { MirrorRequestCounter } from "../runtime/mirror-witness";

/** How long a stopping mirror lets downloads in flight finish before cutting them. */
const MIRROR_STOP_GRACE_MS = 5000;

export async function startMirrorListener(mirror: MirrorConfig, served: ServedRegistry, log: Logger, witness?: MirrorRequestCounter): Promise<Listener> {
  const { MirrorServer } = await import("../mirror/server");
  let server: import("../mirror/server").MirrorServer;
  try {
    server = await MirrorServer.start(mirror.listen, served, log, witness);
  } catch (e) {
    throw new ListenerStartError(`[mirror] listen = ${JSON.stringify(formatListenAddress(mirror.listen))}: cannot listen: ${errorText(e)}`);
  }
  log.info("serving the registry mirror (read-only)", { listen: server.address });
  return {
    name: "registry mirror",
    stop: () => server.stop(MIRROR_STOP_GRACE_MS),
    stopNow: () => server.stopNow(),
  };
}
