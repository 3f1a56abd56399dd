/**
 * A fault-injecting HTTP proxy between the pipeline and a stand-in (S3 or SQS), on loopback. Faults
 * are answered by the proxy itself, before the request reaches the server, as S3's SlowDown and
 * InternalError are: so an injected failure never half-applies a write. It also counts the object
 * copies (metadata write-backs) that did reach the server and succeeded, per key.
 */
import { createServer, request, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface FaultProxy {
  endpoint: string;
  /** Fraction of requests answered with an error (0: none). */
  failFraction: number;
  /** While true, every connection is reset at once (the service is unreachable). */
  down: boolean;
  /** Requests answered with an injected error so far. */
  injected: number;
  /** Successful CopyObject requests that reached S3, by object key. */
  copies: Map<string, number>;
  /**
   * At most this many injected errors per SDK invocation (its attempts share `amz-sdk-invocation-id`):
   * with fewer than the client's attempts, every request succeeds within the SDK's own retries, so
   * only a client that does not retry lets a fault reach the pipeline. Default: no limit.
   */
  maxFailuresPerInvocation: number;
  /** Requests whose connection is reset (the request never reaches the server) while this says so. */
  refuse?: (req: IncomingMessage, body: Buffer) => boolean;
  /** Requests refused by `refuse`, and connections reset while `down`. */
  refused: number;
  resets: number;
  close(): Promise<void>;
}

/** Deterministic, so a failing run can be repeated. */
function seeded(seed: number): () => number {
  let x = seed >>> 0;
  return () => (x = (Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + 0x9e3779b9) >>> 0) / 2 ** 32;
}

const S3_ERRORS = [
  { status: 503, code: 'SlowDown', message: 'Please reduce your request rate.' },
  { status: 500, code: 'InternalError', message: 'We encountered an internal error. Please try again.' },
];

export async function startFaultProxy(target: string, options: { seed?: number } = {}): Promise<FaultProxy> {
  const to = new URL(target);
  const random = seeded(options.seed ?? 1);
  const sockets = new Set<Socket>();
  const proxy: FaultProxy = {
    endpoint: '',
    failFraction: 0,
    down: false,
    injected: 0,
    copies: new Map(),
    maxFailuresPerInvocation: Number.POSITIVE_INFINITY,
    refused: 0,
    resets: 0,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
  const failuresOf = new Map<string, number>();
  const server: Server = createServer(async (req: IncomingMessage, res) => {
    if (proxy.down) {
      proxy.resets++;
      req.socket.destroy();
      return;
    }
    const invocation = String(req.headers['amz-sdk-invocation-id'] ?? '');
    const failed = failuresOf.get(invocation) ?? 0;
    if (failed < proxy.maxFailuresPerInvocation && random() < proxy.failFraction) {
      if (invocation) failuresOf.set(invocation, failed + 1);
      proxy.injected++;
      const e = S3_ERRORS[proxy.injected % S3_ERRORS.length];
      req.resume();
      res.writeHead(e.status, { 'content-type': 'application/xml' });
      res.end(`<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${e.code}</Code><Message>${e.message}</Message></Error>`);
      return;
    }
    // A request that may be refused is read whole first (its body says which call and queue it is).
    let body: Buffer | undefined;
    if (proxy.refuse) {
      const chunks: Buffer[] = [];
      for await (const c of req) chunks.push(c as Buffer);
      body = Buffer.concat(chunks);
      if (proxy.refuse?.(req, body)) {
        proxy.refused++;
        req.socket.destroy();
        return;
      }
    }
    const upstream = request({ host: to.hostname, port: to.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      if (req.method === 'PUT' && req.headers['x-amz-copy-source'] && answer.statusCode === 200) {
        const key = decodeURIComponent(new URL(req.url!, 'http://x').pathname.split('/').slice(2).join('/'));
        proxy.copies.set(key, (proxy.copies.get(key) ?? 0) + 1);
      }
      res.writeHead(answer.statusCode!, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    if (body) upstream.end(body);
    else req.pipe(upstream);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    if (proxy.down) {
      proxy.resets++;
      s.destroy();
    }
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  proxy.endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return proxy;
}
