/** Debian's Chromium for the browser test and the gallery benchmark (playwright-core never downloads one). */
export const CHROMIUM = process.env.EFFITAG_CHROMIUM ?? '/usr/bin/chromium';

/** The flags a sandboxed, offline machine needs: no network chatter, no GPU, no setuid sandbox as root. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
