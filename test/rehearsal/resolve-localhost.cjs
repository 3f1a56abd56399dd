// Preloaded into the rehearsal's Lambda and container processes: names under `.localhost` resolve to
// the loopback address (RFC 6761; systemd-resolved and browsers do the same, glibc does not). The
// SQS stand-in names its queues `http://sqs.<region>.localhost:<port>/…`, and the SDK sends each
// request to its queue URL's host, as it does with real SQS URLs. Nothing else is changed.
'use strict';
const dns = require('node:dns');
const lookup = dns.lookup;
dns.lookup = function lookupWithLocalhost(hostname, options, callback, ...rest) {
  if (typeof hostname === 'string' && hostname.endsWith('.localhost')) {
    const cb = typeof options === 'function' ? options : callback;
    const all = typeof options === 'object' && options !== null && options.all;
    process.nextTick(() => (all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4)));
    return;
  }
  return lookup.call(this, hostname, options, callback, ...rest);
};
