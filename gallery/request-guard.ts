/**
 * Who may talk to the gallery: its own page, in the user's browser, and nothing else.
 *
 * Listening on 127.0.0.1 keeps other machines out, not other web pages: a page on any origin can make
 * the user's browser send requests to a loopback port, and with DNS rebinding (a hostile name that
 * resolves to 127.0.0.1) it can even read the answers, because the browser thinks they are the page's
 * own origin. The browser always says which name it asked for (Host) and, for cross-origin calls,
 * which page asked (Origin, Sec-Fetch-Site); a page cannot forge those, so they decide. The Host and
 * Origin rules are the embedded stack's (local/request-guard.ts); the gallery adds Sec-Fetch-Site,
 * since a GET from an <img> or a link on another page carries no Origin.
 */
import type { IncomingMessage } from 'node:http';
import { foreignRequestRefusal } from '../local/request-guard.ts';

const LOOPBACK_NAMES = ['127.0.0.1', 'localhost', '[::1]'];

/** The origins of the gallery's own page: the loopback names, and the address it listens on, with its port. */
export function ownOrigins(port: number, listenHost?: string): string[] {
  const names = [...LOOPBACK_NAMES];
  if (listenHost && listenHost !== '0.0.0.0' && listenHost !== '::') names.push(listenHost.includes(':') ? `[${listenHost}]` : listenHost);
  return names.map((name) => `http://${name}:${port}`);
}

/**
 * Why a request must be refused, or undefined when it may be served:
 * - its Host is not a loopback name (or the listen address) with the gallery's port (DNS rebinding,
 *   or a request meant for another server);
 * - its Origin is not the gallery's own (a page elsewhere calling in);
 * - Sec-Fetch-Site says another site or origin made it (an <img> or link on a page elsewhere, which
 *   sends no Origin), unless `openPaths` holds the path (a page with no data in it, which a user may
 *   open from a link). Two loopback ports are the same *site* for a browser, so only `same-origin`
 *   and `none` (typed or bookmarked) pass.
 */
export function refusal(
  req: IncomingMessage,
  server: { port: number; listenHost?: string },
  openPaths: readonly string[] = [],
): string | undefined {
  const foreign = foreignRequestRefusal(req.headers, {
    ports: [server.port],
    listenHost: server.listenHost,
    trustedOrigins: ownOrigins(server.port, server.listenHost),
  });
  if (foreign) return foreign;
  const site = req.headers['sec-fetch-site'];
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  if (site !== undefined && site !== 'same-origin' && site !== 'none' && !openPaths.includes(path))
    return `a ${site} request is refused: only this gallery's own page may call it`;
  return undefined;
}
