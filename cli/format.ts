/** Small text helpers for CLI output. */

/**
 * C0 and C1 controls, DEL, and the bidirectional overrides and isolates: what a terminal obeys rather
 * than shows (an object key with ESC ] 0 ; … BEL retitles the terminal, one with ESC [ 2 J clears it,
 * CR or a right-to-left override makes a line read as something else).
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: matching control characters is the point
const CONTROLS = /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;
const NAMED: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };

/**
 * Text from keys, tags, message bodies and error messages, made safe to print to a terminal: each
 * control character is shown as an escape (`\x1b`, `\n`, `\u202e`) instead of acting. For
 * human-readable output only (JSON output stays JSON, whose encoder escapes C0 controls itself).
 * `keepNewlines` leaves line breaks working (a multi-line error message).
 */
export function printable(text: string, options: { keepNewlines?: boolean } = {}): string {
  return text.replace(CONTROLS, (c) => {
    if (c === '\n' && options.keepNewlines) return c;
    const code = c.charCodeAt(0);
    return NAMED[c] ?? (code < 0x100 ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`);
  });
}

/** Columns padded to their widest cell; every cell passed through `printable`. */
export function table(rows: readonly (readonly (string | number)[])[], header?: readonly string[]): string {
  const all = (header ? [header, ...rows] : rows).map((r) => r.map((c) => (typeof c === 'number' ? c : printable(c))));
  const widths = all[0].map((_, i) => Math.max(...all.map((r) => String(r[i] ?? '').length)));
  const line = (r: readonly (string | number)[]) =>
    r
      .map((c, i) => (typeof c === 'number' ? String(c).padStart(widths[i]) : String(c).padEnd(widths[i])))
      .join('  ')
      .trimEnd();
  const out = all.map(line);
  if (header) out.splice(1, 0, widths.map((w) => '-'.repeat(w)).join('  '));
  return `${out.join('\n')}\n`;
}

export const thousands = (n: number) => n.toLocaleString('en-US');

export function parseNumber(name: string, min: number, max = Infinity, integer = false) {
  return (value: string): number => {
    const n = Number(value);
    if (!Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
      throw new Error(`${name} must be ${integer ? 'an integer' : 'a number'} in [${min}, ${max}], got "${value}"`);
    }
    return n;
  };
}
