// What front mode learns from the mirror: which repositories it has been asked
// for. A runtime pulling a preloaded image must reach imagelet's mirror within
// seconds (it reads from local disk); one that never asks has no mirror
// configuration, and a pull left running would hang until kubelet's deadline
// (src/runtime/preload.ts). The mirror calls saw() once per request it
// answers; nothing else is kept, so it costs one map entry per repository.

export interface MirrorWitness {
  /** Requests the mirror has received for `repository` (normalized: `docker.io/library/busybox`) so far. */
  requests(repository: string): number;
}

export class MirrorRequestCounter implements MirrorWitness {
  private readonly counts = new Map<string, number>();

  /** One request for `repository`, as the view normalizes it. */
  saw(repository: string): void {
    this.counts.set(repository, (this.counts.get(repository) ?? 0) + 1);
  }

  requests(repository: string): number {
    return this.counts.get(repository) ?? 0;
  }
}
