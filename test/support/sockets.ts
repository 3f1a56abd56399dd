/**
 * The TCP sockets a process listens on, from Linux's /proc: its file descriptors name socket inodes,
 * and /proc/net/tcp{,6} give each listening inode its local address. (No `ss` or `lsof` needed.)
 */
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';

export interface Listening {
  address: string;
  port: number;
}

function decodeAddress(hex: string): string {
  if (hex.length === 8) return [0, 1, 2, 3].map((i) => parseInt(hex.slice(6 - 2 * i, 8 - 2 * i), 16)).join('.');
  // IPv6: four little-endian 32-bit words.
  const words = [0, 1, 2, 3].map((w) =>
    hex
      .slice(w * 8, w * 8 + 8)
      .match(/../g)!
      .reverse()
      .join(''),
  );
  const groups = words
    .join('')
    .match(/.{4}/g)!
    .map((g) => parseInt(g, 16).toString(16));
  return groups.join(':').replace(/(^|:)0(:0)+(:|$)/, '::');
}

export function listeningSockets(pid: number | 'self' = 'self'): Listening[] {
  const inodes = new Set<string>();
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`));
      if (m) inodes.add(m[1]);
    } catch {
      /* closed meanwhile */
    }
  }
  const found: Listening[] = [];
  for (const table of ['tcp', 'tcp6']) {
    for (const line of readFileSync(`/proc/${pid}/net/${table}`, 'utf8').split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10 || cols[3] !== '0A' || !inodes.has(cols[9])) continue; // 0A: LISTEN
      const [addr, port] = cols[1].split(':');
      found.push({ address: decodeAddress(addr), port: parseInt(port, 16) });
    }
  }
  return found;
}

export const isLoopbackAddress = (a: string) => /^127\./.test(a) || a === '::1';
