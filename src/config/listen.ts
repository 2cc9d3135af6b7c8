// HOST:PORT addresses for TCP listeners ([mirror] listen). IPv6 hosts are
// bracketed, as in a URL: "[::1]:5050".

export interface ListenAddress {
  /** As Bun.serve takes it: an IP or host name, IPv6 without brackets. */
  host: string;
  /** 0 lets the system choose (the log line says which). */
  port: number;
}

const HOST_PORT = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9.-]+)):([0-9]{1,5})$/;

/** Parses `HOST:PORT`; the error says what is expected. */
export function parseListenAddress(text: string): ListenAddress | { error: string } {
  const m = HOST_PORT.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) return { error: `expected HOST:PORT such as "127.0.0.1:5050" or "[::1]:5050", got ${JSON.stringify(text)}` };
  return { host: m[1] ?? m[2]!, port };
}

export function formatListenAddress(address: ListenAddress): string {
  return address.host.includes(":") ? `[${address.host}]:${address.port}` : `${address.host}:${address.port}`;
}

/** Whether only this machine can connect: 127.0.0.0/8, ::1 or localhost. */
export function isLoopback(host: string): boolean {
  const h = host.toLowerCase();
  return h === "localhost" || h === "::1" || h === "0:0:0:0:0:0:0:1" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h) || /^::ffff:127\./.test(h);
}
