/** Small text helpers for CLI output. */
export function table(rows: readonly (readonly (string | number)[])[], header?: readonly string[]): string {
  const all = header ? [header, ...rows] : rows;
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
