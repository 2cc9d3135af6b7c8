// A CRI endpoint as kubelet and crictl write it, made into an address
// nice-grpc (grpc-js) dials. Used for `--endpoint` and `[runtime] endpoint`.

/**
 * `unix:///path`, `unix:/path` or a bare absolute path → `unix:///path`.
 * nice-grpc's createChannel hands a `scheme://` address it does not know to
 * grpc-js unchanged, but reads `unix:/path` as a host name.
 */
export function endpointTarget(endpoint: string): string {
  let path: string | undefined;
  if (endpoint.startsWith("unix://")) path = endpoint.slice("unix://".length);
  else if (endpoint.startsWith("unix:")) path = endpoint.slice("unix:".length);
  else if (endpoint.startsWith("/")) path = endpoint;
  if (path === undefined || !path.startsWith("/")) {
    throw new Error(`endpoint ${JSON.stringify(endpoint)} is not a unix socket path (unix:///path)`);
  }
  return `unix://${path}`;
}
