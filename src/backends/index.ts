// The built-in backend types. They are registered exactly as plugins are:
// each is a BackendDefinition with the same contract.
import type { BackendDefinition } from "../backend/contract";
import type { PluginSettings } from "../plugins/load";
import archives from "./archives/index";
import containerd from "./containerd/index";
import containersStorage from "./containers-storage/index";
import docker from "./docker/index";
import { execBackend } from "./exec/index";
import isulad from "./isulad/index";
import ociLayout from "./oci-layout/index";

/** The exec backend needs the plugin settings: its executables live in plugin_dir and follow the plugins' rules. */
export function builtinBackends(settings: PluginSettings): readonly BackendDefinition[] {
  return [ociLayout, archives, containersStorage, docker, isulad, containerd, execBackend(settings)] as unknown as BackendDefinition[];
}
