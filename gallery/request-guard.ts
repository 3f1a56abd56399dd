/**
 * Who may talk to a server that listens on loopback for the user alone (the gallery).
 *
 * Listening on 127.0.0.1 keeps other machines out, not other web pages: a page on any origin can make
 * the user's browser send requests to a loopback port, and with DNS rebinding (a hostile name that
 * resolves to 127.0.0.1) it can even read the answers, because the browser thinks they are the page's
 * own origin. The browser always says which name it asked for (Host) and, for cross-origin calls,
 * which page asked (Origin, Sec-Fetch-Site); those it cannot forge for a page, so they decide.
 */
import type { IncomingMessage } from 'node:http';

/** The names that mean this machine's loopback; a rebound hostile name is none of them. */
const LOOPBACK_NAMES = ['127.0.0.1', 'localhost', '[::1]'];

/**
 * `host:port` values a request to this server may carry: the loopback names, and the address it
 * listens on when that is one address (not 0.0.0.0 or ::), on its port.
 */
export function loopbackHosts(port: number, listenHost?: string): Set<string> {
  const names = [...LOOPBACK_NAMES];
  if (listenHost && listenHost !== '0.0.0.0' && listenHost !== '::')
    names.push(listenHost.includes(':') ? `[${listenHost.toLowerCase()}]` : listenHost.toLowerCase());
  return new Set(names.map((name) => `${name}:${port}`));
}

/**
 * Why a request must be refused, or undefined when it may be served:
 * - its Host is not a loopback name with this server's port (DNS rebinding, or a request meant elsewhere);
 * - its Origin is another origin (a page elsewhere calling in);
 * - Sec-Fetch-Site says another site or origin made it (an <img> or form of a page elsewhere, which
 *   sends no Origin), unless `openPaths` holds the path (a page with no data in it, which a user may
 *   open from a link). Two loopback ports are the same *site* for a browser, so only `same-origin`
 *   and `none` (typed or bookmarked) pass.
 */
export function refusal(
  req: IncomingMessage,
  server: { port: number; listenHost?: string },
  openPaths: readonly string[] = [],
): string | undefined {
  const { port } = server;
  const hosts = loopbackHosts(port, server.listenHost);
  const host = (req.headers.host ?? '').toLowerCase();
  if (!hosts.has(host)) return `Host "${host}" is not this server's loopback address (use http://127.0.0.1:${port}/)`;
  const origin = req.headers.origin;
  if (origin !== undefined && !(origin.startsWith('http://') && hosts.has(origin.slice('http://'.length).toLowerCase())))
    return `requests from ${origin} are refused: only this server's own page may call it`;
  const site = req.headers['sec-fetch-site'];
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  if (site !== undefined && site !== 'same-origin' && site !== 'none' && !openPaths.includes(path))
    return `a ${site} request is refused: only this server's own page may call it`;
  return undefined;
}
